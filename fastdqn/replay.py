"""Replay buffer: a preallocated ring per env that stores each frame once.

Per env, slot g holds the newest frame of one observation, the transition taken from it (action,
reward, terminated) and its position in the episode. An episode writes its reset frame, then one
frame per step; the last slot (the final observation) carries no transition, so nothing sampled
crosses an episode boundary. Stacks are rebuilt by index: frame j back from slot g is slot
g - min(j, pos[g]), which repeats the reset frame at an episode's start exactly as gymnasium's
FrameStackObservation pads. s' of slot g is slot g + 1, never stored twice.

Sampling returns (obs, actions, returns, discounts, next_obs): with n_step N, the return of up to
N transitions of one episode from the sampled one, sum of gamma^k r_k, and s' the state where that
walk stopped; discounts is gamma^m for the m transitions walked, 0 where the walk ended in a
termination (no bootstrap). A walk stops early at an episode's end (terminated: no bootstrap;
truncated: bootstrap from the final observation) and at the newest stored step of a running
episode. With N = 1 this is the one-step transition and discount gamma x (1 - terminated).

For Pong, 100k transitions take 100k x 84 x 84 bytes = 0.7 GB instead of 5.6 GB for stacked
obs + next obs. Vector observations (CartPole) are stored whole, one per slot.
"""
from __future__ import annotations

import numpy as np
import torch

from .transfer import make_to_device


def newest_frames(obs: np.ndarray, obs_shape: tuple[int, ...]) -> np.ndarray:
    """What the replay keeps of a batch of observations: the newest frame of image stacks
    (stack, H, W), whole vectors otherwise."""
    return obs[:, -1] if len(obs_shape) == 3 else obs


def n_step_walk(rewards, terminated, has_transition, envs, g, ring: int, n: int, powers, where):
    """From slots g (each with a transition) of envs, walk up to n transitions
    forward within the episode: (discounted return, discount of the bootstrap, transitions
    walked). numpy and torch alike: `where` is np.where or torch.where, `powers` gamma^0..n as
    float32 of the same kind. A walk stops after a terminated transition and before a slot
    without one (an episode's final observation, or the newest step of a running episode)."""
    slot = g % ring
    ret, term = rewards[envs, slot] * 1, terminated[envs, slot]
    m, alive = g * 0 + 1, ~term
    for k in range(1, n):  # flag site: n_step
        s = (g + k) % ring
        alive = alive & has_transition[envs, s]
        ret = ret + where(alive, rewards[envs, s] * powers[k], 0 * powers[0])
        m = m + alive
        term = term | (alive & terminated[envs, s])
        alive = alive & ~terminated[envs, s]
    return ret, where(term, 0 * powers[0], powers[m]), m


def discount_powers(gamma: float, n: int) -> np.ndarray:
    """gamma^0 .. gamma^n as float32 (one rounding, the same on host and device)."""
    return np.array([gamma ** k for k in range(n + 1)], np.float32)


class FrameReplay:
    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype, num_envs: int = 1,
                 gamma: float = 0.99, n_step: int = 1):
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
        self.n_step, self.powers = n_step, discount_powers(gamma, n_step)

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
        """(obs, actions, returns, discounts, next_obs) as numpy arrays (module docstring)."""
        return self.gather(*self.sample_indices(batch_size, rng))

    def gather(self, envs: np.ndarray, g: np.ndarray):
        """The sampled transitions of slots g (monotonic, each with a transition) of envs."""
        slot = g % self.ring
        pos = self.pos[envs, slot]
        returns, discounts, m = n_step_walk(self.rewards, self.terminated, self.has_transition, envs, g,
                                            self.ring, self.n_step, self.powers, np.where)
        return (self._stack_at(envs, g, pos), self.actions[envs, slot], returns, discounts,
                self._stack_at(envs, g + m, pos + m))


