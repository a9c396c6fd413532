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
    """One batched forward pass for N observations; random actions drawn from a seeded RNG."""

    def __init__(self, net: nn.Module, n_actions: int, device: torch.device, no_grad: bool, seed: int,
                 to_device=None):
        self.net = net
        self.n_actions = n_actions
        self.no_grad = no_grad
        self.rng = np.random.default_rng(seed)
        self.to_device = to_device or make_to_device(device, pinned=False)

    def q_values(self, obs: np.ndarray) -> torch.Tensor:
        return q_values(self.net, self.to_device(obs), self.no_grad)

    def __call__(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        greedy = self.q_values(obs).argmax(dim=1).cpu().numpy()
        explore = self.rng.random(len(greedy)) < epsilon
        random_actions = self.rng.integers(0, self.n_actions, len(greedy))
        return np.where(explore, random_actions, greedy)


class DeviceEpsilonGreedy:
    """EpsilonGreedy for observations already on the device: the random draws come from a torch
    Generator on the device too, so choosing actions needs no host round trip. Same greedy
    actions as EpsilonGreedy for the same weights; a different random stream."""

    def __init__(self, net: nn.Module, n_actions: int, device: torch.device, no_grad: bool, seed: int):
        self.net = net
        self.n_actions = n_actions
        self.no_grad = no_grad
        self.gen = torch.Generator(device).manual_seed(seed)

    def __call__(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        greedy = q_values(self.net, obs, self.no_grad).argmax(dim=1)
        n = len(greedy)
        explore = torch.rand(n, device=obs.device, generator=self.gen) < epsilon
        random_actions = torch.randint(0, self.n_actions, (n,), device=obs.device, generator=self.gen)
        return torch.where(explore, random_actions, greedy)
