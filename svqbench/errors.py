"""User-facing errors: the CLI prints them as one line and exits 2 (no traceback)."""


class UserError(Exception):
    """Bad input from the user (flag, file, name); the message names the value and the fix."""


class RunFailed(Exception):
    """A run that started but could not finish (e.g. non-finite loss); the CLI prints one line and
    exits 1. The run folder records why in metrics.json."""
