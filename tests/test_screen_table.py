"""benchmarks/screen_table.py: the agent step at which a run's 20-game mean first reached each
level, checked against a hand-built reward curve; bad input is a one-line error."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from screen_table import first_steps_at  # noqa: E402


def test_first_steps_at_needs_a_full_window_and_keeps_the_first_crossing():
    # games of 100 agent steps each: rewards -21, -21, -1, +19, +19, then -21 again
    rewards = [-21, -21, -1, 19, 19, -21]
    curve = [(i + 1, 100 * (i + 1), float(i), r) for i, r in enumerate(rewards)]
    # windows of 3 games: means -43/3, -1, 37/3, 17/3 (two levels crossed by one game); the first
    # two games alone never count
    assert first_steps_at(curve, [-15.0, 0.0, 10.0, 15.0], window=3) == {-15.0: 300, 0.0: 500, 10.0: 500, 15.0: None}
    assert first_steps_at(curve, [-21.0], window=1) == {-21.0: 100}
    assert first_steps_at(curve[:2], [-21.0], window=3) == {-21.0: None}


def test_a_missing_result_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "screen_table.py"), str(tmp_path / "no.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "not found" in proc.stderr
