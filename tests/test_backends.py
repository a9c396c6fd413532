"""The vector backends (sequential, gym_async, ale_sync, ale_async) against the contract of
fastdqn/envs/vector.py, driven through a FrameReplay exactly as loops/serial.py drives them."""
from __future__ import annotations

import dataclasses
import multiprocessing
import os

import numpy as np
import pytest
from helpers import wait_for

from fastdqn.config import Flags, Hyperparams
from fastdqn.envs import make_vec_env
from fastdqn.envs.backends import AleVecEnv, GymAsyncVecEnv
from fastdqn.errors import UsageError
from fastdqn.replay import FrameReplay

PONG, CARTPOLE = "PongNoFrameskip-v4", "CartPole-v1"
BACKENDS = ["sequential", "gym_async", "ale_sync", "ale_async"]
SHORT = 300  # emulator frames per Pong episode: ~75 agent steps, then truncation


def hparams(**changes) -> Hyperparams:
    return dataclasses.replace(Hyperparams(), **changes)


def vec(backend: str, envs: int, async_batch: int = 0, **hp):
    return make_vec_env(hparams(**hp), Flags(envs=envs, backend=backend, async_batch=async_batch))


def drive(env, rounds: int, seed: int = 0, policy=None):
    """The serial loop's env/replay protocol (taken[env_ids] = actions; send; recv; add the rows
    with a transition; start the rows with a reset). Random actions unless policy(env_ids, counts)
    gives them (counts: transitions stored so far per env). Returns the replay, per env the list
    of what was stored: ("start", obs) and ("step", obs acted on, action, reward, terminated,
    truncated, next_obs), and the episodes the backend reported."""
    n, space = env.num_envs, env.single_observation_space
    n_actions = int(env.single_action_space.n)
    rng = np.random.default_rng(seed)
    replay = FrameReplay(100_000, space.shape, space.dtype, n)
    obs, env_ids = env.reset(seed=seed), np.arange(n)
    taken = np.zeros(n, np.int64)
    replay.start(env_ids, obs)
    events = [[("start", obs[i].copy())] for i in range(n)]
    counts = np.zeros(n, np.int64)
    acted = [None] * n
    episodes = []
    for _ in range(rounds):
        actions = rng.integers(0, n_actions, len(env_ids)) if policy is None else policy(env_ids, counts)
        taken[env_ids] = actions
        for i, o in zip(env_ids, obs):
            acted[i] = o.copy()
        env.send(actions, env_ids)
        result = env.recv()
        t = result.has_transition
        replay.add(taken[result.env_ids[t]], result.rewards[t], result.terminated[t],
                   result.next_obs[t], result.env_ids[t])
        if result.reset.any():
            replay.start(result.env_ids[result.reset], result.obs[result.reset])
        for k, i in enumerate(result.env_ids):
            if t[k]:
                events[i].append(("step", acted[i], int(taken[i]), float(result.rewards[k]),
                                  bool(result.terminated[k]), bool(result.truncated[k]),
                                  result.next_obs[k].copy()))
                counts[i] += 1
            if result.reset[k]:
                events[i].append(("start", result.obs[k].copy()))
        episodes += result.episodes
        obs, env_ids = result.obs, result.env_ids
    return replay, events, episodes


def check_streams(events, episodes, stacked: bool, min_episodes: int) -> None:
    """No stored transition crosses an episode boundary; episode stats match the stored steps."""
    for i, stream in enumerate(events):
        cur = None      # the observation env i is at (None: its episode just ended)
        prev = None
        ret, length, ended = 0.0, 0, []
        for ev in stream:
            if ev[0] == "start":
                obs = ev[1]
                # a stream starts only after an episode's end (or again, same reset obs: ale_async)
                assert cur is None or (prev[0] == "start" and np.array_equal(obs, prev[1])), i
                if stacked:  # the stack of a reset obs repeats the reset frame (baseline padding)
                    assert (obs == obs[-1]).all(), i
                cur, ret, length = obs, 0.0, 0
            else:
                _, obs, action, reward, terminated, truncated, next_obs = ev
                assert cur is not None, f"env {i}: a transition from a final observation"
                assert np.array_equal(obs, cur), f"env {i}: s is not the previous s' / reset obs"
                if stacked:  # s' is the next frame of the same episode, not a reset obs
                    assert np.array_equal(next_obs[:-1], obs[1:]), i
                ret, length = ret + reward, length + 1
                if terminated or truncated:
                    ended.append((ret, length))
                    cur = None
                else:
                    cur = next_obs
            prev = ev
        reported = [(r, l) for e, r, l in episodes if e == i]
        assert reported == ended, i  # raw score == clipped sum for Pong (+-1) and CartPole (+1)
        assert len(ended) >= min_episodes, (i, len(ended))


