"""User-facing errors: the CLI prints them as one line and exits 2 (no traceback)."""


class UserError(Exception):
    """Bad input from the user (flag, file, name); the message names the value and the fix."""
