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

Storage: numpy arrays on the host (device None), or tensors on a torch device (the `replay`
flag), written and sampled there without a host sync. Same layout and code either way; only
the index draw differs (exact rejection on the host; a fixed number of candidates on the
device). numpy stays the host's storage: torch on the CPU samples and inserts more slowly
(results/amd-epyc-2c/replay.md).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from .errors import UsageError
from .transfer import make_to_device


class TransitionSink(Protocol):
    """Where a round of env steps is stored (loops/collect.py): the replay itself, or a parallel
    player's chunk builder that replays the same calls into the trainer's replay."""

    def start(self, envs, obs, frames: bool = False) -> None: ...

    def add(self, actions, rewards, terminated, next_obs, env_ids=None, frames: bool = False) -> None: ...

    def start_where(self, mask, obs) -> None: ...


def newest_frames(obs, obs_shape: tuple[int, ...]):
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
    """The replay (module docstring). device None: numpy on the host; a torch device: tensors
    there, inputs copied in by `to_device` when they come as numpy arrays from host envs."""
    prioritized = False  # PrioritizedReplay: sample() adds importance weights, learn() sets priorities

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype, num_envs: int = 1,
                 gamma: float = 0.99, n_step: int = 1, device: torch.device | None = None, to_device=None):
        self.obs_shape = tuple(obs_shape)
        self.stacked = len(obs_shape) == 3  # (stack, H, W) image stacks; else whole vectors
        self.stack = obs_shape[0] if self.stacked else 1
        frame_shape = tuple(obs_shape[1:] if self.stacked else obs_shape)
        self.num_envs, self.capacity, self.device = num_envs, capacity, device
        # Ring length per env: its share of the capacity plus the lookback of one stack.
        self.ring = -(-capacity // num_envs) + self.stack
        self.xp = np if device is None else torch
        if device is not None:
            self.to_device = to_device or make_to_device(device, pinned=False)
        shape = (num_envs, self.ring)
        check_fits(self.planned_nbytes(capacity, obs_shape, obs_dtype, num_envs), capacity, device)
        self.frames = self._zeros(shape + frame_shape, obs_dtype)
        self.actions = self._zeros(shape, np.int64)
        self.rewards = self._zeros(shape, np.float32)
        self.terminated = self._zeros(shape, np.bool_)
        self.has_transition = self._zeros(shape, np.bool_)
        self.pos = self._zeros(shape, np.int64)     # steps since the episode's reset frame
        self.written = self._zeros((num_envs,), np.int64)  # slots written per env, monotonic
        self.all_envs = self._in(np.arange(num_envs))
        self.back = self._in(np.arange(self.stack - 1, -1, -1))  # stack lookback, oldest frame first
        self.added = 0                              # transitions added in all (a host count)
        self.n_step, self.powers = n_step, self._in(discount_powers(gamma, n_step))

    def _zeros(self, shape, dtype):
        if self.device is None:
            return np.zeros(shape, dtype)
        if not isinstance(dtype, torch.dtype):
            dtype = torch.from_numpy(np.zeros(0, dtype)).dtype
        return torch.zeros(shape, dtype=dtype, device=self.device)

    def _in(self, a, dtype=None):
        """An input as this replay's kind of array (numpy is copied to the device)."""
        if self.device is None:
            return np.asarray(a, dtype)
        t = a if isinstance(a, torch.Tensor) else self.to_device(np.ascontiguousarray(a))
        return t if dtype is None else t.to(dtype)

    def _frames_of(self, obs, frames: bool):
        obs = self._in(obs)
        return obs if frames else newest_frames(obs, self.obs_shape)

    def _envs(self, env_ids):
        return self.all_envs if env_ids is None else self._in(env_ids, self.all_envs.dtype)

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.frames, self.actions, self.rewards, self.terminated,
                                      self.has_transition, self.pos))

    @staticmethod
    def planned_nbytes(capacity: int, obs_shape: tuple[int, ...], obs_dtype, num_envs: int = 1) -> int:
        """What nbytes() will be, known before anything is allocated: per slot a frame, the
        action (int64), reward (float32), terminated and has_transition (bool), pos (int64)."""
        stacked = len(obs_shape) == 3
        itemsize = obs_dtype.itemsize if isinstance(obs_dtype, torch.dtype) else np.dtype(obs_dtype).itemsize
        frame = int(np.prod(obs_shape[1:] if stacked else obs_shape)) * itemsize
        ring = -(-capacity // num_envs) + (obs_shape[0] if stacked else 1)
        return num_envs * ring * (frame + 8 + 4 + 1 + 1 + 8)

    def _write(self, envs, frames, pos) -> None:
        slots = self.written[envs] % self.ring
        self.frames[envs, slots] = frames
        self.pos[envs, slots] = pos
        self.has_transition[envs, slots] = False
        self.written[envs] += 1

    def start(self, envs, obs, frames: bool = False) -> None:
        """Begin episodes for `envs` (None: all) with their reset observations obs (len(envs), ...).
        frames=True: obs are already `newest_frames` (the parallel loop's chunks carry only those)."""
        envs = self._envs(envs)
        self._write(envs, self._frames_of(obs, frames), envs * 0)

    def start_where(self, mask, obs) -> None:
        """start() for the envs where `mask` holds, all envs' rows given: no host sync."""
        e, slots = self.all_envs, self.written % self.ring
        keep = mask.reshape(-1, *([1] * (self.frames.ndim - 2)))
        self.frames[e, slots] = self.xp.where(keep, self._frames_of(obs, False), self.frames[e, slots])
        self.pos[e, slots] = self.xp.where(mask, 0, self.pos[e, slots])
        self.has_transition[e, slots] &= ~mask
        self.written += mask

    def add(self, actions, rewards, terminated, next_obs, env_ids=None, frames: bool = False) -> None:
        """One step of envs `env_ids` (default: all, in order): the transition from each env's
        current slot, and s' (the true next observation, the final one where an episode ended).
        Call `start` afterwards for envs whose episode ended. frames=True: as in `start`."""
        envs = self._envs(env_ids)
        cur = (self.written[envs] - 1) % self.ring
        self.actions[envs, cur] = self._in(actions, self.actions.dtype)
        self.rewards[envs, cur] = self._in(rewards, self.rewards.dtype)
        self.terminated[envs, cur] = self._in(terminated, self.terminated.dtype)
        self.has_transition[envs, cur] = True
        self._write(envs, self._frames_of(next_obs, frames), self.pos[envs, cur] + 1)
        self.added += len(envs)

    def _stack_at(self, envs, g, pos):
        if not self.stacked:
            return self.frames[envs, g % self.ring]
        idx = g[:, None] - self.xp.minimum(self.back[None, :], pos[:, None])  # (B, stack)
        return self.frames[envs[:, None], idx % self.ring]

    def _usable(self):
        """Per env: the oldest slot whose whole stack lookback is still in the ring, and how many
        slots from there may hold a transition (the newest slot never does)."""
        low = (self.written - self.ring + self.stack - 1).clip(0)
        return low, (self.written - 1 - low).clip(0)

    def sample_indices(self, batch_size: int, rng):
        """(envs, slots) of batch_size transitions drawn uniformly from the usable range; rng is
        `sampler`'s."""
        if self.added == 0:  # a host count: no sync
            raise ValueError("replay is empty")
        draw = _draw_host if self.device is None else _draw_device
        return draw(self, batch_size, rng)

    def sample(self, batch_size: int, rng):
        """(obs, actions, returns, discounts, next_obs) (module docstring)."""
        return self.gather(*self.sample_indices(batch_size, rng))

    def gather(self, envs, g):
        """The sampled transitions of slots g (monotonic, each with a transition) of envs."""
        slot = g % self.ring
        pos = self.pos[envs, slot]
        returns, discounts, m = n_step_walk(self.rewards, self.terminated, self.has_transition, envs, g,
                                            self.ring, self.n_step, self.powers, self.xp.where)
        return (self._stack_at(envs, g, pos), self.actions[envs, slot], returns, discounts,
                self._stack_at(envs, g + m, pos + m))


def _draw_host(replay: FrameReplay, batch_size: int, rng: np.random.Generator):
    """Exact: draw, reject the few final-observation slots (one per episode), redraw those."""
    low, count = replay._usable()
    bounds = np.cumsum(count)
    envs, g = np.empty(batch_size, np.int64), np.empty(batch_size, np.int64)
    todo = np.arange(batch_size)
    while len(todo):
        flat = rng.integers(0, bounds[-1], len(todo))
        e = np.searchsorted(bounds, flat, side="right")
        slot = low[e] + flat - (bounds[e] - count[e])
        envs[todo], g[todo] = e, slot
        todo = todo[~replay.has_transition[e, slot % replay.ring]]
    return envs, g


def _draw_device(replay: FrameReplay, batch_size: int, generator: torch.Generator):
    """Without a host sync: max(4 x batch_size, 64) candidates are drawn and the first batch_size
    that hold a transition kept (in draw order, so still uniform). At least every other slot in
    the range holds one (each episode has a transition for its one final-observation slot), so
    fewer than batch_size hits has a chance below 2^-64 (batch 1) to 1e-9 (batch 32); then the
    missing ones repeat the hits drawn."""
    low, count = replay._usable()
    bounds = torch.cumsum(count, 0)
    total = bounds[-1]
    u = torch.rand(max(4 * batch_size, 64), dtype=torch.float64, device=replay.device, generator=generator)
    flat = torch.minimum((u * total).long(), total - 1)
    e = torch.searchsorted(bounds, flat, right=True)
    g = low[e] + flat - (bounds[e] - count[e])
    ok = replay.has_transition[e, g % replay.ring]
    hits = torch.argsort((~ok).to(torch.int8), stable=True)  # the hits first, in draw order
    want = torch.arange(batch_size, device=replay.device)
    first = hits[torch.remainder(want, ok.sum().clamp(min=1))]
    return e[first], g[first]


def available_bytes(device: torch.device | None) -> tuple[int | None, str]:
    """Memory free for the replay where it will live, and what that is; None where unknown."""
    if device is not None and device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], f"free on {torch.cuda.get_device_name(device)}"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available on this machine"
    except OSError:
        pass
    return None, ""


