"""Bellman loss with a target network, as in the book's baseline."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .agent import grad_context


def dqn_loss(net: nn.Module, tgt_net: nn.Module, obs, actions, rewards, dones, next_obs,
             gamma: float, no_grad: bool = True, kind: str = "mse") -> torch.Tensor:
    """(Q(s,a) - (r + gamma * max_a' Q_tgt(s',a') * (1 - done)))^2, mean over the batch.
    `dones` marks terminal transitions (no bootstrap); truncated ones bootstrap."""
    q = net(obs).gather(1, actions.long().unsqueeze(1)).squeeze(1)
    with grad_context(no_grad):  # flag site: no_grad (target network)
        next_q = tgt_net(next_obs).max(dim=1).values
        next_q = next_q * (1.0 - dones.float())
        target = rewards.float() + gamma * next_q
    target = target.detach()
    if kind == "huber":
        return F.smooth_l1_loss(q, target)
    return F.mse_loss(q, target)


def sgd_step(net: nn.Module, tgt_net: nn.Module, optimizer: torch.optim.Optimizer, batch, gamma: float,
             no_grad: bool, kind: str) -> torch.Tensor:
    """One optimizer step on the Bellman loss of `batch` (obs, actions, rewards, dones, next_obs)."""
    loss = dqn_loss(net, tgt_net, *batch, gamma=gamma, no_grad=no_grad, kind=kind)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def make_target(net: nn.Module) -> nn.Module:
    """A copy whose parameters keep requires_grad, as the book's: only the no_grad flag decides
    whether its forward pass builds a graph."""
    return copy.deepcopy(net)


def sync_target(net: nn.Module, tgt_net: nn.Module) -> None:
    tgt_net.load_state_dict(net.state_dict())
