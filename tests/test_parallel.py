"""The parallel loop (loops/parallel.py): chunks rebuild exactly the serial loop's replay, a short
run keeps the serial replay ratio, CartPole learns, and any dead process ends the whole run
with one line, its result kept and no process left behind."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastdqn.config import Hyperparams
from fastdqn.envs import SequentialVecEnv, StepResult
from fastdqn.loops.collect import store
from fastdqn.loops.parallel import ChunkBuilder, apply_chunk
from fastdqn.replay import FrameReplay
from helpers import alive, wait_for

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
REPLAY_FIELDS = ("frames", "actions", "rewards", "terminated", "has_transition", "pos", "written")


# --- chunks vs the serial protocol -------------------------------------------------------------

def record(env, rounds: int, seed: int, subset: bool = False):
    """(reset obs, [(taken, StepResult)]) of random play; taken: the last action sent per env,
    after the round's actions, as the serial loop keeps it. subset: act on a random part of the
    envs each round (the async backends' contract)."""
    rng = np.random.default_rng(seed)
    obs0 = env.reset(seed=seed)
    taken = np.zeros(env.num_envs, np.int64)
    steps = []
    for _ in range(rounds):
        ids = np.flatnonzero(rng.random(env.num_envs) < 0.6) if subset else np.arange(env.num_envs)
        actions = rng.integers(0, 2, len(ids))
        taken[ids] = actions
        env.send(actions, ids)
        steps.append((taken.copy(), env.recv()))
    return obs0, steps


def fill_serial(replay: FrameReplay, obs0, steps) -> None:
    """The serial loop's collector storing straight into the replay."""
    replay.start(np.arange(len(obs0)), obs0)
    for taken, result in steps:
        store(replay, result, taken)


def fill_chunked(replay: FrameReplay, obs_shape, obs0, steps, flush_every, offset: int = 0) -> None:
    """The player's ChunkBuilder, flushed at arbitrary points, applied by the trainer's apply_chunk."""
    builder = ChunkBuilder(obs_shape, offset)
    builder.start(np.arange(len(obs0)), obs0)
    for i, (taken, result) in enumerate(steps):
        store(builder, result, taken)
        if (i + 1) % flush_every == 0:
            apply_chunk(replay, builder.take(player_steps=0))
    apply_chunk(replay, builder.take(player_steps=0))


def assert_same_replay(a: FrameReplay, b: FrameReplay, envs=slice(None)) -> None:
    for name in REPLAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name)[envs], err_msg=name)


class FakeStackedEnv:
    """Unique (2, 3, 3) uint8 frame stacks, rows for a subset of the envs, next-step autoreset:
    after an episode's end, a row without a transition that resets (ale-py's vector env)."""

    def __init__(self, num_envs: int, seed: int):
        self.num_envs, self.rng, self.count = num_envs, np.random.default_rng(seed), 0
        self.done = np.zeros(num_envs, bool)

    def _obs(self, n):
        self.count += n
        return ((np.arange(n * 18).reshape(n, 2, 3, 3) + self.count * 7) % 251).astype(np.uint8)

    def reset(self, seed):
        return self._obs(self.num_envs)

    def send(self, actions, env_ids):
        self.ids = np.asarray(env_ids)

    def recv(self):
        ids, n = self.ids, len(self.ids)
        has_transition = ~self.done[ids]
        terminated = has_transition & (self.rng.random(n) < 0.2)
        truncated = has_transition & ~terminated & (self.rng.random(n) < 0.05)
        reset = self.done[ids].copy()
        self.done[ids] = terminated | truncated
        obs = self._obs(n)
        episodes = [(int(e), 1.0, 3) for e in ids[terminated | truncated]]
        return StepResult(ids, obs, obs.copy(), self.rng.random(n).astype(np.float32), terminated, truncated,
                          has_transition, reset, episodes)


@pytest.mark.parametrize("flush_every", [1, 7, 50])
def test_chunks_rebuild_the_serial_replay_cartpole(flush_every):
    """players=1, real CartPole envs: the trainer's replay equals the serial loop's, array by array."""
    env = SequentialVecEnv(Hyperparams(env="CartPole-v1"), 3)
    obs0, steps = record(env, 150, seed=5)
    shape = env.single_observation_space.shape
    serial = FrameReplay(200, shape, np.float32, 3)  # small: the rings wrap
    chunked = FrameReplay(200, shape, np.float32, 3)
    fill_serial(serial, obs0, steps)
    fill_chunked(chunked, shape, obs0, steps, flush_every)
    assert serial.added == chunked.added == 450
    assert serial.has_transition.any() and (serial.pos == 0).sum() > 3  # episodes ended and restarted
    assert_same_replay(serial, chunked)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    for x, y in zip(serial.sample(64, rng_a), chunked.sample(64, rng_b)):
        np.testing.assert_array_equal(x, y)


