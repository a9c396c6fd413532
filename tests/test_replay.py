"""FrameReplay (each frame stored once, stacks rebuilt by index) against a naive buffer that
keeps every transition's obs and next obs whole.

Synthetic envs build observations exactly like gymnasium's FrameStackObservation (the reset
frame repeated to fill the stack); every frame is unique, so any mix-up shows. The feeding
protocol is loops/serial.py's: start(all envs, reset obs), then per step add(actions, rewards,
terminated, true next obs) and start(done envs, their reset obs).
"""
from __future__ import annotations

from collections import Counter, deque

import numpy as np
import pytest

from fastdqn.loss import discounts_of
from fastdqn.replay import FrameReplay

FRAME = (4, 5)


class FakeVecEnv:
    """N envs with random episode lengths, ending terminated or truncated, same-step autoreset."""

    def __init__(self, num_envs: int, stack: int | None, seed: int, max_len: int = 6, min_len: int = 1):
        self.n, self.stack = num_envs, stack  # stack None: vector observations (4,) float32
        self.rng = np.random.default_rng(seed)
        self.max_len, self.min_len = max_len, min_len
        self.counter = 0
        self.frames: list[deque] = [deque() for _ in range(num_envs)]
        self.left = [0] * num_envs
        self.final_ids: set[int] = set()   # ids of frames that ended an episode
        self.reset_ids: set[int] = set()

    @property
    def obs_shape(self):
        return (self.stack, *FRAME) if self.stack else (4,)

    @property
    def dtype(self):
        return np.uint8 if self.stack else np.float32

    def _frame(self, env: int) -> np.ndarray:
        c = self.counter = self.counter + 1
        if self.stack is None:
            return np.array([c, env, c * 0.5, -c], np.float32)
        f = ((np.arange(np.prod(FRAME)) * 7 + c * 13 + env) % 256).astype(np.uint8)
        f[:3] = (c & 255, (c >> 8) & 255, env)  # unique id in the first bytes
        return f.reshape(FRAME)

    def _obs(self, env: int) -> np.ndarray:
        if self.stack is None:
            return self.frames[env][-1].copy()
        return np.stack(self.frames[env])

    def _reset_one(self, env: int) -> np.ndarray:
        f = self._frame(env)
        self.reset_ids.add(frame_id(f))
        self.frames[env] = deque([f] * (self.stack or 1), maxlen=self.stack or 1)  # pad by repeating
        self.left[env] = int(self.rng.integers(self.min_len, self.max_len + 1))
        return self._obs(env)

    def reset(self) -> np.ndarray:
        return np.stack([self._reset_one(e) for e in range(self.n)])

    def step(self):
        next_obs, obs = [], []
        terminated = np.zeros(self.n, bool)
        truncated = np.zeros(self.n, bool)
        for e in range(self.n):
            f = self._frame(e)
            self.frames[e].append(f)
            self.left[e] -= 1
            next_obs.append(self._obs(e))
            if self.left[e] == 0:
                self.final_ids.add(frame_id(f))
                if self.rng.random() < 0.7:
                    terminated[e] = True
                else:
                    truncated[e] = True
                obs.append(self._reset_one(e))
            else:
                obs.append(next_obs[-1])
        return np.stack(obs), np.stack(next_obs), terminated, truncated


def frame_id(frame: np.ndarray) -> int:
    """The unique counter of a frame (image) or vector observation."""
    if frame.dtype == np.float32:
        return int(frame[0])
    flat = frame.reshape(-1)
    return int(flat[0]) | int(flat[1]) << 8


def newest_id(obs: np.ndarray) -> int:
    return frame_id(obs[-1] if obs.ndim == 3 else obs)


class NaiveReplay:
    """Every transition whole, keyed by (env, g): g counts the observations an env has produced
    (its reset observations and one per step), the slot index of FrameReplay's docstring."""

    def __init__(self, num_envs: int):
        self.count = [0] * num_envs
        self.cur = [None] * num_envs        # (g, obs) the env acts from
        self.transitions: dict[tuple[int, int], dict] = {}
        self.steps = 0

    def start(self, envs, obs):
        for i, e in enumerate(envs):
            self.cur[e] = (self.count[e], obs[i].copy())
            self.count[e] += 1

    def add(self, actions, rewards, terminated, next_obs):
        for e in range(len(self.count)):
            g, obs = self.cur[e]
            self.transitions[(e, g)] = dict(obs=obs, action=int(actions[e]), reward=float(rewards[e]),
                                            terminated=bool(terminated[e]), next_obs=next_obs[e].copy(),
                                            step=self.steps)
            self.cur[e] = (self.count[e], next_obs[e].copy())
            self.count[e] += 1
        self.steps += 1


