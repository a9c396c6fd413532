"""A stop never loses finished work. Ctrl-C and SIGTERM: train writes its result as interrupted
(serial and parallel loops), bench passes the stop on to its running cell, keeps every finished
one and marks the running one interrupted; a stopped (SIGSTOP) player ends its run as failed; a
bench cell past its wall-clock cap is written as failed and the matrix goes on. Each with one
line, the exit code, a bounded time to stop, and no process of the run left."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_for, alive

from fastdqn.bench.matrix import Cell
from fastdqn.bench.jobs import CAP_MARGIN_S, capped_record, cell_cap
from fastdqn.cli import main
from fastdqn.results import validate_result

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
LONG = ["--env", "CartPole-v1", "--max-steps", "10000000", "--replay-initial", "100", "--batch-size", "16",
        "--stop-reward", "1000", "--progress", "false", "--device", "cpu", "--threads", "1"]
TRAIN = [sys.executable, "-m", "fastdqn", "train"]
STOP_LIMIT_S = 15  # a stop, from the signal to the exit, result written and children reaped


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
    assert wait_for(lambda: any(tmp_path.glob("runs/bench/*/m/long/1/events.*")), 60)  # it trains
    proc.send_signal(signal.SIGINT)  # to the runner only: it must pass it on
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("fastdqn: interrupted")
    assert not alive(child)  # no orphan
    short = json.loads(next(results.glob("*/m/short/1.json")).read_text())
    long = json.loads(next(results.glob("*/m/long/1.json")).read_text())
    assert short["status"] == "budget" and long["status"] == "interrupted"
    assert "short" in next(results.glob("*/m/summary.csv")).read_text()


# --- SIGTERM, stalls and the cell cap ---------------------------------------------------------------

def session(sid: int) -> list[int]:
    """Live processes (zombies aside) of session `sid`: all that a run started with
    start_new_session=True began, whoever their parent is now; never another run's."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, _ppid, _pgrp, sess = stat.read_text().rsplit(")", 1)[1].split()[:4]
            if int(sess) == sid and state != "Z":
                found.append(int(stat.parent.name))
    return found


@pytest.fixture
def start_run():
    """start_run(cmd, cwd) -> Popen in a session of its own (its pid is the session id);
    whatever a failed test leaves of that session is killed at teardown."""
    started = []

    def start(cmd, cwd=None):
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=ENV, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        for pid in session(proc.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.communicate()


def logging_episodes(logdir: Path) -> bool:
    """TensorBoard holds episodes: the loop runs (past its start, players included)."""
    return any(f.stat().st_size > 1000 for f in logdir.glob("events.*"))


def stop(proc, send) -> tuple[float, str]:
    """send() the stop; seconds until the process exited, and its stderr."""
    start = time.monotonic()
    send()
    _, err = proc.communicate(timeout=60)
    return time.monotonic() - start, err


def last_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def players_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line]


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["serial", "parallel"])
def test_sigterm_stops_train_like_ctrl_c(loop, tmp_path, start_run):
    """serial: SIGTERM to the process; parallel: to its whole process group (as `timeout`
    sends it), players included: they leave the stop to the trainer."""
    out, logdir = tmp_path / "r.json", tmp_path / "tb"
    extra = ["--parallel", "true"] if loop == "parallel" else []
    proc = start_run([*TRAIN, *LONG, *extra, "--out", out, "--logdir", logdir])
    assert wait_for(lambda: logging_episodes(logdir), 90), "training did not start"
    send = (lambda: os.killpg(proc.pid, signal.SIGTERM)) if extra else (lambda: proc.send_signal(signal.SIGTERM))
    seconds, err = stop(proc, send)
    assert proc.returncode == 143, err
    assert last_line(err) == "fastdqn: interrupted (SIGTERM); finished results are kept"
    assert seconds < STOP_LIMIT_S
    result = json.loads(out.read_text())
    assert result["status"] == "interrupted" and result["stop_reason"] == "interrupted (SIGTERM)"
    assert result["steps"] > 0
    if extra:  # stopped on request, not killed: their last messages got through
        assert [p["player"] for p in result["phase_profile"]["players"]] == [0]
    assert wait_for(lambda: not session(proc.pid), 5), "processes left"


@pytest.mark.slow
def test_stopped_player_fails_the_run(tmp_path, start_run):
    out, logdir = tmp_path / "r.json", tmp_path / "tb"
    proc = start_run([*TRAIN, *LONG, "--parallel", "true", "--stall-seconds", "2", "--out", out, "--logdir", logdir])
    assert wait_for(lambda: logging_episodes(logdir), 90), "training did not start"
    [player] = players_of(proc.pid)
    seconds, err = stop(proc, lambda: os.kill(player, signal.SIGSTOP))  # alive, silent
    assert proc.returncode == 1, err
    line = last_line(err)
    assert re.fullmatch(rf"fastdqn: error: player 0 \(pid {player}\) stalled: no sign of life for \d+ s "
                        r"\(stall_seconds 2\)", line), line
    assert 2 <= seconds < 2 + STOP_LIMIT_S
    result = json.loads(out.read_text())
    assert result["status"] == "failed" and "player 0" in result["error"] and "stalled" in result["error"]
    assert result["steps"] > 0
    assert wait_for(lambda: not session(proc.pid), 5), "processes left (the stopped player?)"


