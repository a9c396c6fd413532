"""Peer trainers as cells (fastdqn/peers): short real runs on CartPole, each checked against the
harness's definitions and the peer's own records, and the errors a user can meet."""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastdqn.bench.jobs import finished
from fastdqn.bench.matrix import load_matrix
from fastdqn.cli import main as fastdqn_main
from fastdqn.errors import UsageError
from fastdqn.peers.__main__ import main as peer_main
from fastdqn.results import load_result

ROOT = Path(__file__).resolve().parents[1]
HAS_SB3 = importlib.util.find_spec("stable_baselines3") is not None
HAS_EVOTORCH = importlib.util.find_spec("evotorch") is not None
needs_sb3 = pytest.mark.skipif(not HAS_SB3, reason="no stable-baselines3 (pip install 'fastdqn[peers]')")
needs_evotorch = pytest.mark.skipif(not HAS_EVOTORCH, reason="no evotorch (pip install 'fastdqn[evotorch]')")


def run_peer(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "r.json"
    rc = peer_main([*args, "--env", "CartPole-v1", "--threads", "1", "--progress", "false", "--out", str(out),
                    "--logdir", str(tmp_path / "tb")])
    assert rc == 0
    return load_result(out)  # the schema check of every result file


def monitor_rewards(folder: Path) -> list[float]:
    """The episode returns SB3's Monitor wrote (one CSV per env copy: a JSON line, then r,l,t)."""
    rewards = []
    for path in sorted(folder.glob("*.monitor.csv")):
        with open(path) as fh:
            next(fh)
            rewards += [float(row["r"]) for row in csv.DictReader(fh)]
    return rewards


def check_definitions(result: dict) -> None:
    """What fastdqn's own results hold: the curve in order, FPS after the warm-up, the stop rule."""
    curve = result["reward_curve"]
    assert [row[0] for row in curve] == list(range(1, result["episodes"] + 1))
    assert all(a[1] <= b[1] and a[2] <= b[2] for a, b in zip(curve, curve[1:]))  # steps and wall in order
    start = result["learning_started"]
    after_warmup = (result["steps"] - start["steps"]) / (result["wall_seconds"] - start["seconds"])
    assert result["fps"] == pytest.approx(after_warmup, rel=1e-3)
    assert result["frames_per_second"] == result["fps"]  # CartPole: one frame per agent step
    last100 = [row[3] for row in curve[-100:]]
    assert result["last_mean100"] == pytest.approx(sum(last100) / len(last100))
    assert result["peer"]["library_steps"] == result["steps"]


# --- errors, before anything runs -------------------------------------------------------------

def write(tmp_path: Path, cell: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(f'[defaults]\nenv = "CartPole-v1"\nlr = 1e-3\nmax_steps = 500\n[[cell]]\nname = "p"\n{cell}')
    return path


@pytest.mark.parametrize("cell, needle, installed", [
    ('peer = "sb3_ppp"\n', "unknown peer 'sb3_ppp': expected one of sb3_ppo, sb3_a2c, sb3_dqn, evotorch_pgpe", True),
    ('peer = "sb3_ppo"\npreset = "baseline"\n', "a cell runs one of them", True),
    ('peer = "sb3_ppo"\nlr = 1e-3\n', "key 'lr' does not apply to peer sb3_ppo", True),
    ('peer = "sb3_ppo"\nworkers = 2\n', "key 'workers' does not apply to peer sb3_ppo", True),
    ('peer = "sb3_ppo"\nseed = 3\n', "key 'seed' in cell 'p' is set by the runner", True),
    ('peer = "sb3_ppo"\nenv = "MountainCar-v0"\n', "no published hyperparameters for env 'MountainCar-v0'", HAS_SB3),
    ('peer = "evotorch_pgpe"\nworkers = 0\n', "invalid value 0 for workers: expected >= 1", HAS_EVOTORCH),
    ('peer = "evotorch_pgpe"\ndevice = "cuda"\n', "GymNE evaluates its policies on the CPU", HAS_EVOTORCH),
])
def test_a_bad_peer_cell_is_one_line_before_anything_runs(cell, needle, installed, tmp_path, capsys, monkeypatch):
    if not installed:
        pytest.skip("the peer's library is not installed: the missing-extra error comes first")
    path = write(tmp_path, cell)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        load_matrix(path)
    assert needle in str(info.value)
    assert fastdqn_main(["bench", str(path), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdqn: error:") and needle in err[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("peer, library, extra", [("sb3_dqn", "stable_baselines3", "peers"),
                                                  ("evotorch_pgpe", "evotorch", "evotorch")])
def test_a_missing_library_names_its_extra(peer, library, extra, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, library, None)  # `import` fails as it does where it is not installed
    needle = f"pip install 'fastdqn[{extra}]'"
    with pytest.raises(UsageError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_matrix(write(tmp_path, f'peer = "{peer}"\n'))
    assert peer_main([peer, "--env", "CartPole-v1", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdqn: error:") and needle in err[0]
    assert not (tmp_path / "r.json").exists()


# --- runs --------------------------------------------------------------------------------------

@needs_sb3
def test_sb3_ppo_episodes_are_the_monitors_and_the_step_budget_stops_it(tmp_path):
    r = run_peer(tmp_path, "sb3_ppo", "--max-steps", "1500")
    assert r["status"] == "budget" and r["stop_reason"] == "step budget: 1500 agent steps"
    assert 1500 <= r["steps"] < 1500 + 8  # stopped at the first vector step (8 env copies) past it
    # every whole game the Monitor recorded, with its raw score, and no other
    assert sorted(row[3] for row in r["reward_curve"]) == sorted(monitor_rewards(Path(r["peer"]["monitor_dir"])))
    assert r["episodes"] > 0
    check_definitions(r)
    # warm-up: the first rollout (32 steps x 8 copies); updates: optimizer steps, 20 epochs of one batch each
    assert r["learning_started"]["steps"] == 256 and r["updates"] % 20 == 0 and r["samples_per_update"] == 256
    assert r["replay_ratio"] == pytest.approx(r["updates"] * 256 / (r["steps"] - 256))
    cfg = r["config"]
    assert cfg["preset"] == "sb3_ppo" and cfg["peer"]["name"] == "stable-baselines3" and cfg["peer"]["version"]
    assert cfg["peer"]["algorithm"] == "PPO" and "ppo.yml" in cfg["peer"]["hyperparams_source"]
    assert cfg["hyperparams"]["n_steps"] == 32 and cfg["hyperparams"]["learning_rate"] == "lin_0.001"
    assert r["stop_rule"] == {"reward": 475.0, "source": "the reward_threshold of CartPole-v1's gymnasium spec"}


@needs_sb3
def test_sb3_dqn_time_budget_after_its_learning_starts(tmp_path):
    r = run_peer(tmp_path, "sb3_dqn", "--max-seconds", "3")
    assert r["status"] == "budget" and r["stop_reason"] == "time budget: 3.0 s"
    assert 3.0 <= r["wall_seconds"] < 5.0  # at the first step past it (or the end of an update round)
    # rl-zoo3's learning_starts 1000, train_freq 256: the first update at the first multiple past it
    assert r["learning_started"]["steps"] == 1024 and r["updates"] % 128 == 0
    check_definitions(r)


@needs_evotorch
def test_evotorch_pgpe_stop_rule_ends_it_at_a_generation(tmp_path):
    r = run_peer(tmp_path, "evotorch_pgpe", "--stop-reward", "5", "--max-steps", "200000")
    # a random CartPole policy's games score ~20: the first generation's 100 whole games solve it
    assert r["status"] == "solved" and r["stop_reason"] == "solved: mean of the last 100 episodes >= 5.0"
    assert r["episodes"] == 100 == r["peer"]["library_episodes"] and r["updates"] == r["peer"]["generations"] == 1
    solved = r["solved"]["mean100"]
    assert solved["steps"] == r["steps"] and solved["episodes"] == 100
    assert {row[1] for row in r["reward_curve"]} == {r["steps"]}  # a generation's games end together
    # whole games: CartPole scores 1 a step, so the scores add up to GymNE's interaction count
    assert all(row[3] == int(row[3]) > 0 for row in r["reward_curve"])
    assert sum(row[3] for row in r["reward_curve"]) == r["steps"]
    assert r["stop_rule"] == {"reward": 5.0, "source": "set"}
    assert r["config"]["hyperparams"]["popsize"] == 100 and r["config"]["run"]["workers"] == 1


@needs_sb3
def test_sigterm_writes_the_peers_result(tmp_path):
    out, log = tmp_path / "r.json", tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "fastdqn.peers", "sb3_ppo", "--env", "CartPole-v1",
                                 "--threads", "1", "--progress-every", "0.2", "--out", str(out)],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
        try:
            end = time.monotonic() + 60
            while "| learning |" not in log.read_text() and time.monotonic() < end and proc.poll() is None:
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            assert proc.wait(timeout=30) == 143, log.read_text()
        finally:
            proc.kill()
    assert time.monotonic() - sent < 10
    r = load_result(out)
    assert r["status"] == "interrupted" and r["stop_reason"] == "interrupted (SIGTERM)" and r["steps"] > 0


@needs_sb3
def test_bench_runs_a_matrix_with_fastdqn_and_peer_cells(tmp_path):
    matrix = tmp_path / "mixed.toml"
    matrix.write_text('seeds = [7]\n[defaults]\nenv = "CartPole-v1"\nmax_steps = 300\nthreads = 1\n'
                      'replay_initial = 100\nbatch_size = 16\n'
                      '[[cell]]\nname = "dqn"\n[[cell]]\nname = "a2c"\npeer = "sb3_a2c"\nmax_steps = 800\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bench = [sys.executable, "-m", "fastdqn", "bench", str(matrix), "--results", "results", "--no-progress"]
    done = subprocess.run(bench, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    [folder] = (tmp_path / "results").glob("*/mixed")
    dqn, a2c = load_result(folder / "dqn" / "7.json"), load_result(folder / "a2c" / "7.json")
    assert dqn["config"]["preset"] == "baseline" and a2c["config"]["preset"] == "sb3_a2c"
    assert a2c["status"] == "budget" and 800 <= a2c["steps"] < 808 and a2c["config"]["hyperparams"]["seed"] == 7
    assert a2c["config"]["hyperparams"]["n_envs"] == 8 and a2c["samples_per_update"] == 5 * 8  # one rollout a batch
    rows = (folder / "summary.csv").read_text().splitlines()
    assert rows[2].startswith("a2c,7,sb3_a2c,budget,")
    assert "| a2c | 1 |" in done.stdout  # bench's table
    assert (folder / "plots" / "reward.png").exists()
    # a re-run keeps both: a peer's result is matched against its cell's settings as fastdqn's are
    cells = load_matrix(matrix).cells
    assert all(finished(folder / c.name / "7.json", c, 7, a2c["machine"]) for c in cells)
    changed = dataclasses.replace(cells[1], settings={**cells[1].settings, "max_steps": 900})
    assert finished(folder / "a2c" / "7.json", changed, 7, a2c["machine"]) is None
