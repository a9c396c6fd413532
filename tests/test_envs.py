"""The Atari stack (`fastdqn.envs.make_env`) and the vector backend on real ALE games."""
from __future__ import annotations


import numpy as np
import pytest

from fastdqn.config import Hyperparams
from fastdqn.envs import SequentialVecEnv, make_env
from helpers import hparams, play

PONG = "PongNoFrameskip-v4"






@pytest.fixture(scope="module")
def pong():
    env = make_env(Hyperparams())
    yield env
    env.close()


def test_default_hyperparams_are_pong():
    assert Hyperparams().env == PONG


def test_observation_and_action_contract(pong):
    assert pong.observation_space.shape == (4, 84, 84)
    assert pong.observation_space.dtype == np.uint8
    assert pong.action_space.n == 6
    obs, _ = pong.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.dtype == np.uint8 and obs.shape == (4, 84, 84)
    assert pong.observation_space.contains(obs)
    obs, r, terminated, truncated, _ = pong.step(0)
    assert obs.dtype == np.uint8 and obs.shape == (4, 84, 84)
    assert isinstance(r, float) and not terminated and not truncated
    assert obs.max() > obs.min()  # a real screen, not a blank one


def test_ale_settings_reach_the_emulator(pong):
    pong.reset(seed=0)
    ale = pong.unwrapped.ale
    assert ale.getInt("max_num_frames_per_episode") == 108_000
    assert ale.getFloat("repeat_action_probability") == 0.0  # no sticky actions
    assert pong.unwrapped.get_action_meanings()[1] == "FIRE"


def test_episode_frame_cap_is_configurable():
    env = make_env(hparams(max_episode_frames=400))
    try:
        env.reset(seed=3)
        assert env.unwrapped.ale.getInt("max_num_frames_per_episode") == 400
        steps = 0
        while True:
            _, _, terminated, truncated, _ = env.step(0)
            steps += 1
            if terminated or truncated:
                break
            assert steps < 200, "the 400-frame cap never ended the episode"
        assert truncated and not terminated
        assert env.unwrapped.ale.getEpisodeFrameNumber() == 400
        assert steps < 100  # 400 frames at frame skip 4, less the noop and FIRE frames of the reset
    finally:
        env.close()


@pytest.mark.parametrize("wrappers", ["baseline", "fast"])
def test_seeded_determinism(wrappers):
    actions = np.random.default_rng(42).integers(0, 6, 300)
    runs = []
    for _ in range(2):
        env = make_env(Hyperparams(), wrappers)
        runs.append(play(env, 11, actions))
        env.close()
    (obs_a, rew_a), (obs_b, rew_b) = runs
    assert len(obs_a) == len(obs_b) == 301
    assert all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b))
    assert rew_a == rew_b
    assert set(rew_a) <= {-1.0, 0.0, 1.0} and any(r != 0 for r in rew_a)  # 300 steps include points


def test_different_seed_gives_a_different_episode():
    actions = np.random.default_rng(42).integers(0, 6, 100)
    env = make_env(Hyperparams())
    try:
        obs_a, _ = play(env, 11, actions)
        obs_b, _ = play(env, 12, actions)
    finally:
        env.close()
    assert any(not np.array_equal(a, b) for a, b in zip(obs_a, obs_b))


def test_noop_starts_are_what_the_seed_changes():
    """Pong itself is deterministic: without noop starts every seed starts the same."""
    env = make_env(hparams(noop_max=0))
    try:
        first = [env.reset(seed=s)[0] for s in (11, 12)]
    finally:
        env.close()
    assert np.array_equal(first[0], first[1])


def test_reset_obs_is_padded_with_the_reset_frame(pong):
    obs, _ = pong.reset(seed=5)
    assert all(np.array_equal(obs[0], obs[k]) for k in range(1, 4))
    obs, *_ = pong.step(0)
    assert np.array_equal(obs[:3], np.repeat(obs[:1], 3, axis=0))  # oldest three still the reset frame


def test_reward_clipping_on_pong(pong):
    _, rewards = play(pong, 2, np.random.default_rng(0).integers(0, 6, 300))
    assert set(rewards) <= {-1.0, 0.0, 1.0}
    assert -1.0 in rewards