def feed(replay: FrameReplay, naive: NaiveReplay, env: FakeVecEnv, steps: int, rng, every=None, check=None):
    obs = env.reset()
    replay.start(np.arange(env.n), obs)
    naive.start(np.arange(env.n), obs)
    for t in range(steps):
        actions = rng.integers(0, 6, env.n)
        rewards = (rng.integers(-3, 4, env.n) + t / 1000).astype(np.float32)
        obs, next_obs, terminated, truncated = env.step()
        replay.add(actions, rewards, terminated, next_obs)
        naive.add(actions, rewards, terminated, next_obs)
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            replay.start(done, obs[done])
            naive.start(done, obs[done])
        if every and check and (t + 1) % every == 0:
            check()


def check_samples(replay: FrameReplay, naive: NaiveReplay, env: FakeVecEnv, batch: int, seed: int):
    """Sampled transitions equal the naive buffer's; returns the sampled (env, g) keys."""
    envs, g = replay.sample_indices(batch, np.random.default_rng(seed))
    obs, actions, rewards, terminated, next_obs = replay.sample(batch, np.random.default_rng(seed))
    keys = list(zip(envs.tolist(), g.tolist()))
    missing = [k for k in keys if k not in naive.transitions]
    assert not missing, f"sampled slots with no transition (final or current obs): {missing[:5]}"
    want = [naive.transitions[k] for k in keys]

    assert obs.shape == next_obs.shape == (batch, *env.obs_shape)
    assert obs.dtype == next_obs.dtype == env.dtype
    np.testing.assert_array_equal(obs, np.stack([w["obs"] for w in want]))
    np.testing.assert_array_equal(next_obs, np.stack([w["next_obs"] for w in want]))
    np.testing.assert_array_equal(actions, [w["action"] for w in want])
    np.testing.assert_array_equal(rewards, np.array([w["reward"] for w in want], np.float32))
    # one-step discounts (the replay's default gamma 0.99): 0 for a terminal transition
    np.testing.assert_array_equal(terminated, discounts_of(np.array([w["terminated"] for w in want]), 0.99))

    # never across an episode: obs is never a final observation, s' never a reset one
    for o, n in zip(obs, next_obs):
        assert newest_id(o) not in env.final_ids
        assert newest_id(n) not in env.reset_ids
    return keys


CASES = [pytest.param(stack, n, id=f"{'vec' if stack is None else f'stack{stack}'}-{n}env")
         for stack in (4, 2, 1, None) for n in (1, 3)]


@pytest.mark.parametrize("stack,num_envs", CASES)
def test_matches_naive_without_wrap(stack, num_envs):
    env = FakeVecEnv(num_envs, stack, seed=1)
    replay = FrameReplay(10_000, env.obs_shape, env.dtype, num_envs)
    naive = NaiveReplay(num_envs)
    rng = np.random.default_rng(2)
    calls = iter(range(1000))
    feed(replay, naive, env, 60, rng, every=7,
         check=lambda: check_samples(replay, naive, env, 64, seed=next(calls)))
    assert len(replay) == 60 * num_envs
    keys = check_samples(replay, naive, env, 8000, seed=99)
    # nothing lost: every stored transition is sampled, roughly uniformly
    assert set(keys) == set(naive.transitions)
    counts = Counter(keys)
    mean = 8000 / len(naive.transitions)
    assert min(counts.values()) > 0.3 * mean and max(counts.values()) < 2.0 * mean
    # episodes ended in both ways, and some terminal transitions were sampled
    assert any(w["terminated"] for w in naive.transitions.values())
    assert len(env.final_ids) > sum(w["terminated"] for w in naive.transitions.values())