CAPPED = """seeds = [1]
[defaults]
env = "CartPole-v1"
replay_initial = 100
batch_size = 16
max_steps = 10000000
stop_reward = 1000
threads = 1
[[cell]]
name = "stuck"
[[cell]]
name = "long"
"""


@pytest.mark.slow
def test_bench_caps_a_cell_goes_on_and_passes_sigterm_on(tmp_path, start_run):
    """`stuck` runs past --cell-cap: stopped and written as failed; the matrix goes on to `long`,
    which gets the SIGTERM sent to bench (to bench only: it must pass it on)."""
    (tmp_path / "m.toml").write_text(CAPPED)
    cap = 15
    proc = start_run([sys.executable, "-m", "fastdqn", "bench", "m.toml", "--no-progress", "--cell-cap", cap],
                     cwd=tmp_path)
    result = lambda cell: next((tmp_path / "results").glob(f"*/m/{cell}/1.json"), None)
    assert wait_for(lambda: result("stuck") is not None, cap + 60), "the capped cell left no result"
    assert wait_for(lambda: any(tmp_path.glob("runs/bench/*/m/long/1/events.*")), cap - 1), \
        "the next cell did not start"  # its loop did: its result will be written
    seconds, err = stop(proc, lambda: proc.send_signal(signal.SIGTERM))
    assert proc.returncode == 143, err
    assert last_line(err) == "fastdqn: interrupted (SIGTERM); finished results are kept"
    assert "terminating due to exception" not in err  # ignite's own lines about the stop
    assert f"stuck/1: ran past its cap of {cap} s" in err
    assert seconds < STOP_LIMIT_S
    stuck, long = (json.loads(result(cell).read_text()) for cell in ("stuck", "long"))
    assert stuck["status"] == "failed" and f"cap of {cap} s" in stuck["stop_reason"] and stuck["error"]
    assert long["status"] == "interrupted" and long["stop_reason"] == "interrupted (SIGTERM)"
    summary = next((tmp_path / "results").glob("*/m/summary.csv")).read_text()
    assert "stuck,1,baseline,failed" in summary and "long,1,baseline,interrupted" in summary
    assert wait_for(lambda: not session(proc.pid), 5), "processes left"


def test_cell_cap_follows_the_budget():
    cap = lambda **settings: cell_cap(Cell("c", "baseline", settings))
    assert cap(max_seconds=60) == 60 + CAP_MARGIN_S
    assert cap(max_steps=2000) == 2000 + CAP_MARGIN_S  # at 1 agent step/s
    assert cap(max_seconds=60, max_steps=2000) == 60 + CAP_MARGIN_S  # the tighter budget
    assert cap() == 0  # no budget: runs until solved, uncapped
    assert cell_cap(Cell("c", "baseline", {"max_seconds": 60}), 5.0) == 5.0  # bench --cell-cap


@pytest.mark.parametrize("bad", ["-1", "nan", "soon"])
def test_cell_cap_takes_seconds(bad, tmp_path, capsys):
    (tmp_path / "m.toml").write_text(CAPPED)
    assert main(["bench", str(tmp_path / "m.toml"), "--cell-cap", bad, "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdqn: error:") and "--cell-cap" in err[0]
    assert not (tmp_path / "r").exists()


def test_capped_cell_without_a_result_is_recorded_as_failed():
    """A child killed at its cap writes nothing: the record says so, without measurements."""
    record, reason = capped_record(None, Cell("c", "baseline", {"env": "CartPole-v1", "max_steps": 50}), 3, 20)
    validate_result(record, "capped")
    assert record["status"] == "failed" and record["error"] == reason and "cap of 20 s" in reason
    assert record["steps"] == 0 and record["config"]["hyperparams"]["seed"] == 3
    finished = {**record, "status": "budget"}
    assert capped_record(finished, Cell("c", "baseline"), 3, 20) == (finished, None)  # ended in time


@pytest.mark.slow
def test_dev_py_becomes_the_command_it_runs(tmp_path):
    """dev.py execs its command: a SIGTERM to the pid it was started as stops the run itself
    (result written as interrupted, exit 143), with nothing left running behind it."""
    if not (ROOT / ".venv" / "bin" / "fastdqn").exists():
        pytest.skip("needs the venv dev.py sets up")
    out, logdir = tmp_path / "r.json", tmp_path / "tb"
    proc = subprocess.Popen([sys.executable, str(ROOT / "dev.py"), "fastdqn", "train", *LONG, "--out", str(out),
                             "--logdir", str(logdir)], stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(logdir.glob("events.*")), 90)
    assert children_of(proc.pid) == []  # no wrapper process between us and the run
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=STOP_LIMIT_S)
    assert proc.returncode == 143, err
    assert json.loads(out.read_text())["status"] == "interrupted"