class DeviceReplay:
    """FrameReplay's layout and rules as tensors on the torch device: frames stored once,
    stacks rebuilt and sampled by on-device gather, no host sync on add or gather.

    Inputs may be device tensors (torch_pong: nothing crosses to the host) or numpy arrays from
    host envs, copied in by `to_device` (the pinned-staging flag decides how). `start_where`
    begins episodes by mask without a host sync (the device loop's same-step autoreset).
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype, num_envs: int,
                 device: torch.device, to_device=None, gamma: float = 0.99, n_step: int = 1):
        self.obs_shape = tuple(obs_shape)
        self.stacked = len(obs_shape) == 3
        self.stack = obs_shape[0] if self.stacked else 1
        frame_shape = obs_shape[1:] if self.stacked else obs_shape
        self.num_envs, self.capacity, self.device = num_envs, capacity, device
        self.ring = -(-capacity // num_envs) + self.stack
        self.to_device = to_device or make_to_device(device, pinned=False)
        shape = (num_envs, self.ring)
        dtype = obs_dtype if isinstance(obs_dtype, torch.dtype) else torch.from_numpy(np.zeros(0, obs_dtype)).dtype
        z = lambda *s, dtype: torch.zeros(*s, dtype=dtype, device=device)
        self.frames = z(*shape, *frame_shape, dtype=dtype)
        self.actions = z(*shape, dtype=torch.int64)
        self.rewards = z(*shape, dtype=torch.float32)
        self.terminated = z(*shape, dtype=torch.bool)
        self.has_transition = z(*shape, dtype=torch.bool)
        self.pos = z(*shape, dtype=torch.int64)
        self.written = z(num_envs, dtype=torch.int64)
        self.all_envs = torch.arange(num_envs, device=device)
        self.added = 0
        self.n_step, self.powers = n_step, torch.from_numpy(discount_powers(gamma, n_step)).to(device)

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.frames, self.actions, self.rewards,
                                                          self.terminated, self.has_transition, self.pos))

    def _in(self, a, dtype=None) -> torch.Tensor:
        t = a if isinstance(a, torch.Tensor) else self.to_device(np.ascontiguousarray(a))
        return t if dtype is None else t.to(dtype)

    def _frames_of(self, obs, frames: bool) -> torch.Tensor:
        obs = self._in(obs)
        return obs if frames or not self.stacked else obs[:, -1]

    def _envs(self, env_ids) -> torch.Tensor:
        return self.all_envs if env_ids is None else self._in(env_ids, torch.int64)

    def _write(self, envs: torch.Tensor, frames: torch.Tensor, pos: torch.Tensor) -> None:
        slots = self.written[envs] % self.ring
        self.frames[envs, slots] = frames
        self.pos[envs, slots] = pos
        self.has_transition[envs, slots] = False
        self.written[envs] += 1

    def start(self, envs, obs, frames: bool = False) -> None:
        envs = self._envs(envs)
        self._write(envs, self._frames_of(obs, frames), torch.zeros_like(envs))

    def start_where(self, mask: torch.Tensor, obs: torch.Tensor) -> None:
        """start() for the envs where `mask` holds, all envs' rows given: no host sync."""
        slots = self.written % self.ring
        e = self.all_envs
        keep = mask.view(-1, *([1] * (self.frames.dim() - 2)))
        self.frames[e, slots] = torch.where(keep, self._frames_of(obs, False), self.frames[e, slots])
        self.pos[e, slots] = torch.where(mask, 0, self.pos[e, slots])
        self.has_transition[e, slots] &= ~mask
        self.written += mask.long()

    def add(self, actions, rewards, terminated, next_obs, env_ids=None, frames: bool = False) -> None:
        envs = self._envs(env_ids)
        cur = (self.written[envs] - 1) % self.ring
        self.actions[envs, cur] = self._in(actions, torch.int64)
        self.rewards[envs, cur] = self._in(rewards, torch.float32)
        self.terminated[envs, cur] = self._in(terminated, torch.bool)
        self.has_transition[envs, cur] = True
        self._write(envs, self._frames_of(next_obs, frames), self.pos[envs, cur] + 1)
        self.added += len(envs)

    def _stack_at(self, envs: torch.Tensor, g: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            return self.frames[envs, g % self.ring]
        back = torch.arange(self.stack - 1, -1, -1, device=self.device)
        idx = g[:, None] - torch.minimum(back[None, :], pos[:, None])
        return self.frames[envs[:, None], idx % self.ring]

    def gather(self, envs: torch.Tensor, g: torch.Tensor):
        """(obs, actions, returns, discounts, next_obs) of slots g (monotonic) of envs."""
        slot = g % self.ring
        pos = self.pos[envs, slot]
        returns, discounts, m = n_step_walk(self.rewards, self.terminated, self.has_transition, envs, g,
                                            self.ring, self.n_step, self.powers, torch.where)
        return (self._stack_at(envs, g, pos), self.actions[envs, slot], returns, discounts,
                self._stack_at(envs, g + m, pos + m))

    def sample_indices(self, batch_size: int, generator: torch.Generator):
        """Uniform over stored transitions whose frames are all still in the ring, as FrameReplay,
        without a host sync: max(4 x batch_size, 64) candidates are drawn and the first batch_size
        that hold a transition kept (in draw order, so still uniform). At least every other slot
        in the range holds one (each episode has a transition for its one final-observation slot),
        so fewer than batch_size hits has a chance below 2^-64 (batch 1) to 1e-9 (batch 32); then
        the missing ones repeat the hits drawn."""
        if self.added == 0:  # a host counter: no sync
            raise ValueError("replay is empty")
        low = torch.clamp(self.written - self.ring + self.stack - 1, min=0)
        count = torch.clamp(self.written - 1 - low, min=0)
        bounds = torch.cumsum(count, 0)
        total = bounds[-1]
        u = torch.rand(max(4 * batch_size, 64), dtype=torch.float64, device=self.device, generator=generator)
        flat = torch.minimum((u * total).long(), total - 1)
        e = torch.searchsorted(bounds, flat, right=True)
        g = low[e] + flat - (bounds[e] - count[e])
        ok = self.has_transition[e, g % self.ring]
        hits = torch.argsort((~ok).to(torch.int8), stable=True)  # the hits first, in draw order
        want = torch.arange(batch_size, device=self.device)
        first = hits[torch.remainder(want, ok.sum().clamp(min=1))]
        return e[first], g[first]

    def sample(self, batch_size: int, generator: torch.Generator):
        return self.gather(*self.sample_indices(batch_size, generator))


def make_replay(hp, flags, obs_shape, obs_dtype, num_envs: int, device: torch.device, to_device):
    if flags.replay == "device":  # flag site: replay
        return DeviceReplay(hp.replay_size, obs_shape, obs_dtype, num_envs, device, to_device, hp.gamma, hp.n_step)
    return FrameReplay(hp.replay_size, obs_shape, obs_dtype, num_envs, hp.gamma, hp.n_step)


def sampler(replay, seed: int):
    """replay.sample's random source: a numpy Generator for the host ring, a torch Generator on
    the device for DeviceReplay."""
    if isinstance(replay, DeviceReplay):
        return torch.Generator(replay.device).manual_seed(seed)
    return np.random.default_rng(seed)
