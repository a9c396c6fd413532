"""Exploration schedule and batched epsilon-greedy action selection."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn


def epsilon_at(step: int, start: float, final: float, decay_steps: int) -> float:
    """Linear decay from `start` to `final` over `decay_steps` agent steps, then constant."""
    return max(final, start - (start - final) * step / decay_steps)


def grad_context(no_grad: bool):
    """The `no_grad` flag: without it, forward passes build autograd graphs that are thrown
    away (the chapter's "slow grads" script)."""
    return torch.no_grad() if no_grad else contextlib.nullcontext()


class EpsilonGreedy:
    """One batched forward pass for N observations; random actions drawn from a seeded RNG."""

    def __init__(self, net: nn.Module, n_actions: int, device: torch.device, no_grad: bool, seed: int):
        self.net = net
        self.n_actions = n_actions
        self.device = device
        self.no_grad = no_grad
        self.rng = np.random.default_rng(seed)

    def q_values(self, obs: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(obs).to(self.device, non_blocking=True)
        with grad_context(self.no_grad):  # flag site: no_grad (action selection)
            return self.net(x)

    def __call__(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        greedy = self.q_values(obs).argmax(dim=1).cpu().numpy()
        explore = self.rng.random(len(greedy)) < epsilon
        random_actions = self.rng.integers(0, self.n_actions, len(greedy))
        return np.where(explore, random_actions, greedy)
