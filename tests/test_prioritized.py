"""Prioritized replay (priority_alpha > 0) against hand-computed references: the sampling
distribution p^alpha / sum p^alpha over the slots uniform replay could draw, new transitions at the
largest priority, the importance weights (N P)^-beta / max, beta's schedule, the weighted loss and
its TD errors, the compiled update against the eager one, a short run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fastdqn.cli import main
from fastdqn.config import build_config
from fastdqn.errors import UsageError
from fastdqn.learner import Learner
from fastdqn.loss import dqn_loss
from fastdqn.replay import FrameReplay, PrioritizedReplay


def filled(alpha=0.6, n=6, capacity=50):
    """One env, vector observations: n transitions in one running episode (slots 0..n-1; slot n
    holds the newest observation, which has no transition)."""
    r = PrioritizedReplay(capacity, (2,), np.float32, 1, 0.99, 1, alpha=alpha, beta0=0.5, beta_steps=100)
    r.start(None, np.zeros((1, 2), np.float32))
    for i in range(n):
        r.add(np.array([i % 2]), np.array([1.0], np.float32), np.array([False]), np.full((1, 2), i + 1, np.float32))
    return r


def test_new_transitions_come_in_at_the_largest_priority():
    r = filled(alpha=0.5)
    assert np.allclose(r.q[0, :6], 1.0) and r.q[0, 6] == 0.0
    r.last = (np.array([0]), np.array([2]))
    r.update_priorities(np.array([8.0]))  # p = 8 + 1e-6
    assert r.q[0, 2] == pytest.approx(8.0 ** 0.5) and r.max_priority == pytest.approx(8.0)
    r.add(np.array([0]), np.array([0.0], np.float32), np.array([False]), np.zeros((1, 2), np.float32))
    assert r.q[0, 6] == pytest.approx(8.0 ** 0.5)


def test_the_draw_follows_p_to_the_alpha_and_the_weights_are_the_papers():
    alpha, td = 0.6, np.array([0.5, 1.0, 2.0, 4.0, 0.1, 3.0])
    r = filled(alpha=alpha)
    r.last = (np.zeros(6, int), np.arange(6))
    r.update_priorities(td)
    want = (td + 1e-6) ** alpha / ((td + 1e-6) ** alpha).sum()
    rng = np.random.default_rng(0)
    counts = np.zeros(7)
    for _ in range(4000):
        envs, g = r.sample_indices(64, rng)
        assert (envs == 0).all()
        counts += np.bincount(g, minlength=7)
    assert counts[6] == 0  # the newest observation's slot has no transition
    assert np.allclose(counts[:6] / counts.sum(), want, atol=0.004)
    # weights of the last batch: (N P_i)^-beta over the batch's largest, N = 6 sampleable slots
    *_, weights = r.sample(8, rng)
    envs, slots = r.last
    w = (6 * want[slots]) ** -0.5
    assert np.allclose(weights, w / w.max(), rtol=1e-5)


def test_only_the_slots_uniform_replay_could_draw_have_a_priority():
    """Across episodes and many laps of the ring (stack 4: each write takes one old slot's
    lookback), q > 0 exactly where the uniform draw can land: in the usable range, with a
    transition."""
    r = PrioritizedReplay(40, (4, 6, 6), np.uint8, 2, 0.99, 3, alpha=0.6)
    rng = np.random.default_rng(0)
    r.start(None, rng.integers(0, 255, (2, 4, 6, 6), dtype=np.uint8))
    for step in range(300):
        done = rng.random(2) < 0.05
        r.add(rng.integers(0, 3, 2), rng.random(2, dtype=np.float32), done,
              rng.integers(0, 255, (2, 4, 6, 6), dtype=np.uint8))
        if done.any():
            r.start(np.flatnonzero(done), rng.integers(0, 255, (done.sum(), 4, 6, 6), dtype=np.uint8))
        low, count = r._usable()
        offset = (np.arange(r.ring)[None, :] - low[:, None]) % r.ring
        usable = (offset < count[:, None]) & r.has_transition
        assert np.array_equal(r.q > 0, usable), step


def test_beta_rises_linearly_to_one():
    r = filled()
    for steps, beta in ((0, 0.5), (50, 0.75), (100, 1.0), (500, 1.0)):
        r.anneal(steps)
        assert r.beta == pytest.approx(beta)


def test_alpha_zero_draws_like_uniform_replay():
    r, u = filled(alpha=0.0, n=5), FrameReplay(50, (2,), np.float32, 1, 0.99, 1)
    u.start(None, np.zeros((1, 2), np.float32))
    for i in range(5):
        u.add(np.array([0]), np.array([1.0], np.float32), np.array([False]), np.full((1, 2), i, np.float32))
    rng = np.random.default_rng(1)
    got = np.concatenate([r.sample_indices(50, rng)[1] for _ in range(400)])
    want = np.concatenate([u.sample_indices(50, rng)[1] for _ in range(400)])
    assert set(got) == set(want) == set(range(5))
    assert np.allclose(np.bincount(got) / len(got), 0.2, atol=0.01)
    assert np.allclose(r.sample(16, rng)[-1], 1.0)  # equal priorities: every weight is 1


def test_the_weighted_loss_and_its_td_errors_by_hand():
    torch.manual_seed(0)
    net, tgt = nn.Linear(3, 2), nn.Linear(3, 2)
    obs, next_obs = torch.randn(4, 3), torch.randn(4, 3)
    actions, rewards, discounts = torch.tensor([0, 1, 1, 0]), torch.randn(4), torch.full((4,), 0.9)
    weights = torch.tensor([1.0, 0.5, 0.25, 2.0])
    q = net(obs).gather(1, actions[:, None]).squeeze(1)
    target = rewards + discounts * tgt(next_obs).max(1).values
    loss, td = dqn_loss(net, tgt, obs, actions, rewards, discounts, next_obs, weights)
    assert loss.item() == pytest.approx((weights * (q - target) ** 2).mean().item(), rel=1e-6)
    assert torch.allclose(td, (target - q).abs().detach())
    huber, _ = dqn_loss(net, tgt, obs, actions, rewards, discounts, next_obs, weights, kind="huber")
    err = (q - target).abs()
    assert huber.item() == pytest.approx((weights * torch.where(err < 1, 0.5 * err ** 2, err - 0.5)).mean().item(),
                                         rel=1e-6)
    plain = dqn_loss(net, tgt, obs, actions, rewards, discounts, next_obs)  # no weights: the book's loss, alone
    assert torch.is_tensor(plain) and plain.item() == pytest.approx(((q - target) ** 2).mean().item(), rel=1e-6)


@pytest.mark.slow
def test_the_compiled_prioritized_update_matches_the_eager_one():
    cfg = build_config(None, None, {"env": "CartPole-v1", "priority_alpha": 0.6})
    g = torch.Generator().manual_seed(0)
    batch = [torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g), torch.randn(16, generator=g),
             torch.full((16,), 0.99), torch.randn(16, 4, generator=g), torch.rand(16, generator=g)]
    outs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        from fastdqn.model import make_net
        flags = build_config(None, None, {"env": "CartPole-v1", "compile": compiled}).flags
        learner = Learner(make_net((4,), 2), cfg.hp, flags, "cpu")
        results = [learner.update(batch) for _ in range(3)]
        outs.append((results, [p.detach().clone() for p in learner.net.parameters()]))
    (eager, w_eager), (comp, w_comp) = outs
    for (l1, td1), (l2, td2) in zip(eager, comp):
        assert torch.allclose(l1, l2, rtol=1e-5, atol=1e-6) and torch.allclose(td1, td2, rtol=1e-5, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(w_eager, w_comp))


def test_a_short_prioritized_run_learns_and_records_it(tmp_path):
    out = tmp_path / "r.json"
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "400", "--replay-initial", "100", "--batch-size", "8",
                 "--priority-alpha", "0.6", "--progress", "false", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["updates"] == 301 and result["config"]["hyperparams"]["priority_alpha"] == 0.6


def test_prioritized_replay_off_the_host_is_one_line():
    with pytest.raises(UsageError, match="prioritized replay runs on the host replay"):
        build_config(None, None, {"env": "CartPole-v1", "priority_alpha": 0.6, "loop": "ptan"})