def check_samples(replay, events, stacked: bool) -> None:
    """Sampled transitions are stored transitions: (s, a, r, terminated, s') of one episode."""
    stored = set()
    for stream in events:
        for ev in stream:
            if ev[0] == "step":
                _, obs, a, r, te, _, nxt = ev
                stored.add((obs.tobytes(), a, r, te, nxt.tobytes()))
    obs, actions, rewards, discounts, next_obs = replay.sample(512, np.random.default_rng(1))
    for k in range(len(actions)):
        key = (obs[k].tobytes(), int(actions[k]), float(rewards[k]), bool(discounts[k] == 0),
               next_obs[k].tobytes())
        assert key in stored, k
        if stacked:
            assert np.array_equal(next_obs[k][:-1], obs[k][1:])


AUTORESET_CASES = [  # backend, env, envs, async batch, rounds, episodes per env at least
    ("sequential", PONG, 2, 0, 240, 3),
    ("sequential", CARTPOLE, 2, 0, 150, 3),
    ("gym_async", PONG, 2, 0, 240, 3),
    ("gym_async", CARTPOLE, 3, 0, 150, 3),
    ("ale_sync", PONG, 3, 0, 240, 3),
    ("ale_async", PONG, 4, 0, 600, 2),   # batch 2 (the default, envs // 2)
    ("ale_async", PONG, 4, 3, 420, 2),   # batch 3: one env's reset left inside ALE
]


