"""Env-only throughput on real Pong: agent steps per second of each vector backend and wrapper stack.

Not collected by a plain `pytest` (testpaths = ["tests"]). Run it on purpose:

    python -m pytest benchmarks/test_env_speed.py                        # table on the terminal
    python benchmarks/env_table.py                                       # + results/<machine>/env_speed.md

Each cell builds its vector env once, then drives it through the vector contract (reset, then
send/recv with uniformly random actions for the env ids the last recv returned) for
FASTDQN_BENCH_STEPS agent steps per round (default 2000; only rows with has_transition count).
No network, no replay: what is measured is emulation + preprocessing + the backend's overhead.
`benchmark.extra_info["steps_per_s"]` is agent steps / median round time (frames = x frame_skip).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from fastdqn.config import Flags, Hyperparams
from fastdqn.envs import frames_per_step, make_vec_env

STEPS = int(os.environ.get("FASTDQN_BENCH_STEPS", "2000"))
ROUNDS = int(os.environ.get("FASTDQN_BENCH_ROUNDS", "3"))
HP = Hyperparams()

# (backend, wrappers, envs); the ALE backends preprocess in C++ and take no wrappers (None).
CELLS = [
    ("sequential", "baseline", 1),
    ("sequential", "fast", 1),
    ("sequential", "baseline", 4),
    ("sequential", "fast", 4),
    ("gym_async", "baseline", 4),
    ("gym_async", "fast", 4),
    ("ale_sync", None, 4),
    ("ale_async", None, 4),
]
BASELINE_CELL = ("sequential", "baseline", 1)
# backend -> class that fastdqn/envs/backends.py must define for make_vec_env to build it
BACKEND_CLASSES = {"gym_async": "GymAsyncVecEnv", "ale_sync": "AleVecEnv", "ale_async": "AleVecEnv"}


def cell_id(cell) -> str:
    backend, wrappers, envs = cell
    return f"{backend}-{wrappers or 'ale'}-{envs}"


def _require_backend(backend: str) -> None:
    """Skip, naming the reason, where the backend's code is not (yet) there."""
    if backend not in BACKEND_CLASSES:
        return
    try:
        from fastdqn.envs import backends
    except ImportError as e:
        pytest.skip(f"backend {backend}: fastdqn.envs.backends cannot be imported ({e})")
    if not hasattr(backends, BACKEND_CLASSES[backend]):
        pytest.skip(f"backend {backend}: fastdqn.envs.backends has no {BACKEND_CLASSES[backend]}")


class Driver:
    """Steps a vector env through send/recv with random actions; counts agent steps."""

    def __init__(self, vec, seed: int = 0):
        self.vec = vec
        self.rng = np.random.default_rng(seed)
        self.n_actions = int(vec.single_action_space.n)
        vec.reset(seed=seed)
        self.ids = np.arange(vec.num_envs)  # after reset, every env waits for an action
        self.episodes = 0

    def run(self, steps: int) -> int:
        vec, rng, done = self.vec, self.rng, 0
        while done < steps:
            vec.send(rng.integers(0, self.n_actions, len(self.ids)), self.ids)
            result = vec.recv()
            self.ids = result.env_ids
            done += int(np.count_nonzero(result.has_transition))
            self.episodes += len(result.episodes)
        return done


@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
def test_env_steps_per_second(benchmark, cell):
    backend, wrappers, envs = cell
    _require_backend(backend)
    flags = dataclasses.replace(Flags(), backend=backend, envs=envs, wrappers=wrappers or "baseline")
    vec = make_vec_env(HP, flags)
    try:
        driver = Driver(vec)
        counts = []

        def one_round():
            counts.append(driver.run(STEPS))

        benchmark.group = "env steps (Pong, random actions)"
        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    finally:
        vec.close()
    steps = float(np.mean(counts))  # >= STEPS: an async recv may overshoot by < batch rows
    assert steps >= STEPS
    from fastdqn.results import machine_id
    info = benchmark.extra_info
    info.update(backend=backend, wrappers=wrappers, envs=envs, batch=int(getattr(vec, "batch", envs)),
                steps_per_round=steps, frames_per_step=frames_per_step(HP), env=HP.env,
                machine_id=machine_id(), loadavg=list(os.getloadavg()))
    if benchmark.stats is not None:  # None under --benchmark-disable
        stats = benchmark.stats.stats
        info["steps_per_s"] = steps / stats.median
        info["steps_per_s_best"] = steps / stats.min
        info["frames_per_s"] = info["steps_per_s"] * info["frames_per_step"]
