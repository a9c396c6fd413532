"""User-facing errors: one line on stderr, no traceback (see cli.main): exit code 2 for usage
errors, 1 for a failed process of a parallel run or a result that could not be written."""


class UsageError(Exception):
    """Bad input from the user: CLI value, config/matrix file, result file read back."""


class ProcessFailed(Exception):
    """A process of a parallel run died, raised or stalled; the message names it (exit code 1)."""


class RunFailed(Exception):
    """The run cannot go on (its loss is no longer finite); the result and the checkpoint are
    written as failed and the message says why, in one line (exit code 1)."""


class WriteFailed(Exception):
    """The result could not be written at the end; the message says where and gives the key
    numbers, the only record left of the run (exit code 1)."""
