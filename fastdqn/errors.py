"""User-facing errors: one line on stderr, exit code 2, no traceback (see cli.main)."""


class UsageError(Exception):
    """Bad input from the user: CLI value, config/matrix file, result file read back."""
