"""`python3 dev.py test` with no arguments: its phases run in turn, every one even after a failure,
the first failing exit code is the command's, and a SIGTERM ends the running phase cleanly (as a
SIGINT, pytest's own stop) and starts no other."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def phases_process(tmp_path: Path, *codes: str) -> subprocess.Popen:
    """dev.run_phases over one `python -c CODE` per phase, in a process of its own (it sets the
    signal handlers of the process it runs in)."""
    phases = [[sys.executable, "-c", code] for code in codes]
    return subprocess.Popen([sys.executable, "-c", f"import sys, dev; sys.exit(dev.run_phases({phases!r}))"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_every_phase_runs_and_the_first_failure_is_the_exit_code(tmp_path):
    marks = [tmp_path / f"phase{i}" for i in range(3)]
    proc = phases_process(tmp_path, f"open({str(marks[0])!r}, 'w'); raise SystemExit(3)",
                          f"open({str(marks[1])!r}, 'w'); raise SystemExit(1)",
                          f"open({str(marks[2])!r}, 'w')")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and all(m.exists() for m in marks)
    assert out.count("+ ") == 3  # each command is shown before it runs


def test_sigterm_stops_the_running_phase_as_sigint_and_no_later_one_starts(tmp_path):
    ready, got, later = tmp_path / "ready", tmp_path / "got", tmp_path / "later"
    first = (f"import time\nopen({str(ready)!r}, 'w')\ntry:\n    time.sleep(60)\n"
             f"except KeyboardInterrupt:\n    open({str(got)!r}, 'w'); raise SystemExit(2)")
    proc = phases_process(tmp_path, first, f"open({str(later)!r}, 'w')")
    end = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert ready.exists()
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert got.exists() and not later.exists()
    assert proc.returncode == 2  # the phase's own exit code
