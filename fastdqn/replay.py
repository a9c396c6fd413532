"""Replay buffer: a preallocated ring per env that stores each frame once.

Per env, slot g holds the newest frame of one observation, the transition taken from it (action,
reward, terminated) and its position in the episode. An episode writes its reset frame, then one
frame per step; the last slot (the final observation) carries no transition, so nothing sampled
crosses an episode boundary. Stacks are rebuilt by index: frame j back from slot g is slot
g - min(j, pos[g]), which repeats the reset frame at an episode's start exactly as gymnasium's
FrameStackObservation pads. s' of slot g is slot g + 1, never stored twice.

For Pong, 100k transitions take 100k x 84 x 84 bytes = 0.7 GB instead of 5.6 GB for stacked
obs + next obs. Vector observations (CartPole) are stored whole, one per slot.
"""
from __future__ import annotations

import numpy as np


def newest_frames(obs: np.ndarray, obs_shape: tuple[int, ...]) -> np.ndarray:
    """What the replay keeps of a batch of observations: the newest frame of image stacks
    (stack, H, W), whole vectors otherwise."""
    return obs[:, -1] if len(obs_shape) == 3 else obs


class FrameReplay:
    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype, num_envs: int = 1):
        self.obs_shape = tuple(obs_shape)
        self.stacked = len(obs_shape) == 3  # (stack, H, W) image stacks; else whole vectors
        self.stack = obs_shape[0] if self.stacked else 1
        frame_shape = obs_shape[1:] if self.stacked else obs_shape
        self.num_envs = num_envs
        # Ring length per env: its share of the capacity plus the lookback of one stack.
        self.ring = -(-capacity // num_envs) + self.stack
        self.capacity = capacity
        shape = (num_envs, self.ring)
        self.frames = np.zeros(shape + tuple(frame_shape), dtype=obs_dtype)
        self.actions = np.zeros(shape, np.int64)
        self.rewards = np.zeros(shape, np.float32)
        self.terminated = np.zeros(shape, bool)
        self.has_transition = np.zeros(shape, bool)
        self.pos = np.zeros(shape, np.int64)    # steps since the episode's reset frame
        self.written = np.zeros(num_envs, np.int64)  # slots written per env, monotonic
        self.added = 0                          # transitions added in all

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.frames, self.actions, self.rewards, self.terminated,
                                      self.has_transition, self.pos))

    def _write(self, envs: np.ndarray, frames: np.ndarray, pos: np.ndarray) -> None:
        slots = self.written[envs] % self.ring
        self.frames[envs, slots] = frames
        self.pos[envs, slots] = pos
        self.has_transition[envs, slots] = False
        self.written[envs] += 1

    def start(self, envs, obs: np.ndarray, frames: bool = False) -> None:
        """Begin episodes for `envs` with their reset observations obs (len(envs), ...).
        frames=True: obs are already `newest_frames` (the parallel loop's chunks carry only those)."""
        envs = np.asarray(envs, np.int64)
        self._write(envs, obs if frames else newest_frames(obs, self.obs_shape), np.zeros(len(envs), np.int64))

    def add(self, actions, rewards, terminated, next_obs: np.ndarray, env_ids=None, frames: bool = False) -> None:
        """One step of envs `env_ids` (default: all, in order): the transition from each env's
        current slot, and s' (the true next observation, the final one where an episode ended).
        Call `start` afterwards for envs whose episode ended. frames=True: as in `start`."""
        envs = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids, np.int64)
        cur = (self.written[envs] - 1) % self.ring
        self.actions[envs, cur] = actions
        self.rewards[envs, cur] = rewards
        self.terminated[envs, cur] = terminated
        self.has_transition[envs, cur] = True
        self._write(envs, next_obs if frames else newest_frames(next_obs, self.obs_shape), self.pos[envs, cur] + 1)
        self.added += len(envs)

    def _stack_at(self, envs: np.ndarray, g: np.ndarray, pos: np.ndarray) -> np.ndarray:
        if not self.stacked:
            return self.frames[envs, g % self.ring]
        back = np.arange(self.stack - 1, -1, -1)                    # oldest frame first
        idx = g[:, None] - np.minimum(back[None, :], pos[:, None])  # (B, stack)
        return self.frames[envs[:, None], idx % self.ring]

    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Uniform over stored transitions whose frames are all still in the ring."""
        # oldest usable slot per env: its whole stack lookback must not be overwritten
        low = np.maximum(self.written - self.ring + self.stack - 1, 0)
        count = np.maximum(self.written - 1 - low, 0)  # slots low .. written-2 may hold transitions
        total = int(count.sum())
        if total == 0:
            raise ValueError("replay is empty")
        bounds = np.cumsum(count)
        envs = np.empty(batch_size, np.int64)
        g = np.empty(batch_size, np.int64)
        todo = np.arange(batch_size)
        while len(todo):  # reject the few final-observation slots (one per episode)
            flat = rng.integers(0, total, len(todo))
            e = np.searchsorted(bounds, flat, side="right")
            slot = low[e] + flat - (bounds[e] - count[e])
            envs[todo], g[todo] = e, slot
            todo = todo[~self.has_transition[e, slot % self.ring]]
        return envs, g

    def sample(self, batch_size: int, rng: np.random.Generator):
        """(obs, actions, rewards, terminated, next_obs) as numpy arrays."""
        envs, g = self.sample_indices(batch_size, rng)
        slot = g % self.ring
        pos = self.pos[envs, slot]
        obs = self._stack_at(envs, g, pos)
        next_obs = self._stack_at(envs, g + 1, pos + 1)
        return (obs, self.actions[envs, slot], self.rewards[envs, slot],
                self.terminated[envs, slot], next_obs)
