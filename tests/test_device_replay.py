"""FrameReplay on the torch device against FrameReplay on the host (numpy):
fed the same stream, both hold the same arrays; the same indices gather the same transitions.
The device's own sampler draws only real transitions, roughly uniformly. Plus the pieces of
the device pipeline: masked episode starts, on-device epsilon-greedy, the update schedule."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from fastdqn.agent import EpsilonGreedy
from fastdqn.config import Hyperparams
from fastdqn.model import MLP
from fastdqn.replay import FrameReplay
from fastdqn.schedule import UpdateSchedule

from test_replay import CASES, FakeVecEnv, NaiveReplay, feed

CPU = torch.device("cpu")


class Both:
    """Feeds one stream to a host FrameReplay and a device one (numpy in, as from host envs)."""

    def __init__(self, capacity, env):
        self.host = FrameReplay(capacity, env.obs_shape, env.dtype, env.n)
        self.dev = FrameReplay(capacity, env.obs_shape, env.dtype, env.n, device=CPU)

    def start(self, envs, obs):
        self.host.start(envs, obs)
        self.dev.start(envs, obs)

    def add(self, *args):
        self.host.add(*args)
        self.dev.add(*args)


def assert_same_state(host: FrameReplay, dev: FrameReplay):
    for name in ("frames", "actions", "rewards", "terminated", "has_transition", "pos", "written"):
        np.testing.assert_array_equal(getattr(dev, name).numpy(), getattr(host, name), err_msg=name)
    assert len(dev) == len(host)


@pytest.mark.parametrize("stack,num_envs", CASES)
@pytest.mark.parametrize("capacity", [25, 10_000])
def test_same_state_and_gathers_as_host_ring(stack, num_envs, capacity):
    env = FakeVecEnv(num_envs, stack, seed=5)
    both, naive = Both(capacity, env), NaiveReplay(num_envs)
    feed(both, naive, env, 70, np.random.default_rng(6))
    assert_same_state(both.host, both.dev)
    envs, g = both.host.sample_indices(256, np.random.default_rng(7))
    want = both.host.sample(256, np.random.default_rng(7))
    got = both.dev.gather(torch.as_tensor(envs), torch.as_tensor(g))
    for w, d in zip(want, got):
        np.testing.assert_array_equal(d.numpy(), w)


@pytest.mark.parametrize("stack,num_envs", CASES)
def test_own_sampler_draws_only_stored_transitions_uniformly(stack, num_envs):
    env = FakeVecEnv(num_envs, stack, seed=8, max_len=3)  # short episodes: many final-obs slots
    both, naive = Both(10_000, env), NaiveReplay(num_envs)
    feed(both, naive, env, 40, np.random.default_rng(9))
    gen = torch.Generator().manual_seed(0)
    envs, g = both.dev.sample_indices(6000, gen)
    keys = list(zip(envs.tolist(), g.tolist()))
    assert set(keys) == set(naive.transitions)  # only real transitions, and all of them
    counts, mean = Counter(keys), 6000 / len(naive.transitions)
    assert min(counts.values()) > 0.3 * mean and max(counts.values()) < 2.0 * mean
    obs, actions, rewards, terminated, next_obs = both.dev.sample(32, gen)
    assert obs.shape == next_obs.shape == (32, *env.obs_shape) and actions.dtype == torch.int64


def test_sampler_is_deterministic_for_a_seed():
    env = FakeVecEnv(2, 4, seed=1)
    both = Both(1000, env)
    feed(both, NaiveReplay(2), env, 30, np.random.default_rng(2))
    a = both.dev.sample_indices(64, torch.Generator().manual_seed(3))
    b = both.dev.sample_indices(64, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_empty_replay_refuses_to_sample():
    dev = FrameReplay(100, (4, 5, 5), np.uint8, 2, device=CPU)
    with pytest.raises(ValueError, match="empty"):
        dev.sample(4, torch.Generator())


def test_start_where_equals_start_of_the_masked_envs():
    env = FakeVecEnv(4, 4, seed=11)
    a = FrameReplay(200, env.obs_shape, env.dtype, 4, device=CPU)
    b = FrameReplay(200, env.obs_shape, env.dtype, 4, device=CPU)
    obs = torch.as_tensor(env.reset())
    a.start(None, obs)
    b.start_where(torch.ones(4, dtype=torch.bool), obs)
    rng = np.random.default_rng(12)
    for _ in range(40):
        o, next_obs, terminated, truncated = (torch.as_tensor(x) for x in env.step())
        actions, rewards = torch.as_tensor(rng.integers(0, 6, 4)), torch.as_tensor(rng.random(4), dtype=torch.float32)
        for r in (a, b):
            r.add(actions, rewards, terminated, next_obs)
        done = terminated | truncated
        a.start(done.nonzero().squeeze(1), o[done])
        b.start_where(done, o)
    for name in ("frames", "actions", "rewards", "terminated", "has_transition", "pos", "written"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_epsilon_greedy_same_actions_for_host_and_device_inputs():
    """numpy observations (host envs) and tensors (torch_pong) take the same path: same seed, same
    actions, greedy and random alike; numpy in gives numpy out, a tensor a tensor."""
    torch.manual_seed(0)
    net = MLP(4, 3)
    obs = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    for epsilon in (0.0, 0.5):
        host = EpsilonGreedy(net, 3, CPU, no_grad=True, seed=1)(obs, epsilon)
        dev = EpsilonGreedy(net, 3, CPU, no_grad=True, seed=1)(torch.as_tensor(obs), epsilon)
        assert isinstance(host, np.ndarray) and isinstance(dev, torch.Tensor)
        np.testing.assert_array_equal(dev.numpy(), host)
    explore = EpsilonGreedy(net, 3, CPU, no_grad=True, seed=1)(torch.as_tensor(obs).repeat(6, 1), 1.0)
    counts = torch.bincount(explore, minlength=3)
    assert counts.min() > 0.25 * len(explore)  # uniform over the 3 actions at epsilon 1


def hp(**kw):
    return Hyperparams(**{"replay_initial": 100, **kw})


@pytest.mark.parametrize("envs", [1, 3, 8])
def test_book_schedule_is_one_update_per_round_of_batch_times_n(envs):
    s = UpdateSchedule(hp(), envs)
    assert s.batch_size == 32 * envs and s.samples_per_step == pytest.approx(32)
    updates = [s.due(steps) for steps in range(envs, 400, envs)]
    # the first update follows the round that fills the replay to replay_initial, then one per round
    first = next(i for i, n in enumerate(updates) if n)
    assert (first + 1) * envs >= 100 > first * envs
    assert set(updates[first:]) == {1}


def test_recipe_schedule_counts_fractional_rates_without_drift():
    s = UpdateSchedule(hp(updates_per_step=1 / 64, batch_size=512), 4096)
    assert s.batch_size == 512 and s.samples_per_step == 8
    assert s.due(4096) == 63  # steps 100..4096 in the replay: 3997 / 64, begun updates count
    assert s.due(8192) == 64
    s = UpdateSchedule(hp(updates_per_step=0.1), 1)
    assert sum(s.due(t) for t in range(1, 100_100)) == 10_000
    s = UpdateSchedule(hp(updates_per_step=4), 1)
    assert [s.due(t) for t in (99, 100, 101)] == [0, 4, 4]


def test_target_sync_is_due_every_target_sync_steps_of_agent_steps():
    s = UpdateSchedule(hp(target_sync_steps=1000), 4)
    assert [t for t in range(4, 4001, 4) if s.sync_due(t)] == [1000, 2000, 3000, 4000]
