"""Vector backends behind one contract, whatever their autoreset mode.

Every backend offers `reset(seed) -> obs (N, ...)`, `send(actions, env_ids)` and `recv() ->
StepResult`. Sync backends step all N envs in `recv`; async ones return the first `batch` envs
that are ready, named by `StepResult.env_ids` (every backend has `num_envs` and `batch`). Each row of a StepResult says what the replay
must do with it, so that no stored transition crosses an episode boundary:

- `has_transition`: the row is a real agent step: store (action, reward, terminated, next_obs).
  With same-step autoreset (sequential, gymnasium SAME_STEP) every row is one, and next_obs is the
  final observation where the episode ended. With next-step autoreset (ale-py's vector env) the
  step after an episode's end is a reset step whose action the env ignored and whose reward is 0:
  it has no transition.
- `reset`: `obs` is the first observation of a new episode: the replay starts a stream there.

`obs` is always what to act on next. Agent steps (FPS, schedules) count rows with a transition.
"""
from __future__ import annotations

import numpy as np

from ..config import TORCH_PONG
from .atari import make_env
from .contract import StepResult


class SequentialVecEnv:
    """The book's N env copies: stepped one after another in this process."""

    def __init__(self, hp, num_envs: int, wrappers: str = "baseline"):
        self.envs = [make_env(hp, wrappers) for _ in range(num_envs)]
        self.num_envs = num_envs
        self.batch = num_envs  # rows per recv
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space

    def reset(self, seed: int) -> np.ndarray:
        return np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)])

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        self._actions = np.empty(self.num_envs, np.int64)
        self._actions[env_ids] = actions

    def recv(self) -> StepResult:
        return self.step(self._actions)

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
        done = terminated | truncated
        return StepResult(np.arange(n), np.stack(obs), np.stack(next_obs), rewards, terminated, truncated,
                          has_transition=np.ones(n, bool), reset=done, episodes=episodes)

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_vec_env(hp, flags):
    """`flags.envs` copies of the env on `flags.backend` with `flags.wrappers`; torch_pong's
    games all step in one tensor call (here on the CPU: the device loop runs it on the device)."""
    copies = flags.envs  # flag site: envs
    if hp.env == TORCH_PONG:
        from .torch_pong import TorchPongVecEnv
        return TorchPongVecEnv(hp, copies, device="cpu", compiled=flags.compile_env)
    if flags.backend == "sequential":  # flag site: backend
        return SequentialVecEnv(hp, copies, flags.wrappers)
    from . import backends
    if flags.backend == "gym_async":
        return backends.GymAsyncVecEnv(hp, copies, flags.wrappers)
    batch = flags.async_batch or copies // 2  # flag site: async_batch
    return backends.AleVecEnv(hp, copies, batch=batch if flags.backend == "ale_async" else copies)
