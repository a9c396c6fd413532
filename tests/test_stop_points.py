"""Stops at safe points (lifecycle.stops_at_safe_points): inside a training loop a SIGTERM or
Ctrl-C is raised at the loop's next stop_point(), not wherever the main thread was; after a grace
period without one it is raised where the thread is, and one still pending at the end is raised
there. Outside, a stop raises at once, as before."""
import os
import signal
import threading
import time

import pytest

from fastdqn.lifecycle import StopRequested, stop_point, stop_requests, stops_at_safe_points


@pytest.fixture(autouse=True)
def sigint_not_ignored():
    """pytest started as a background job (`cmd &` in a script) inherits SIGINT ignored, which
    stop_requests rightly leaves ignored: these tests send SIGINT, so it gets Python's handler."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def spin(seconds: float) -> None:
    """Busy Python code (no stop_point) for `seconds`: where a signal handler can run."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def send(sig=signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)


def test_outside_a_loop_a_stop_raises_at_once():
    with pytest.raises(StopRequested) as info, stop_requests():
        send()
        spin(2.0)
        pytest.fail("SIGTERM did not raise")
    assert info.value.signum == signal.SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_inside_a_loop_it_waits_for_the_stop_point(sig):
    with stop_requests(), stops_at_safe_points(grace_s=30):
        send(sig)
        spin(0.3)  # not here
        with pytest.raises(StopRequested) as info:
            stop_point()
        assert info.value.signum == sig
        stop_point()  # raised once: a stop in progress is not raised again
        send(signal.SIGTERM)  # nor is a later signal
        spin(0.3)
        stop_point()


def test_without_a_stop_point_it_is_raised_after_the_grace():
    with stop_requests(), stops_at_safe_points(grace_s=0.2):
        send()
        start = time.monotonic()
        with pytest.raises(StopRequested) as info:
            spin(10.0)
        assert 0.15 < time.monotonic() - start < 5.0
        assert info.value.signum == signal.SIGTERM


def test_a_stop_pending_at_the_end_is_raised_there():
    with pytest.raises(StopRequested), stop_requests():
        with stops_at_safe_points(grace_s=30):
            send()
            spin(0.2)  # the body ends before any stop point
        pytest.fail("the pending stop was dropped")
    end = time.monotonic() + 2.0  # and its grace timer is cancelled, not left to fire later
    while any(isinstance(t, threading.Timer) for t in threading.enumerate()) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(isinstance(t, threading.Timer) for t in threading.enumerate())


def test_an_error_in_the_loop_wins_over_a_pending_stop():
    with pytest.raises(ValueError), stop_requests(), stops_at_safe_points(grace_s=30):
        send()
        spin(0.2)
        raise ValueError("failed first")


def test_no_stop_no_effect():
    with stop_requests(), stops_at_safe_points(grace_s=0.1):
        stop_point()
        spin(0.3)
        stop_point()
