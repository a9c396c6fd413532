"""User-facing errors: one line on stderr, no traceback (see cli.main): exit code 2 for usage
errors, 1 for a failed process of a parallel run."""


class UsageError(Exception):
    """Bad input from the user: CLI value, config/matrix file, result file read back."""


class ProcessFailed(Exception):
    """A process of a parallel run died or raised; the message names it (exit code 1)."""
