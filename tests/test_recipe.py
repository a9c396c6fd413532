"""The recipe flags against hand-computed targets: n_step returns in both replays (termination,
truncation, the newest step of a running episode, several env copies, the ring's wrap-around)
and the Double DQN target; with the defaults the loss is the book's one-step loss exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastdqn.loss import discounts_of, dqn_loss
from fastdqn.model import make_net
from fastdqn.replay import FrameReplay

from helpers import linear
from test_replay import CASES, FakeVecEnv, NaiveReplay, feed

CPU = torch.device("cpu")


def _walk(replay, gamma: float, n: int):
    """Two envs, vector obs [episode, step]; gather every stored transition of env 0 and 1.
    env 0: rewards 1, 2, 3, 4, the 4th terminated.
    env 1: rewards 1, 1, 1, the 3rd truncated; then a running episode with rewards 5, 6."""
    ob = lambda ep, t: np.array([[ep, t]], np.float32)
    replay.start([0], ob(0, 0))
    replay.start([1], ob(1, 0))
    for t, r in enumerate([1, 2, 3, 4]):
        replay.add([t], [r], [t == 3], ob(0, t + 1), [0])
    for t in range(3):
        replay.add([t], [1], [False], ob(1, t + 1), [1])
    replay.start([1], ob(2, 0))
    for t, r in enumerate([5, 6]):
        replay.add([t], [r], [False], ob(2, t + 1), [1])
    envs = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    g = np.array([0, 1, 2, 3, 0, 1, 2, 4, 5])  # env 1: slot 3 is the truncated episode's final obs
    out = replay.gather(*((torch.as_tensor(envs), torch.as_tensor(g)) if replay.device is not None
                          else (envs, g)))
    return [np.asarray(a) for a in out]


def _expected(gamma: float):
    h = gamma
    returns = [1 + h * 2 + h * h * 3, 2 + h * 3 + h * h * 4, 3 + h * 4, 4,  # env 0, n 3
               1 + h + h * h, 1 + h, 1,                                  # env 1, truncated
               5 + h * 6, 6]                                             # running episode
    discounts = [h ** 3, 0, 0, 0,        # env 0: the walks from slots 1-3 reach the termination
                 h ** 3, h ** 2, h,       # truncation: bootstrap from its final observation
                 h ** 2, h]               # the newest step: bootstrap from it
    next_obs = [[0, 3], [0, 4], [0, 4], [0, 4], [1, 3], [1, 3], [1, 3], [2, 2], [2, 2]]
    return returns, discounts, next_obs


@pytest.mark.parametrize("kind", ["host", "device"])
def test_n_step_by_hand(kind):
    gamma, n = 0.5, 3
    replay = (FrameReplay(100, (2,), np.float32, 2, gamma, n) if kind == "host"
              else FrameReplay(100, (2,), np.float32, 2, device=CPU, gamma=gamma, n_step=n))
    obs, actions, returns, discounts, next_obs = _walk(replay, gamma, n)
    want_r, want_d, want_next = _expected(gamma)
    np.testing.assert_allclose(returns, want_r, rtol=1e-6)
    np.testing.assert_allclose(discounts, want_d, rtol=1e-6)
    np.testing.assert_array_equal(next_obs, want_next)
    np.testing.assert_array_equal(obs[:, 1], [0, 1, 2, 3, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(actions, [0, 1, 2, 3, 0, 1, 2, 0, 1])
    assert returns.dtype == discounts.dtype == np.float32


def naive_n_step(naive: NaiveReplay, key, n: int, gamma: float):
    """The n-step target of transition `key` from the naive buffer's whole transitions."""
    e, g = key
    ret, k, w = 0.0, 0, naive.transitions[key]
    while True:
        ret += gamma ** k * w["reward"]
        k += 1
        if w["terminated"]:
            return ret, 0.0, w["next_obs"]
        if k == n or (e, g + k) not in naive.transitions:  # an episode's final obs, or the newest
            return ret, gamma ** k, w["next_obs"]
        w = naive.transitions[(e, g + k)]


