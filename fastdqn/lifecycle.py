"""The edges of a fastdqn process: output folders checked before any work, and stop requests.

SIGTERM (what job schedulers, containers, `timeout`, CI cancellation and Ray send) is handled as
Ctrl-C is: the first SIGINT or SIGTERM raises StopRequested, a KeyboardInterrupt, so every
Ctrl-C path (result written as interrupted, children stopped and reaped) serves both. Later
ones are ignored: a stop in progress is bounded already, and a second signal (a process group
gets the supervisor's and its parent's) must not cut its cleanup or the result write short.

A training loop takes its stop at safe points (stops_at_safe_points): raised wherever the main
thread happens to be, it can land between a lock's acquire and its release (queue, logging,
TensorBoard's writer), and the cleanup after it then waits on that lock for good.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
import threading
import _thread
from pathlib import Path

from ignite.engine import Engine

from .errors import UsageError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SAFE_POINT_GRACE_S = 5.0  # a loop that reaches no stop_point() this long after a stop (a long
# compile) gets it raised where it is
_received: list[int] = []  # the stop signal this process got: libraries that catch StopRequested
# in their own waits (ray.wait) raise a plain KeyboardInterrupt in its place


class StopRequested(KeyboardInterrupt):
    """A stop asked for by a signal; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _signum(e: BaseException, default: int) -> int:
    return getattr(e, "signum", None) or (_received[0] if _received else default)


def stop_signal(e: BaseException) -> int:
    """The signal to pass a stop on with: the one received, else SIGTERM (Ray's cancel, an exit)."""
    return _signum(e, signal.SIGTERM)


def describe(e: BaseException) -> str:
    """How a KeyboardInterrupt came: "Ctrl-C" (SIGINT) or the signal's name."""
    signum = _signum(e, signal.SIGINT)
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def exit_code(e: BaseException) -> int:
    """128 + the signal number, the shell's convention for a process ended by that signal."""
    return 128 + _signum(e, signal.SIGINT)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_requests():
    """Inside, SIGINT and SIGTERM raise StopRequested once; the handlers before are restored on
    exit (cli.main also runs inside tests). A signal the parent left ignored stays ignored: a
    shell ignores SIGINT for background jobs."""
    if not _main_thread():
        yield
        return
    _received.clear()

    def handler(signum, _frame):
        if not _received:
            _received.append(signum)
            if not _safe.active:
                raise StopRequested(signum)
            _safe.defer(signum)
        elif _safe.overdue:  # the grace timer's call: no safe point came in time
            raise _safe.take()

    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, old in before.items():
        if old is not signal.SIG_IGN:
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in before.items():
            if old is not None:  # None: set outside Python, cannot be restored from here
                signal.signal(sig, old)


class _SafePoints:
    """A stop received inside stops_at_safe_points(), not raised yet, and its grace timer."""

    def __init__(self):
        self.active, self.pending, self.overdue, self.timer = False, None, False, None
        self.grace_s = SAFE_POINT_GRACE_S

    def defer(self, signum: int) -> None:
        self.pending = signum
        self.timer = threading.Timer(self.grace_s, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self) -> None:  # timer thread: hand the stop to the main thread now
        signum = self.pending
        if self.active and signum is not None:
            self.overdue = True
            _thread.interrupt_main(signum)  # runs the handler in the main thread, as a signal would

    def take(self) -> StopRequested:
        signum, self.pending, self.overdue = self.pending, None, False
        return StopRequested(signum)

    def reset(self) -> int | None:
        """Leave: cancel the timer; the stop still pending, if any."""
        if self.timer is not None:
            self.timer.cancel()
        pending = self.pending
        self.active, self.pending, self.overdue, self.timer = False, None, False, None
        return pending


_safe = _SafePoints()


@contextlib.contextmanager
def stops_at_safe_points(grace_s: float = SAFE_POINT_GRACE_S):
    """Inside, a stop request (stop_requests) is raised at the next stop_point() the main thread
    reaches, or grace_s after it came where none did; one still pending at the end is raised
    there. Loops call stop_point() between iterations and in their waits."""
    if not _main_thread():
        yield
        return
    _safe.active, _safe.grace_s = True, grace_s
    try:
        yield
    finally:
        pending = _safe.reset()
    if pending is not None:  # the body ended normally as the stop came
        raise StopRequested(pending)


def stop_point() -> None:
    """A safe place for the main thread to stop: raises the stop request it deferred, if any."""
    if _safe.pending is not None and _main_thread():
        raise _safe.take()


@contextlib.contextmanager
def stops_held():
    """Inside, SIGINT and SIGTERM are ignored: for what a stop must still finish (the result write)."""
    if not _main_thread():
        yield
        return
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in before.items():
            if old is not None:
                signal.signal(sig, old)


def check_writable_dir(folder: Path, what: str) -> None:
    """Create `folder` and write a probe file in it: an output location that cannot take the
    results fails now, as a usage error, not after the compute."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what} {str(folder)!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"{what} {str(folder)!r} cannot be written: {e.strerror or e}") from None


def quiet_engine(process_function) -> Engine:
    """An ignite Engine that does not log the exception that ends its run: ignite logs a stop or a
    failure in two lines of its own; fastdqn reports it in one (or a traceback)."""
    engine = Engine(process_function)
    engine.logger.setLevel(logging.CRITICAL)
    return engine