def test_chunks_rebuild_the_serial_replay_stacked_async():
    """Image stacks (only the newest frame travels), partial rounds, next-step autoreset rows."""
    env = FakeStackedEnv(4, seed=1)
    obs0, steps = record(env, 120, seed=2, subset=True)
    assert any((~r.has_transition).any() for _, r in steps) and any(r.reset.any() for _, r in steps)
    serial = FrameReplay(10_000, (2, 3, 3), np.uint8, 4)
    chunked = FrameReplay(10_000, (2, 3, 3), np.uint8, 4)
    fill_serial(serial, obs0, steps)
    fill_chunked(chunked, (2, 3, 3), obs0, steps, flush_every=9)
    assert_same_replay(serial, chunked)


def test_second_player_streams_are_offset():
    """Player 1 of 2 (3 envs each) fills global streams 3..5 of one replay as the serial loop
    would fill a replay of its own."""
    env = SequentialVecEnv(Hyperparams(env="CartPole-v1"), 3)
    obs0, steps = record(env, 80, seed=9)
    shape = env.single_observation_space.shape
    own = FrameReplay(10_000, shape, np.float32, 3)
    shared = FrameReplay(20_000, shape, np.float32, 6)
    fill_serial(own, obs0, steps)
    fill_chunked(shared, shape, obs0, steps, flush_every=10, offset=3)
    assert_same_replay(own, shared, envs=slice(3, 6))
    assert not shared.written[:3].any()
    builder = ChunkBuilder(shape, offset=3)
    for taken, result in steps:
        store(builder, result, taken)
        builder.ended(result.episodes)
    chunk = builder.take(player_steps=240)
    assert {e for e, _, _ in chunk["episodes"]} <= {3, 4, 5} and chunk["steps"] == 240


# --- learning ------------------------------------------------------------------------------------

# CartPole through the parallel loop (1 player); a random policy scores about 22. The loop is not
# reproducible for a seed (process timing decides which weights act), and DQN on CartPole can
# collapse after a first rise, so the bar is the first rise: a 100-episode mean >= 100 came at
# 14.2k-18.4k agent steps in nine runs (seeds 2, 3, 5, 8, 11; seed 2 four times). Higher bars
# missed 60k steps in CI: 150 once (seed 2), and 120 once, when seed 2 reached 105 at 22k steps,
# fell to 39 and was back at only 112 by 60k. Syncing target and player weights every 250 steps
# keeps the acting policy close to the learned one (target sync 500 with weight sync 1000: seed
# 2 plateaued at 140 and sank).
CARTPOLE = ["--env", "CartPole-v1", "--lr", "1e-3", "--batch-size", "64", "--replay-size", "50000",
            "--replay-initial", "1000", "--target-sync-steps", "250", "--weight-sync-steps", "250",
            "--epsilon-steps", "10000", "--epsilon-final", "0.02", "--loss", "huber", "--mlp-hidden", "128"]


@pytest.mark.slow
def test_parallel_loop_learns_cartpole(run_train):
    result = run_train(*CARTPOLE, "--parallel", "true", "--seed", "2", "--stop-reward", "100",
                       "--max-steps", "60000")
    assert result["status"] == "solved", result["stop_reason"]
    assert result["solved"]["mean100"]["steps"] <= 60_000
    assert result["replay_ratio"] == pytest.approx(64, rel=0.02)


# --- processes -----------------------------------------------------------------------------------

def children_of(pid: int) -> dict[int, str]:
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out.strip().splitlines()}


def players_of(pid: int) -> list[int]:
    """The spawned play processes, in start order (the resource tracker is not one)."""
    return sorted(p for p, args in children_of(pid).items() if "spawn_main" in args)






LONG = ["--env", "CartPole-v1", "--max-steps", "10000000", "--replay-initial", "200", "--batch-size", "16",
        "--progress", "false", "--device", "cpu", "--parallel", "true", "--players", "2",
        "--stop-reward", "1000"]  # out of CartPole's reach (500 at most)