def test_reward_clipping_with_large_raw_rewards():
    """SpaceInvaders scores 5..30 per alien: the agent sees +1, the episode statistics the raw score."""
    vec = SequentialVecEnv(hparams(env="SpaceInvadersNoFrameskip-v4", max_episode_frames=2000), 1)
    try:
        vec.reset(seed=0)
        rng = np.random.default_rng(0)
        rewards = []
        for _ in range(1000):
            result = vec.step(rng.integers(0, vec.single_action_space.n, 1))
            rewards.append(float(result.rewards[0]))
            if result.episodes:
                break
        assert result.episodes, "the 2000-frame cap never ended the episode"
    finally:
        vec.close()
    assert set(rewards) <= {-1.0, 0.0, 1.0}
    clipped = sum(rewards)
    [(index, raw, _)] = result.episodes
    assert index == 0 and clipped > 0
    assert raw >= 5 * clipped  # every hit is worth at least 5 points raw


def test_full_pong_episode_reports_raw_return():
    vec = SequentialVecEnv(Hyperparams(), 1)
    rng = np.random.default_rng(1)
    try:
        vec.reset(seed=1)
        rewards, steps = [], 0
        while True:
            result = vec.step(rng.integers(0, 6, 1))
            rewards.append(float(result.rewards[0]))
            steps += 1
            if result.episodes:
                break
            assert not result.terminated[0] and not result.truncated[0]
            assert steps < 5_000, "a random Pong episode should end well before 5000 agent steps"
    finally:
        vec.close()
    [(index, raw, length)] = result.episodes
    assert index == 0
    assert result.terminated[0] and not result.truncated[0]  # game over, not the frame cap
    assert -21 <= raw <= -1  # the random player loses: the opponent reached 21
    assert raw == sum(rewards)  # Pong rewards are +-1: clipping leaves them as they are
    assert rewards.count(-1.0) == 21
    assert 500 < steps < 3_000
    assert steps <= length <= steps + 2  # FireReset's two steps may be counted too


def test_vector_autoreset_keeps_final_obs_apart_from_reset_obs():
    """2 envs, 400-frame cap: where an env's episode ends, next_obs is its final obs and obs the reset one."""
    hp = hparams(max_episode_frames=400)
    seed = 7
    actions = np.random.default_rng(3).integers(0, 6, (300, 2))

    # reference: each env alone, same seed and actions, up to its first episode end and the reset after it
    refs = []
    for i in range(2):
        env = make_env(hp)
        env.reset(seed=seed + i)
        for t, a in enumerate(actions[:, i]):
            final, r, terminated, truncated, _ = env.step(int(a))
            if terminated or truncated:
                break
        reset_obs, _ = env.reset()
        refs.append((t, final, reset_obs))
        env.close()

    vec = SequentialVecEnv(hp, 2)
    try:
        obs = vec.reset(seed=seed)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        ended = {}
        for t in range(300):
            vec.send(actions[t], np.arange(2))  # the loop's path: send + recv
            result = vec.recv()
            assert result.obs.shape == result.next_obs.shape == (2, 4, 84, 84)
            assert result.rewards.dtype == np.float32 and result.rewards.shape == (2,)
            assert list(result.env_ids) == [0, 1]
            assert result.has_transition.all()  # same-step autoreset: every row is an agent step
            done = result.terminated | result.truncated
            assert np.array_equal(result.reset, done)
            assert sorted(i for i, *_ in result.episodes) == list(np.flatnonzero(done))
            for i in range(2):
                if done[i]:
                    ended.setdefault(i, (t, result))
                else:  # mid-episode: the obs to act on is the true next obs
                    assert np.array_equal(result.obs[i], result.next_obs[i])
            if len(ended) == 2:
                break
    finally:
        vec.close()

    assert sorted(ended) == [0, 1], "the 400-frame cap should end both episodes within 300 steps"
    for i, (t, result) in ended.items():
        ref_t, ref_final, ref_reset = refs[i]
        assert t == ref_t
        assert result.truncated[i] and not result.terminated[i]
        assert np.array_equal(result.next_obs[i], ref_final)  # the final obs, for the replay
        assert np.array_equal(result.obs[i], ref_reset)       # the reset obs, to act on next
        assert not np.array_equal(result.obs[i], result.next_obs[i])
        assert all(np.array_equal(result.obs[i][0], result.obs[i][k]) for k in range(1, 4))
