"""Sub-commands of `scaleplan`, one per module (see launch/cli.py)."""
