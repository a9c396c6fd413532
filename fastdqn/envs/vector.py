"""Vector backends with one contract: same-step autoreset. `step` returns the true next
observation of every env (the final one where an episode ended) for the replay, and the
observation to act on next (the reset one there). No stored transition crosses an episode."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .atari import make_env


@dataclass
class StepResult:
    obs: np.ndarray          # (N, ...) observations to act on next (reset obs where done)
    next_obs: np.ndarray     # (N, ...) true s' of this step (final obs where done)
    rewards: np.ndarray      # (N,) float32, clipped as the wrappers clip
    terminated: np.ndarray   # (N,) bool: no bootstrap
    truncated: np.ndarray    # (N,) bool: time limit; bootstraps
    episodes: list           # [(env_index, raw return, length in agent steps)] ended this step


class SequentialVecEnv:
    """The book's N env copies: stepped one after another in this process."""

    def __init__(self, hp, num_envs: int):
        self.envs = [make_env(hp) for _ in range(num_envs)]
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space

    def reset(self, seed: int) -> np.ndarray:
        return np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)])

    def step(self, actions: np.ndarray) -> StepResult:
        n = self.num_envs
        obs, next_obs = [None] * n, [None] * n
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        episodes = []
        for i, env in enumerate(self.envs):
            o, r, te, tr, info = env.step(int(actions[i]))
            rewards[i], terminated[i], truncated[i] = r, te, tr
            next_obs[i] = obs[i] = o
            if te or tr:
                episodes.append((i, float(info["episode"]["r"]), int(info["episode"]["l"])))
                obs[i], _ = env.reset()
        return StepResult(np.stack(obs), np.stack(next_obs), rewards, terminated, truncated, episodes)

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_vec_env(hp, num_envs: int = 1) -> SequentialVecEnv:
    return SequentialVecEnv(hp, num_envs)