def check_fits(need: int, capacity: int, device: torch.device | None) -> None:
    """A one-line UsageError before allocating a replay that does not fit (one that fits in
    virtual memory but not in RAM would run until the kernel kills it)."""
    free, where = available_bytes(device)
    if free is not None and need > free:
        raise UsageError(f"replay_size {capacity:,}: the replay needs {need / 2**30:,.2f} GiB, "
                         f"{free / 2**30:,.2f} GiB {where}")


class PrioritizedReplay(FrameReplay):
    """Proportional prioritized replay (Schaul et al. 2016) on the host. Transition i is drawn
    with probability P(i) = q_i / sum_k q_k, q = p^alpha, over the slots the uniform draw could
    take (q is kept 0 elsewhere: a slot written without its transition yet, or one whose stack
    lookback the ring has overwritten); a new transition gets the largest priority seen so far;
    after an update, p = |TD error| + eps. sample() appends the importance weights
    w_i = (N P(i))^-beta / max_j w_j over the batch (Dopamine's normalization; N cancels), beta
    raised linearly from beta0 to 1 (anneal). The draw is stratified (one uniform in each of
    batch_size equal parts of the total) on a cumulative sum of the whole ring: O(capacity) per
    batch, where a sum tree would be O(log capacity) per draw but O(log capacity) per insert too."""
    prioritized = True

    def __init__(self, *args, alpha: float, beta0: float = 0.4, beta_steps: int = 1_000_000, eps: float = 1e-6,
                 **kwargs):
        self.q = None  # FrameReplay.__init__ writes no slot
        super().__init__(*args, **kwargs)
        self.alpha, self.beta0, self.beta_steps, self.eps = alpha, beta0, beta_steps, eps
        self.beta = beta0
        self.q = np.zeros(self.has_transition.shape, np.float64)  # p^alpha per slot
        self.max_priority = 1.0
        self.last = None  # (envs, slots) of the last sample, for update_priorities

    def anneal(self, steps: int) -> None:
        self.beta = min(1.0, self.beta0 + (1.0 - self.beta0) * steps / self.beta_steps)

    def _write(self, envs, frames, pos) -> None:
        super()._write(envs, frames, pos)
        written = self.written[envs]
        self.q[envs, (written - 1) % self.ring] = 0.0  # a new observation: no transition yet
        lost = written - self.ring + self.stack - 2  # the slot whose stack lookback was just overwritten
        keep = lost >= 0
        self.q[envs[keep], lost[keep] % self.ring] = 0.0

    def add(self, actions, rewards, terminated, next_obs, env_ids=None, frames: bool = False) -> None:
        envs = self._envs(env_ids)
        cur = (self.written[envs] - 1) % self.ring
        super().add(actions, rewards, terminated, next_obs, env_ids, frames)
        self.q[envs, cur] = self.max_priority ** self.alpha

    def sample_indices(self, batch_size: int, rng):
        if self.added == 0:
            raise ValueError("replay is empty")
        q = self.q.ravel()
        cdf = np.cumsum(q)
        u = (np.arange(batch_size) + rng.random(batch_size)) * (cdf[-1] / batch_size)
        flat = np.minimum(np.searchsorted(cdf, u, side="right"), len(q) - 1)
        flat = np.where(q[flat] > 0, flat, np.searchsorted(cdf, cdf[flat], side="left"))  # never a 0 slot
        envs, slots = np.divmod(flat, self.ring)
        low, _ = self._usable()
        picked = q[flat]
        self._weights = ((picked / picked.min()) ** -self.beta).astype(np.float32)
        self.last = (envs, slots)
        return envs, low[envs] + (slots - low[envs]) % self.ring

    def sample(self, batch_size: int, rng):
        return (*super().sample(batch_size, rng), self._weights)

    def update_priorities(self, td_abs: np.ndarray) -> None:
        """The last sample's new priorities from its |TD errors|."""
        p = np.asarray(td_abs, np.float64) + self.eps
        self.max_priority = max(self.max_priority, float(p.max()))
        self.q[self.last] = p ** self.alpha


def make_replay(hp, flags, obs_shape, obs_dtype, num_envs: int, device: torch.device, to_device) -> FrameReplay:
    on_device = device if flags.replay == "device" else None  # flag site: replay
    if hp.priority_alpha:  # flag site: priority_alpha (config refuses it with a device replay)
        return PrioritizedReplay(hp.replay_size, obs_shape, obs_dtype, num_envs, hp.gamma, hp.n_step,
                                 alpha=hp.priority_alpha, beta0=hp.priority_beta, beta_steps=hp.priority_beta_steps)
    return FrameReplay(hp.replay_size, obs_shape, obs_dtype, num_envs, hp.gamma, hp.n_step, on_device, to_device)


def sampler(replay: FrameReplay, seed: int):
    """replay.sample's random source: a numpy Generator for the host ring, a torch Generator on
    the replay's device otherwise."""
    if replay.device is None:
        return np.random.default_rng(seed)
    return torch.Generator(replay.device).manual_seed(seed)
