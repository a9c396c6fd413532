"""Bellman loss with a target network, as in the book's baseline."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model import grad_context


def dqn_loss(net: nn.Module, tgt_net: nn.Module, obs, actions, rewards, discounts, next_obs, weights=None,
             no_grad: bool = True, kind: str = "mse", double: bool = False):
    """(Q(s,a) - (r + discount * max_a' Q_tgt(s',a')))^2, mean over the batch. `discounts` is
    gamma^m for an m-step return r (0 for a terminal transition: no bootstrap; truncated ones
    bootstrap), as the replay samples it; `discounts_of` makes the one-step ones. With
    prioritized replay's importance `weights`: the weighted mean, returned with |TD error| per
    sample (the new priorities)."""
    q = net(obs).gather(1, actions.long().unsqueeze(1)).squeeze(1)
    with grad_context(no_grad):  # flag site: no_grad (target network)
        if double:  # flag site: double (the online net picks a', the target net values it)
            best = net(next_obs).argmax(dim=1, keepdim=True)
            next_q = tgt_net(next_obs).gather(1, best).squeeze(1)
        else:
            next_q = tgt_net(next_obs).max(dim=1).values
        target = rewards.float() + discounts * next_q
    target = target.detach()
    loss_of = F.smooth_l1_loss if kind == "huber" else F.mse_loss
    if weights is None:
        return loss_of(q, target)
    return (weights * loss_of(q, target, reduction="none")).mean(), (target - q).detach().abs()


def discounts_of(terminated, gamma: float):
    """One-step discounts: gamma, 0 where terminated (float32; numpy or torch as given)."""
    if isinstance(terminated, torch.Tensor):
        return torch.where(terminated.bool(), 0.0, gamma).float()
    return np.where(terminated, 0.0, gamma).astype(np.float32)


def sgd_step(net: nn.Module, tgt_net: nn.Module, optimizer: torch.optim.Optimizer, batch, no_grad: bool,
             kind: str, double: bool = False):
    """One optimizer step on the Bellman loss of `batch` (obs, actions, returns, discounts, next_obs
    [, importance weights]); returns what dqn_loss returns."""
    out = dqn_loss(net, tgt_net, *batch, no_grad=no_grad, kind=kind, double=double)
    optimizer.zero_grad()
    (out[0] if isinstance(out, tuple) else out).backward()
    optimizer.step()
    return out


def make_target(net: nn.Module) -> nn.Module:
    """A copy whose parameters keep requires_grad, as the book's: only the no_grad flag decides
    whether its forward pass builds a graph."""
    return copy.deepcopy(net)


def sync_target(net: nn.Module, tgt_net: nn.Module) -> None:
    tgt_net.load_state_dict(net.state_dict())