@pytest.fixture
def start_long_run(tmp_path):
    """start_long_run(env id) -> (proc, result path, player pids, all child pids): a parallel
    run with 2 players that would go on for hours, once both players are up. Whatever a failed
    test leaves running is killed at teardown."""
    started = []

    def start(env="CartPole-v1"):
        out = tmp_path / "r.json"
        proc = subprocess.Popen([sys.executable, "-m", "fastdqn", "train", *LONG, "--env", env, "--out", str(out)],
                                env={**ENV, "PYTHONPATH": f"{ROOT / 'tests' / 'plugins'}:{ROOT}"},
                                stderr=subprocess.PIPE, text=True,
                                # a background shell (or CI) may hand down SIGINT ignored
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        started.append((proc, []))
        assert wait_for(lambda: len(players_of(proc.pid)) == 2, 60), "players did not start"
        players, everyone = players_of(proc.pid), list(children_of(proc.pid))
        started[-1][1].extend(everyone)
        return proc, out, players, everyone

    yield start
    for proc, children in started:
        for pid in [proc.pid, *children]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("fastdqn: error:")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    return lines[0]


def test_short_run_keeps_the_replay_ratio_and_reports_players(run_train):
    result = run_train("--env", "CartPole-v1", "--parallel", "true", "--players", "2", "--max-steps", "1500",
                       "--replay-initial", "300", "--batch-size", "16", "--weight-sync-steps", "200")
    assert result["status"] == "budget" and result["steps"] >= 1500
    assert result["config"]["flags"]["weight_sync_steps"] == 200
    assert result["samples_per_update"] == 16
    assert result["replay_ratio"] == pytest.approx(16, rel=0.1)  # the serial loop's samples per step
    players = result["phase_profile"]["players"]
    assert [p["player"] for p in players] == [0, 1]
    assert all(p["seconds"]["env"] > 0 and p["seconds"]["act"] > 0 for p in players)
    assert sum(p["steps"] for p in players) >= result["steps"]  # a player may have chunks in flight
    assert not [p for p in players_of(os.getpid()) if alive(p)]  # players stopped and reaped


@pytest.mark.slow
def test_killed_player_ends_the_run(start_long_run):
    proc, out, players, everyone = start_long_run()
    time.sleep(8)  # training for a while
    start = time.monotonic()
    os.kill(players[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - start < 15
    assert proc.returncode == 1
    assert re.fullmatch(r"fastdqn: error: player 1 died \(exit code -9\)", one_error_line(err))
    result = json.loads(out.read_text())
    assert result["status"] == "failed" and "player 1 died" in result["error"] and result["steps"] > 0
    assert wait_for(lambda: not any(alive(p) for p in everyone), 5), "orphans left"


@pytest.mark.slow
def test_killed_trainer_ends_the_players(start_long_run):
    proc, _, players, everyone = start_long_run()
    time.sleep(8)
    proc.kill()
    proc.communicate(timeout=10)
    assert wait_for(lambda: not any(alive(p) for p in players), 10), "players outlived the trainer"
    assert wait_for(lambda: not any(alive(p) for p in everyone), 10), "orphans left"


@pytest.mark.slow
def test_ctrl_c_stops_players_and_keeps_the_result(start_long_run):
    proc, out, players, everyone = start_long_run()
    time.sleep(8)
    proc.send_signal(signal.SIGINT)  # to the trainer only; the players are its business
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("fastdqn: interrupted")
    result = json.loads(out.read_text())
    assert result["status"] == "interrupted" and result["steps"] > 0
    assert [p["player"] for p in result["phase_profile"]["players"]] == [0, 1]  # stopped, not killed
    assert wait_for(lambda: not any(alive(p) for p in everyone), 5), "orphans left"


@pytest.mark.slow
def test_player_exception_ends_the_run(start_long_run):
    proc, out, players, everyone = start_long_run(env="crashing_env:CrashingCartPole-v1")
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1
    line = one_error_line(err)
    assert line.startswith("fastdqn: error: player 1 failed: RuntimeError: test-only crash after"), line
    result = json.loads(out.read_text())
    assert result["status"] == "failed" and "player 1 failed" in result["error"]
    assert wait_for(lambda: not any(alive(p) for p in everyone), 5), "orphans left"