@pytest.mark.parametrize("stack,num_envs", CASES)
@pytest.mark.parametrize("capacity", [20, 31])
def test_ring_wrap_keeps_only_recent(stack, num_envs, capacity):
    env = FakeVecEnv(num_envs, stack, seed=3)
    replay = FrameReplay(capacity, env.obs_shape, env.dtype, num_envs)
    naive = NaiveReplay(num_envs)
    rng = np.random.default_rng(4)
    calls = iter(range(1000))
    steps = 90  # several times the per-env share: slots are overwritten again and again
    feed(replay, naive, env, steps, rng, every=5,
         check=lambda: check_samples(replay, naive, env, 64, seed=next(calls)))
    assert len(replay) == capacity
    share = -(-capacity // num_envs)  # each env keeps its share of the capacity, in slots
    keys = check_samples(replay, naive, env, 4000, seed=7)
    for e, g in keys:
        assert naive.transitions[(e, g)]["step"] >= steps - share  # recent only
    # exactly the transitions in each env's newest `share` slots before the current one
    expected = {(e, g) for (e, g) in naive.transitions if g >= naive.count[e] - 1 - share}
    assert set(keys) == expected
    assert len(expected) < len(naive.transitions) / 2  # most of the history is gone


@pytest.mark.parametrize("stack", [4, 2, None])
def test_short_episodes_never_sample_final_slot(stack):
    # episodes of 1-2 steps: a third to a half of all slots hold a final observation
    env = FakeVecEnv(2, stack, seed=5, max_len=2)
    replay = FrameReplay(40, env.obs_shape, env.dtype, 2)
    naive = NaiveReplay(2)
    feed(replay, naive, env, 50, np.random.default_rng(6))
    keys = check_samples(replay, naive, env, 3000, seed=8)
    finals = [k for k in keys if naive.transitions[k]["terminated"]]
    assert finals  # terminal transitions are sampled, with their final obs as s'
    one_step = [k for k in keys if naive.transitions[k]["obs"].ndim == 3
                and len({frame_id(f) for f in naive.transitions[k]["obs"]}) == 1]
    if stack:
        assert one_step  # transitions from a reset obs: the stack is the reset frame repeated


def test_terminal_next_obs_is_final_not_reset():
    """Hand-checked: one env, stack 2, an episode of one step then the next episode."""
    replay = FrameReplay(100, (2, 1, 1), np.uint8)
    frame = lambda v: np.full((1, 1), v, np.uint8)
    stack = lambda *vs: np.stack([frame(v) for v in vs])[None]  # (1, 2, 1, 1)
    replay.start([0], stack(10, 10))                                    # reset frame 10
    replay.add([1], [1.0], [True], stack(10, 11))                       # final frame 11
    replay.start([0], stack(20, 20))                                    # next reset frame 20
    replay.add([2], [0.5], [False], stack(20, 21))
    replay.add([3], [-1.0], [False], stack(21, 22))
    seen = {}
    for seed in range(20):
        obs, a, r, term, nxt = replay.sample(16, np.random.default_rng(seed))
        for i in range(16):
            seen[int(a[i])] = (obs[i].ravel().tolist(), float(r[i]), float(term[i]), nxt[i].ravel().tolist())
    assert seen == {
        1: ([10, 10], 1.0, 0.0, [10, 11]),                       # terminal: discount 0
        2: ([20, 20], 0.5, float(np.float32(0.99)), [20, 21]),
        3: ([20, 21], -1.0, float(np.float32(0.99)), [21, 22]),
    }


def test_empty_replay_cannot_sample():
    replay = FrameReplay(10, (4,), np.float32)
    replay.start([0], np.zeros((1, 4), np.float32))
    assert len(replay) == 0
    with pytest.raises(ValueError):
        replay.sample(4, np.random.default_rng(0))


def test_pong_sized_replay_fits_in_1gib():
    stacked = FrameReplay(100_000, (4, 84, 84), np.uint8)
    assert stacked.nbytes() <= 1 << 30
    assert stacked.nbytes() >= 100_000 * 84 * 84   # each frame once, and no less
    assert stacked.nbytes() < 2 * 100_000 * 84 * 84  # vs 8x for stacked obs + next obs
    # split over envs the total stays the same
    assert FrameReplay(100_000, (4, 84, 84), np.uint8, num_envs=8).nbytes() <= 1 << 30


def test_vector_replay_is_small():
    replay = FrameReplay(100_000, (4,), np.float32)
    assert replay.nbytes() < 100_000 * (4 * 4 + 32)


def test_full_pong_replay_rss_is_under_1_gib():
    """The real resident memory of 100k Pong transitions, measured in a fresh process."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "replay_memory.py")], capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["stored"] == 100_000
    assert 0.5 * 2**30 < result["rss_delta_bytes"] <= 2**30  # the frames are really resident, and fit