@pytest.mark.parametrize("backend,env_id,envs,batch,rounds,min_eps", AUTORESET_CASES)
def test_autoreset_no_transition_crosses_an_episode(backend, env_id, envs, batch, rounds, min_eps):
    env = vec(backend, envs, batch, env=env_id, max_episode_frames=SHORT)
    try:
        replay, events, episodes = drive(env, rounds, seed=5)
    finally:
        env.close()
    stacked = env_id == PONG
    check_streams(events, episodes, stacked, min_eps)
    check_samples(replay, events, stacked)
    steps = sum(ev[0] == "step" for stream in events for ev in stream)
    assert len(replay) == steps
    if backend.startswith("ale"):
        # ALE truncates after exactly SHORT / frame_skip agent steps: not one reset step stored
        assert {length for _, _, length in episodes} == {SHORT // 4}
    if env_id == PONG:  # only truncations in 300 frames of Pong
        assert all(ev[5] and not ev[4] for stream in events for ev in stream
                   if ev[0] == "step" and (ev[4] or ev[5]))


def test_ale_full_pong_game_ends_terminated_with_raw_score():
    env = vec("ale_sync", 2)
    try:
        _, events, episodes = drive(env, 1500, seed=2, policy=lambda ids, c: np.zeros(len(ids), np.int64))
    finally:
        env.close()
    check_streams(events, episodes, stacked=True, min_episodes=1)
    ends = [ev for stream in events for ev in stream if ev[0] == "step" and (ev[4] or ev[5])]
    assert ends and all(ev[4] and not ev[5] for ev in ends)  # game over: terminated
    assert all(r == -21.0 for _, r, _ in episodes)  # NOOP loses every point


@pytest.mark.parametrize("stack", [4, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_observation_contract(backend, stack):
    env = vec(backend, 2, stack=stack)
    try:
        shape = (stack, 84, 84)
        assert env.single_observation_space.shape == shape
        assert env.single_observation_space.dtype == np.uint8
        assert env.single_action_space.n == 6
        assert env.num_envs == 2 and env.batch == (1 if backend == "ale_async" else 2)
        obs = env.reset(seed=0)
        assert obs.dtype == np.uint8 and obs.shape == (2,) + shape
        assert obs.max() > obs.min()
        env.send(np.array([0, 1]), np.arange(2))
        r = env.recv()
        b = env.batch
        assert r.env_ids.dtype == np.int64 and r.env_ids.shape == (b,)
        assert r.obs.dtype == np.uint8 and r.obs.shape == (b,) + shape
        assert r.next_obs.dtype == np.uint8 and r.next_obs.shape == (b,) + shape
        assert r.rewards.dtype == np.float32 and r.rewards.shape == (b,)
        for a in (r.terminated, r.truncated, r.has_transition, r.reset):
            assert a.dtype == bool and a.shape == (b,)
    finally:
        env.close()


def play(env, rounds: int, seed: int):
    """Fixed actions (sync backends): every StepResult field, per round."""
    obs = [env.reset(seed=seed)]
    rng = np.random.default_rng(7)
    out = []
    for _ in range(rounds):
        env.send(rng.integers(0, 6, env.num_envs), np.arange(env.num_envs))
        r = env.recv()
        out.append((r.obs, r.next_obs, r.rewards, r.terminated, r.truncated, r.has_transition,
                    r.reset, r.episodes))
    env.close()
    return obs, out


def assert_same(a, b):
    (obs_a, rows_a), (obs_b, rows_b) = a, b
    assert np.array_equal(obs_a[0], obs_b[0])
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for x, y in zip(ra, rb):
            assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y


def test_gym_async_is_the_sequential_backend():
    """Same seed, same actions: the same observations, rewards, resets and episodes."""
    seq = play(vec("sequential", 2, max_episode_frames=SHORT), 90, seed=11)
    asy = play(vec("gym_async", 2, max_episode_frames=SHORT), 90, seed=11)
    assert any(rows[7] for rows in seq[1])  # the comparison covers autoresets
    assert_same(seq, asy)


def test_ale_sync_is_deterministic_for_a_seed():
    a = play(vec("ale_sync", 3, max_episode_frames=SHORT), 90, seed=11)
    b = play(vec("ale_sync", 3, max_episode_frames=SHORT), 90, seed=11)
    c = play(vec("ale_sync", 3, max_episode_frames=SHORT), 90, seed=12)
    assert any(rows[7] for rows in a[1])
    assert_same(a, b)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a[1], c[1]))


def test_ale_async_envs_follow_their_sync_trajectories():
    """Per env, the stored transitions depend only on its seed and its own actions: async mode
    stores what sync mode stores, whatever order the envs come back in."""
    def policy(env_ids, counts):  # action from (env, its transition count): order-independent
        return (env_ids * 7 + counts[env_ids] * 3 + counts[env_ids] // 5) % 6

    streams = {}
    for backend, rounds in (("ale_sync", 100), ("ale_async", 260)):
        env = vec(backend, 4, max_episode_frames=SHORT)
        try:
            _, events, _ = drive(env, rounds, seed=3, policy=policy)
        finally:
            env.close()
        streams[backend] = [[ev for ev in s if ev[0] == "step"] for s in events]
    for i in range(4):
        sync, asyn = streams["ale_sync"][i], streams["ale_async"][i]
        k = min(len(sync), len(asyn))
        assert k >= 40, (i, k)
        for x, y in zip(sync[:k], asyn[:k]):
            assert np.array_equal(x[1], y[1]) and x[2:6] == y[2:6] and np.array_equal(x[6], y[6])


def test_ale_async_returns_batch_rows_of_distinct_envs():
    env = AleVecEnv(hparams(max_episode_frames=SHORT), 5, batch=2)
    try:
        env.reset(seed=0)
        env_ids, seen = np.arange(5), np.zeros(5, np.int64)
        for _ in range(300):
            env.send(np.zeros(len(env_ids), np.int64), env_ids)
            r = env.recv()
            assert len(r.env_ids) == 2 and len(set(r.env_ids.tolist())) == 2
            assert r.obs.shape[0] == r.rewards.shape[0] == 2
            seen[r.env_ids[r.has_transition]] += 1
            env_ids = r.env_ids
        assert (seen > 0).all(), seen  # every env is stepped (ALE's scheduling is not fair)
        with pytest.raises(RuntimeError, match="reset once"):
            env.reset(seed=1)
    finally:
        env.close()


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_gym_async_workers_are_single_threaded_and_close_cleanly():
    import torch
    torch.ones(256, 256) @ torch.ones(256, 256)  # the parent's torch thread pool has started
    env = GymAsyncVecEnv(hparams(), 2)
    env.reset(seed=0)
    for _ in range(5):
        env.send(np.zeros(2, np.int64), np.arange(2))
        env.recv()
    procs = list(env.env.processes)
    assert all(p.is_alive() for p in procs)
    for p in procs:  # no torch or OpenCV thread pools in the workers
        assert len(os.listdir(f"/proc/{p.pid}/task")) == 1
    env.close()
    assert not any(p.is_alive() for p in procs)
    assert not set(multiprocessing.active_children()) & set(procs)


@pytest.mark.parametrize("batch", [4, 2])
def test_ale_close_joins_its_threads(batch):
    before = _threads()
    env = AleVecEnv(hparams(), 4, batch=batch)
    env.reset(seed=0)
    env.send(np.zeros(4, np.int64), np.arange(4))
    r = env.recv()
    env.send(np.zeros(batch, np.int64), r.env_ids)  # close with envs in flight
    assert _threads() > before
    env.close()
    # no thread left: it may take a moment to exit after close returns (one CI run saw 3 > 2)
    assert wait_for(lambda: _threads() <= before, 5), (_threads(), before)


@pytest.mark.parametrize("backend", ["ale_sync", "ale_async"])
def test_ale_backends_reject_non_atari_envs(backend):
    with pytest.raises(UsageError, match="Atari") as err:
        vec(backend, 2, env=CARTPOLE)
    assert "\n" not in str(err.value)


@pytest.fixture
def one_torch_thread():
    """On a loaded 2-core machine torch's 2 OpenMP threads wait on each other and a small forward
    pass gets far slower (measurements: results/amd-epyc-2c/torch_threads.md)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_runs_on_each_backend(run_train, one_torch_thread, backend):
    result = run_train("--backend", backend, "--envs", "4", "--max-steps", "400",
                       "--replay-initial", "200", "--batch-size", "8")
    assert result["status"] == "budget"
    assert result["steps"] >= 400
    assert result["updates"] > 0
    assert result["config"]["flags"]["backend"] == backend
