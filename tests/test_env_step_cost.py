"""benchmarks/env_step_cost.py: the env-only cost table, and its one-line errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "env_step_cost.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_one_row_per_env_with_its_frames_per_step():
    proc = run("--steps", "200", "--rounds", "2", "CartPole-v1", "PongNoFrameskip-v4")
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.strip().splitlines()
    assert rows[0] == "| env | agent steps/s | ms per agent step | frames per agent step |"
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]
    assert [c[0] for c in cells] == ["CartPole-v1", "PongNoFrameskip-v4"]
    for (_, rate, ms, frames), want in zip(cells, ("1", "4")):
        assert float(rate.replace(",", "")) > 0 and frames == want
        assert float(ms) == pytest.approx(1000 / float(rate.replace(",", "")), abs=0.01)


def test_bad_input_is_one_line():
    proc = run("--steps", "0")
    assert proc.returncode == 2 and proc.stderr == "env_step_cost: --steps 0 / --rounds 3: expected >= 1\n"
    proc = run("--steps", "10", "NoSuchGameNoFrameskip-v4")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "NoSuchGameNoFrameskip-v4" in err[0], proc.stderr
