"""What every vector backend returns per recv (the rules of each field: vector.py's docstring).
Its own module: the backends and torch_pong build it, and vector.py's factory makes them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StepResult:
    env_ids: np.ndarray         # (B,) int64: which envs these rows are
    obs: np.ndarray             # (B, ...) observations to act on next
    next_obs: np.ndarray        # (B, ...) s' of each transition row (final obs where done)
    rewards: np.ndarray         # (B,) float32, clipped as the wrappers clip
    terminated: np.ndarray      # (B,) bool: no bootstrap
    truncated: np.ndarray       # (B,) bool: time limit; bootstraps
    has_transition: np.ndarray  # (B,) bool: see the module docstring
    reset: np.ndarray           # (B,) bool: obs starts an episode
    episodes: list              # [(env_id, raw return, length in agent steps)] ended in this result
