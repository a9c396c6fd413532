"""Q-networks: Nature-DQN for uint8 frame stacks, a small MLP for vector observations."""
from __future__ import annotations

import contextlib

import torch
from torch import nn


class DuelingHead(nn.Module):
    """Wang et al. 2016: a value stream and an advantage stream, each hidden units wide;
    Q = V + A - mean(A) over the actions (the mean makes V and A identifiable)."""

    def __init__(self, features: int, hidden: int, n_actions: int):
        super().__init__()
        self.value = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.advantage = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.advantage(x)
        return self.value(x) + a - a.mean(dim=1, keepdim=True)


def q_head(features: int, hidden: int, n_actions: int, dueling: bool) -> nn.Module:
    if dueling:  # flag site: dueling
        return DuelingHead(features, hidden, n_actions)
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))


class NatureDQN(nn.Module):
    """Mnih et al. 2015. Takes uint8 frames (B, C, 84, 84); the float conversion runs on the
    device, so only bytes cross the host-device boundary."""

    def __init__(self, in_channels: int, n_actions: int, frame_size: int = 84, dueling: bool = False):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        side = ((frame_size - 8) // 4 + 1 - 4) // 2 + 1 - 2  # 7 for 84x84 frames (torch_pong draws smaller ones)
        if side < 1:
            raise ValueError(f"frames of {frame_size}x{frame_size} are too small for Nature-DQN (at least 36)")
        self.head = q_head(64 * side * side, 512, n_actions, dueling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x.float() / 255.0))


class MLP(nn.Module):
    """Two hidden layers for vector observations (CartPole in tests)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 128, dueling: bool = False):
        super().__init__()
        head = q_head(hidden, hidden, n_actions, dueling)
        # the plain head unpacked: the book's layers keep their indices (net.0, net.2, net.4)
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), *([head] if dueling else head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


def make_net(obs_shape: tuple[int, ...], n_actions: int, mlp_hidden: int = 128, dueling: bool = False) -> nn.Module:
    if len(obs_shape) == 3:
        return NatureDQN(obs_shape[0], n_actions, obs_shape[-1], dueling)
    if len(obs_shape) == 1:
        return MLP(obs_shape[0], n_actions, mlp_hidden, dueling)
    raise ValueError(f"no network for observation shape {obs_shape}")


def grad_context(no_grad: bool):
    """The `no_grad` flag: without it, forward passes build autograd graphs that are thrown
    away (the chapter's "slow grads" script)."""
    return torch.no_grad() if no_grad else contextlib.nullcontext()
