"""Ctrl-C never loses finished work: train writes its result as interrupted, bench keeps every
finished cell and marks the running one interrupted; both exit 130 with one line, no orphans."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_for, alive

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
LONG = ["--env", "CartPole-v1", "--max-steps", "10000000", "--replay-initial", "100",
        "--batch-size", "16", "--stop-reward", "1000", "--progress", "false", "--device", "cpu"]


def default_sigint():
    """In the child: a shell that started us in the background (or CI) may hand down SIGINT
    ignored, and Python then never raises KeyboardInterrupt; these tests need a real Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)




def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]




@pytest.mark.slow
def test_train_ctrl_c_writes_interrupted_result(tmp_path):
    out = tmp_path / "r.json"
    logdir = tmp_path / "tb"
    proc = subprocess.Popen([sys.executable, "-m", "fastdqn", "train", *LONG, "--out", str(out),
                             "--logdir", str(logdir), "--fps-every", "100"],
                            env=ENV, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    assert wait_for(lambda: any(logdir.glob("events.*")), 60)
    time.sleep(3)  # some training iterations
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("fastdqn: interrupted")
    result = json.loads(out.read_text())
    assert result["status"] == "interrupted" and result["steps"] > 0


@pytest.mark.slow
def test_bench_ctrl_c_keeps_finished_cells(tmp_path):
    matrix = tmp_path / "m.toml"
    matrix.write_text('seeds = [1]\n[defaults]\nenv = "CartPole-v1"\nreplay_initial = 100\nbatch_size = 16\n'
                      '[[cell]]\nname = "short"\nmax_steps = 200\n'
                      '[[cell]]\nname = "long"\nmax_steps = 10000000\nstop_reward = 1000\n')
    proc = subprocess.Popen([sys.executable, "-m", "fastdqn", "bench", str(matrix), "--no-progress"],
                            cwd=tmp_path, env=ENV, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    results = tmp_path / "results"
    assert wait_for(lambda: any(results.glob("*/m/short/1.json")), 90)
    assert wait_for(lambda: children_of(proc.pid), 30)
    child = children_of(proc.pid)[0]
    time.sleep(4)
    proc.send_signal(signal.SIGINT)  # to the runner only: it must pass it on
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("fastdqn: interrupted")
    assert not alive(child)  # no orphan
    short = json.loads(next(results.glob("*/m/short/1.json")).read_text())
    long = json.loads(next(results.glob("*/m/long/1.json")).read_text())
    assert short["status"] == "budget" and long["status"] == "interrupted"
    assert "short" in next(results.glob("*/m/summary.csv")).read_text()
