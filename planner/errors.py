"""The one exception type for bad user input, shared by every layer."""


class UserError(Exception):
    """Input the user can fix. Entry points print it as one line and exit with code 2."""