@pytest.mark.parametrize("stack,num_envs", CASES)
@pytest.mark.parametrize("capacity", [23, 10_000])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_n_step_matches_naive_with_wrap(stack, num_envs, capacity, n):
    gamma = 0.9
    env = FakeVecEnv(num_envs, stack, seed=11, max_len=7)
    host = FrameReplay(capacity, env.obs_shape, env.dtype, num_envs, gamma, n)
    dev = FrameReplay(capacity, env.obs_shape, env.dtype, num_envs, device=CPU, gamma=gamma, n_step=n)

    class Both:
        def start(self, envs, obs):
            host.start(envs, obs)
            dev.start(envs, obs)

        def add(self, *args):
            host.add(*args)
            dev.add(*args)

    naive = NaiveReplay(num_envs)
    feed(Both(), naive, env, 80, np.random.default_rng(12))
    envs, g = host.sample_indices(2000, np.random.default_rng(13))
    got = host.gather(envs, g)
    for w, d in zip(got, dev.gather(torch.as_tensor(envs), torch.as_tensor(g))):
        np.testing.assert_array_equal(d.numpy(), w)  # the device replay computes the same bits
    obs, _, returns, discounts, next_obs = got
    walked = set()
    for i, key in enumerate(zip(envs.tolist(), g.tolist())):
        want_r, want_d, want_next = naive_n_step(naive, key, n, gamma)
        assert returns[i] == pytest.approx(want_r, rel=1e-5, abs=1e-5), key
        assert discounts[i] == pytest.approx(want_d, rel=1e-6), key
        np.testing.assert_array_equal(next_obs[i], want_next)
        np.testing.assert_array_equal(obs[i], naive.transitions[key]["obs"])
        walked.add(round(float(discounts[i]), 6))
    # walks ended in a termination and elsewhere; with room, full n-step walks too
    assert 0.0 in walked and len(walked) >= 2
    if capacity > 1000:
        assert round(gamma ** n, 6) in walked


