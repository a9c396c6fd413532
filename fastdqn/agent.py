"""Exploration schedule and batched epsilon-greedy action selection."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .model import grad_context
from .transfer import make_to_device


def epsilon_at(step: int, start: float, final: float, decay_steps: int) -> float:
    """Linear decay from `start` to `final` over `decay_steps` agent steps, then constant."""
    return max(final, start - (start - final) * step / decay_steps)


def q_values(net: nn.Module, obs: torch.Tensor, no_grad: bool) -> torch.Tensor:
    with grad_context(no_grad):  # flag site: no_grad (action selection)
        return net(obs)


class EpsilonGreedy:
    """Batched epsilon-greedy: one forward pass for N observations, the random draws from a seeded
    torch Generator on the net's device. Observations from host envs (numpy) are copied in by
    `to_device` and their actions come back as numpy; device tensors (torch_pong) stay on the
    device, so choosing actions needs no host round trip."""

    def __init__(self, net: nn.Module, n_actions: int, device: torch.device, no_grad: bool, seed: int,
                 to_device=None):
        self.net, self.n_actions, self.no_grad, self.device = net, n_actions, no_grad, torch.device(device)
        self.gen = torch.Generator(self.device).manual_seed(seed)
        self.to_device = to_device or make_to_device(self.device, pinned=False)

    def __call__(self, obs, epsilon: float):
        on_host = isinstance(obs, np.ndarray)
        greedy = q_values(self.net, self.to_device(obs) if on_host else obs, self.no_grad).argmax(dim=1)
        n = len(greedy)
        explore = torch.rand(n, device=self.device, generator=self.gen) < epsilon
        random_actions = torch.randint(0, self.n_actions, (n,), device=self.device, generator=self.gen)
        actions = torch.where(explore, random_actions, greedy)
        return actions.cpu().numpy() if on_host else actions
