"""Entry points: `torchrun launch/train.py`, the `scaleplan` CLI and SLURM scripts.

The only layer that reads argv and environment variables.
"""