def _book_loss(net, tgt, obs, actions, rewards, dones, next_obs, gamma):
    """The book's one-step loss as it was written before the recipe flags."""
    q = net(obs).gather(1, actions.long().unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        next_q = tgt(next_obs).max(dim=1).values * (1.0 - dones.float())
        target = rewards.float() + gamma * next_q
    return nn.functional.mse_loss(q, target.detach())


def test_defaults_give_the_books_loss_exactly():
    torch.manual_seed(0)
    net, tgt = make_net((4, 84, 84), 6, 128), make_net((4, 84, 84), 6, 128)
    env = FakeVecEnv(3, None, seed=2)
    g = torch.Generator().manual_seed(1)
    obs, next_obs = torch.randint(0, 256, (2, 64, 4, 84, 84), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, 6, (64,), generator=g)
    rewards = torch.randint(-1, 2, (64,), generator=g).float()
    dones = torch.rand(64, generator=g) < 0.2
    want = _book_loss(net, tgt, obs, actions, rewards, dones, next_obs, 0.99)
    got = dqn_loss(net, tgt, obs, actions, rewards, discounts_of(dones, 0.99), next_obs)
    assert torch.equal(got, want)
    # and the host replay with n_step 1 hands out exactly the one-step transition
    replay, naive = FrameReplay(1000, env.obs_shape, env.dtype, 3), NaiveReplay(3)
    feed(replay, naive, env, 40, np.random.default_rng(3))
    envs, slots = replay.sample_indices(200, np.random.default_rng(4))
    _, _, r, d, nxt = replay.gather(envs, slots)
    want = [naive.transitions[k] for k in zip(envs.tolist(), slots.tolist())]
    np.testing.assert_array_equal(r, np.array([w["reward"] for w in want], np.float32))
    np.testing.assert_array_equal(d, np.where([w["terminated"] for w in want], 0, np.float32(0.99)))
    np.testing.assert_array_equal(nxt, np.stack([w["next_obs"] for w in want]))


@pytest.mark.parametrize("no_grad", [True, False])
def test_double_dqn_target_by_hand(no_grad):
    # Q(s) = W s + b; online picks a' = argmax Q(s'), the target net values it
    net = linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    tgt = linear([[2.0, 0.0], [0.0, 3.0]], [0.0, 0.0])
    obs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    actions = torch.tensor([0, 1])
    rewards = torch.tensor([1.0, 0.0])
    discounts = torch.tensor([0.5, 0.5])
    # online Q(s') = [2, 1.5] -> a' 0 (target [4, 4.5]: max 4.5); [1, 2] -> a' 1 (target [2, 6])
    next_obs = torch.tensor([[2.0, 1.5], [1.0, 2.0]])
    q = torch.tensor([1.0, 1.0])                        # Q(s, a): [1, 0][0] = 1, [0, 1][1] = 1
    y_double = torch.tensor([1 + 0.5 * 4.0, 0 + 0.5 * 6.0])
    y_max = torch.tensor([1 + 0.5 * 4.5, 0 + 0.5 * 6.0])
    double = dqn_loss(net, tgt, obs, actions, rewards, discounts, next_obs, no_grad=no_grad, double=True)
    plain = dqn_loss(net, tgt, obs, actions, rewards, discounts, next_obs, no_grad=no_grad)
    assert double.item() == pytest.approx(((q - y_double) ** 2).mean().item(), rel=1e-6)
    assert plain.item() == pytest.approx(((q - y_max) ** 2).mean().item(), rel=1e-6)
    double.backward()
    assert tgt.weight.grad is None  # the target stays a constant


# --- dueling head and Adam's epsilon --------------------------------------------------------

def test_dueling_head_is_value_plus_centred_advantage():
    from fastdqn.model import DuelingHead
    head = DuelingHead(2, 3, 2)
    with torch.no_grad():
        for stream, w2, b2 in ((head.value, [[1.0, 0.0, 2.0]], [0.5]),
                               (head.advantage, [[1.0, 1.0, 0.0], [0.0, -1.0, 1.0]], [0.0, 1.0])):
            stream[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
            stream[0].bias.zero_()
            stream[2].weight.copy_(torch.tensor(w2))
            stream[2].bias.copy_(torch.tensor(b2))
    # x = (2, 1): hidden relu(2, 1, 1); V = 2 + 2 + 0.5 = 4.5; A = (3, 0 - 1 + 1 + 1) = (3, 1), mean 2
    q = head(torch.tensor([[2.0, 1.0]]))
    assert q.tolist() == [[4.5 + 3 - 2, 4.5 + 1 - 2]]


def test_dueling_nets_and_the_plain_ones_keep_their_layers():
    plain = make_net((4,), 2, 16)
    assert [k for k in plain.state_dict()] == [f"net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    for shape in ((4,), (4, 84, 84)):
        net = make_net(shape, 6, 16, dueling=True)
        x = torch.zeros(3, *shape, dtype=torch.uint8 if len(shape) == 3 else torch.float32)
        assert net(x).shape == (3, 6)
        assert any(".value." in k for k in net.state_dict()) and any(".advantage." in k for k in net.state_dict())


def test_adam_eps_reaches_the_step():
    from fastdqn.learner import make_optimizer
    # Adam's first step: m_hat = g, v_hat = g^2, so p -= lr * g / (|g| + eps)
    for eps in (1e-8, 1.5e-4):
        p = torch.nn.Parameter(torch.tensor([1.0]))
        opt = make_optimizer([p], lr=0.1, adam="default", eps=eps)
        p.grad = torch.tensor([1e-4])
        opt.step()
        assert p.item() == pytest.approx(1.0 - 0.1 * 1e-4 / (1e-4 + eps), rel=1e-5)
    from fastdqn.config import Flags, Hyperparams
    from fastdqn.learner import Learner
    learner = Learner(make_net((4,), 2, 8), Hyperparams(adam_eps=1.5e-4), Flags(), CPU)
    assert learner.optimizer.param_groups[0]["eps"] == 1.5e-4
