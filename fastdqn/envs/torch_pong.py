"""Batched Pong on tensors (`--env torch_pong`): all N games stepped by one call of tensor ops.

`TorchPong` keeps every game's state on the torch device and steps all of them with the same
tensor operations: no Python loop over envs, no host copy, no host sync (the only Python loops
are over the skipped frames and the stack). `TorchPongVecEnv` puts it behind the host contract
of `vector.py` so that the serial and parallel loops use it unchanged.

The game follows Atari Pong (ALE's `pong`, minimal action set) in the geometry of its
preprocessed 84x84 grayscale frame:

- court: a top wall (rows 10-13) and a bottom wall (rows 78-83), the playfield between them
  (64 rows); rows 0-9 are where Atari draws the score (not drawn here);
- the built-in opponent's paddle on the left (columns 8-9), the agent's on the right (columns
  74-75), both 2 x 6 pixels; the ball 1 x 2 pixels;
- gray levels of ALE Pong after cv2's RGB->gray: background 87, walls and ball 236, the agent's
  (green) paddle 147, the opponent's (orange) 148. `background` changes the court's level only
  (0, black: objects on zero are features a fresh Nature-DQN finds far sooner; see
  benchmarks/torch_pong_probe.py).

Rules (constants below, in pixels of the 84x84 court and per frame). The ball bounces off the
walls. A paddle hit reverses its horizontal velocity and sets its vertical one from where on the
paddle it hit: linear in the offset of the ball's center from the paddle's center, 0 at the
center, +-MAX_VY (45 degrees) from STEEP_OFFSET (3 px) to the edges; and each hit of a rally
speeds the ball up by 1/8, up to x1.5 (Atari's ball also speeds up in a rally). The agent's paddle
moves 1.5 px per frame: as fast as the fastest ball's vy. The opponent moves its center towards
the ball's center plus an aim offset (up to 2.5 px, drawn anew for each leg of a rally) at most
7/8 px per frame: slower than the steep and the sped-up shots, which beat it. The ball leaving the
court on the left is +1 for the agent, on the right -1. After a point the ball disappears and is
served again from the center line SERVE_DELAY frames later, to a random side, height (within
4 px of the center) and shallow angle, which the opponent always returns. No FIRE is needed, as
in ALE Pong after the first serve. A game ends when a player reaches `points` (21): terminated;
`max_episode_frames` emulator frames truncate it.

Actions (ALE Pong's minimal set): 0 NOOP, 1 FIRE, 2 RIGHT, 3 LEFT, 4 RIGHTFIRE, 5 LEFTFIRE. As in
ALE Pong, RIGHT moves the agent's paddle up and LEFT moves it down; FIRE does nothing (serving is
automatic), so FIRE == NOOP, RIGHTFIRE == RIGHT and LEFTFIRE == LEFT.

Each agent step repeats the action for `frame_skip` (4) frames and renders the last one; ALE's
max over the last two frames is not reproduced (Pong does not flicker). Observations stack the
last `stack` frames; a reset observation repeats the reset frame over the stack, as the
gymnasium baseline does. Autoreset is same-step: where a game ended, `next_obs` is its final
observation and `obs` the new game's first.

Determinism. Positions and velocities are integers in sub-pixel units (F per pixel of the 84x84
court), and the random draws (serves, the opponent's aim) come from a counter-based integer hash
of (seed, env index, serve count, hits in the rally), not from a torch.Generator: a seed gives the
same games on any device, bit for bit, CPU and CUDA alike. Frames are rendered at `size` pixels
by scaling the court coordinates (rounded, every object at least one pixel), so `size` < 84
renders the same game smaller.

Balance: the constants are tuned so that random play loses almost every point and tracking the
ball wins almost every point (the opponent misses the sped-up and steep returns), so a return of
17 is within a learner's reach; tests/test_torch_pong.py checks a short version (2-point games).
Balance measurements: results/amd-epyc-2c/torch_pong_balance.md.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np
import torch

from .contract import StepResult

# Geometry in sub-pixel units: F per pixel of the 84x84 court.
F = 16
COURT = 84 * F                          # width and height of the rendered court
TOP, BOTTOM = 14 * F, 78 * F            # playfield between the walls
TOP_WALL, BOTTOM_WALL = (10 * F, TOP), (BOTTOM, COURT)
PADDLE_W, PADDLE_H = 2 * F, 6 * F
OPP_X, AGENT_X = 8 * F, 74 * F          # left edges of the paddles: their faces are OPP_X + PADDLE_W, AGENT_X
BALL_W, BALL_H = 1 * F, 2 * F
# Speeds per frame. The ball crosses between the paddles in 64 frames (16 agent steps).
BALL_VX = 1 * F
MAX_VY = F                              # vy of an edge hit (45 degrees), before the speed-up
STEEP_OFFSET = 3 * F                    # hits this far from the paddle's center or more get MAX_VY
SPEEDUP_DIV, SPEEDUP_MAX = 8, 4         # each hit of a rally adds 1/8 to the ball's speed, up to 4 hits (x1.5)
OPP_AIM = 5 * F // 2                    # the opponent aims its center up to this far off the ball, anew per hit
AGENT_SPEED = 3 * F // 2                # the agent keeps up with the fastest vy (x1.5) ...
OPP_SPEED = 7 * F // 8                  # ... the opponent with neither: steep and fast shots beat it
SERVE_DELAY = 32                        # frames without a ball after a point (>= a frame skip of 4)
SERVE_VY = (-6, -4, -2, 2, 4, 6)        # serve angles (units per frame): shallow, returnable
SERVE_DY = 4 * F                        # serve heights: within this of the center
CENTER_X = COURT // 2 - BALL_W // 2
CENTER_Y = (TOP + BOTTOM) // 2 - BALL_H // 2
PADDLE_START = (TOP + BOTTOM) // 2 - PADDLE_H // 2
# ALE Pong's colors after cv2 RGB->gray
BACKGROUND, WALL, AGENT_GRAY, OPP_GRAY, BALL_GRAY = 87, 236, 147, 148, 236
# Paddle direction per action: RIGHT (2, 4) is up, LEFT (3, 5) down, NOOP and FIRE stay.
MOVES = (0, 0, -1, 1, -1, 1)
ACTION_MEANINGS = ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")

_M32 = 0xFFFFFFFF


def _mul32(x, c: int):
    """x * c mod 2**32 for 0 <= x < 2**32 in int64 (or a Python int), in 16-bit halves so that
    nothing overflows."""
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & _M32


def hash32(x):
    """A 32-bit integer mixer (lowbias32) on int64 tensors or ints: the same bits on every device."""
    x = x & _M32
    x = _mul32(x ^ (x >> 16), 0x7FEB352D)
    x = _mul32(x ^ (x >> 15), 0x846CA68B)
    return x ^ (x >> 16)


def pixel(u, size: int):
    """Court units -> pixel edge at `size` pixels (rounded; ints or int tensors)."""
    return (u * size + COURT // 2) // COURT


def pixel_span(lo, hi, size: int):
    """Pixels [first, end) an object covering units [lo, hi) is drawn on: at least one."""
    first = pixel(lo, size)
    end = pixel(hi, size)
    return first, (torch.maximum(end, first + 1) if isinstance(end, torch.Tensor) else max(end, first + 1))


@dataclass
class PongState:
    """Every game's state: (N,) int32 tensors, positions (top-left corners) and speeds in units."""
    ball_x: torch.Tensor
    ball_y: torch.Tensor
    ball_vx: torch.Tensor
    ball_vy: torch.Tensor
    agent_y: torch.Tensor       # top of the agent's paddle
    opp_y: torch.Tensor         # top of the opponent's paddle
    serve_timer: torch.Tensor   # frames until the serve; the ball is out of play while > 0
    score_agent: torch.Tensor
    score_opp: torch.Tensor
    frames: torch.Tensor        # emulator frames of the episode
    steps: torch.Tensor         # agent steps of the episode
    serves: torch.Tensor        # serves so far in this env (all episodes): the hash's counter
    hits: torch.Tensor          # paddle hits since the serve: the ball's speed-up, the opponent's aim

    # a new game; `serves` goes on counting so that every game gets new serves
    START = dict(ball_x=CENTER_X, ball_y=CENTER_Y, ball_vx=0, ball_vy=0, agent_y=PADDLE_START,
                 opp_y=PADDLE_START, serve_timer=SERVE_DELAY, score_agent=0, score_opp=0, frames=0,
                 steps=0, hits=0)

    @classmethod
    def new(cls, n: int, device) -> "PongState":
        full = dict(cls.START, serves=0)
        return cls(**{k: torch.full((n,), v, dtype=torch.int32, device=device) for k, v in full.items()})

    def restart(self, where: torch.Tensor) -> "PongState":
        """New games in the rows `where` (bool (N,)), the others unchanged."""
        return PongState(**{f.name: torch.where(where, self.START[f.name], getattr(self, f.name))
                            if f.name in self.START else getattr(self, f.name) for f in fields(self)})

    def clone(self) -> "PongState":
        return PongState(**{f.name: getattr(self, f.name).clone() for f in fields(self)})


@dataclass
class PongStep:
    """One step of all N games: tensors on the env's device. Field names as StepResult's
    (envs/contract.py); every row is a transition (has_transition None) and `reset` is `done`."""
    env_ids: torch.Tensor          # (N,) int64: 0..N-1
    obs: torch.Tensor              # (N, stack, size, size) uint8: to act on next (reset obs where done)
    next_obs: torch.Tensor         # (N, stack, size, size) uint8: s' of the transition (final obs where done)
    rewards: torch.Tensor          # (N,) float32: points won - points lost over the skipped frames
    terminated: torch.Tensor       # (N,) bool: a player reached `points`
    truncated: torch.Tensor        # (N,) bool: max_episode_frames reached
    done: torch.Tensor             # (N,) bool
    episode_returns: torch.Tensor  # (N,) float32: the episode's score difference, valid where done
    episode_lengths: torch.Tensor  # (N,) int64: its agent steps, valid where done

    has_transition = None

    @property
    def reset(self) -> torch.Tensor:
        return self.done

    def ended_episodes(self) -> list[tuple[int, float, int]]:
        """(env index, return, length) of each game that ended in this step (a host sync)."""
        ids = self.done.nonzero().squeeze(1)
        return list(zip(ids.tolist(), self.episode_returns[ids].tolist(), self.episode_lengths[ids].tolist()))


class TorchPong:
    """N Pong games on `device`, stepped together; see the module docstring for the rules."""

    def __init__(self, num_envs: int, device="cpu", stack: int = 4, frame_skip: int = 4, size: int = 84,
                 points: int = 21, max_episode_frames: int = 108_000, background: int = BACKGROUND,
                 compiled: bool = False):
        self.num_envs, self.device = num_envs, torch.device(device)
        self.stack, self.frame_skip, self.size = stack, frame_skip, size
        self.points, self.max_episode_frames = points, max_episode_frames
        self.single_observation_space = gym.spaces.Box(0, 255, (stack, size, size), np.uint8)
        self.single_action_space = gym.spaces.Discrete(len(MOVES))
        dev = self.device
        self._moves = torch.tensor(MOVES, dtype=torch.int32, device=dev)
        self._serve_vy = torch.tensor(SERVE_VY, dtype=torch.int32, device=dev)
        self._grid = torch.arange(size, dtype=torch.int32, device=dev)
        background = torch.full((size, size), background, dtype=torch.uint8, device=dev)
        for lo, hi in (TOP_WALL, BOTTOM_WALL):
            a, b = pixel_span(lo, hi, size)
            background[a:b] = WALL
        self._background = background
        self._paddle_cols = [slice(*pixel_span(x, x + PADDLE_W, size)) for x in (OPP_X, AGENT_X)]
        # eager, the physics and the render are some hundreds of small kernels per step (launch-bound
        # on a GPU below ~10k games); compiled, inductor fuses them into a few
        self._advance = torch.compile(self._games_step, dynamic=False) if compiled else self._games_step  # flag site: compile_env
        self.reset(0)

    def reset(self, seed: int = 0) -> torch.Tensor:
        """Start all games; env i's serves are drawn from (seed, i). Returns obs (N, stack, size, size)."""
        n = self.num_envs
        self.state = PongState.new(n, self.device)
        # the seed is mixed on the host: a host-to-device copy would be a sync
        self._env_key = hash32(hash32(seed) ^ torch.arange(n, dtype=torch.int64, device=self.device))
        # the start frame is the same in every game (no ball yet, paddles centered)
        self._reset_obs = self.render(PongState.new(1, self.device))[:, None].expand(1, self.stack, -1, -1)
        self.obs = self._reset_obs.expand(n, -1, -1, -1).clone()
        self._rows = torch.arange(n, device=self.device)
        return self.obs

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    def send(self, actions: torch.Tensor, env_ids=None) -> None:
        """The vector-env contract (loops/collect.py): every game steps at recv, env_ids is all."""
        self._actions = actions

    def recv(self) -> PongStep:
        return self.step(self._actions)

    def _serve(self, h: torch.Tensor):
        """Side, height and angle of a serve from its random bits h."""
        vx = torch.where((h & 1) == 1, BALL_VX, -BALL_VX).int()
        vy = self._serve_vy[(h >> 1) % len(SERVE_VY)]
        y = CENTER_Y + ((h >> 8) % (2 * SERVE_DY + 1)).int() - SERVE_DY
        return vx, vy, y

    def _english(self, ball_y: torch.Tensor, paddle_y: torch.Tensor) -> torch.Tensor:
        """vy after a hit (before the speed-up): linear in the ball's offset from the paddle's
        center, MAX_VY from STEEP_OFFSET to the edges."""
        offset = (ball_y + BALL_H // 2) - (paddle_y + PADDLE_H // 2)  # |offset| < (PADDLE_H + BALL_H) / 2
        return (offset * MAX_VY // STEEP_OFFSET).clamp(-MAX_VY, MAX_VY)

    def _frame(self, s: PongState, move: torch.Tensor):
        """One emulator frame of all games: (new state, points won - points lost)."""
        agent_y = (s.agent_y + move * AGENT_SPEED).clamp(TOP, BOTTOM - PADDLE_H)
        in_play = s.serve_timer == 0
        # random bits of this serve (env key, serve count) and of this leg of its rally (+ hits)
        serve_bits = hash32(self._env_key ^ s.serves.long())
        aim = (hash32(serve_bits ^ s.hits.long()) % (2 * OPP_AIM + 1)).int() - OPP_AIM
        target = torch.where(in_play, s.ball_y + BALL_H // 2 + aim, (TOP + BOTTOM) // 2) - PADDLE_H // 2
        opp_y = (s.opp_y + (target - s.opp_y).clamp(-OPP_SPEED, OPP_SPEED)).clamp(TOP, BOTTOM - PADDLE_H)

        # the ball (its velocity is 0 while out of play) and the walls
        vx, vy = s.ball_vx, s.ball_vy
        x, y = s.ball_x + vx, s.ball_y + vy
        top, bottom = y < TOP, y > BOTTOM - BALL_H
        y = torch.where(top, 2 * TOP - y, torch.where(bottom, 2 * (BOTTOM - BALL_H) - y, y))
        vy = torch.where(top | bottom, -vy, vy)

        # a paddle hit: the ball's leading edge crosses the paddle's face this frame, rows overlapping
        def overlaps(paddle_y):
            return (y < paddle_y + PADDLE_H) & (y + BALL_H > paddle_y)
        agent_hit = (vx > 0) & (s.ball_x + BALL_W <= AGENT_X) & (x + BALL_W > AGENT_X) & overlaps(agent_y)
        opp_face = OPP_X + PADDLE_W
        opp_hit = (vx < 0) & (s.ball_x >= opp_face) & (x < opp_face) & overlaps(opp_y)
        hit = agent_hit | opp_hit
        x = torch.where(agent_hit, AGENT_X - BALL_W, torch.where(opp_hit, opp_face, x))
        hits = s.hits + hit.int()
        scale = SPEEDUP_DIV + hits.clamp_max(SPEEDUP_MAX)
        english = self._english(y, torch.where(agent_hit, agent_y, opp_y))
        vy = torch.where(hit, english * scale // SPEEDUP_DIV, vy)
        speed = BALL_VX * scale // SPEEDUP_DIV
        vx = torch.where(agent_hit, -speed, torch.where(opp_hit, speed, vx))

        # points; none once the game is won (frames left in the skip after the winning point)
        won, lost = x + BALL_W <= 0, x >= COURT
        live = (s.score_agent < self.points) & (s.score_opp < self.points)
        reward = (won & live).int() - (lost & live).int()

        # a point takes the ball out of play; the serve comes when the timer runs out
        timer = torch.where(won | lost, SERVE_DELAY, (s.serve_timer - 1).clamp_min(0))
        launch = s.serve_timer == 1
        serve_vx, serve_vy, serve_y = self._serve(serve_bits)
        waiting = timer > 0
        x = torch.where(waiting | launch, CENTER_X, x)
        y = torch.where(waiting, CENTER_Y, torch.where(launch, serve_y, y))
        vx = torch.where(waiting, 0, torch.where(launch, serve_vx, vx))
        vy = torch.where(waiting, 0, torch.where(launch, serve_vy, vy))
        return PongState(x, y, vx, vy, agent_y, opp_y, timer, s.score_agent + (won & live).int(),
                         s.score_opp + (lost & live).int(), s.frames, s.steps, s.serves + launch.int(),
                         torch.where(waiting, 0, hits)), reward

    def render(self, s: PongState) -> torch.Tensor:
        """(N, size, size) uint8 frames: broadcast comparisons of the pixel grid with each object's span."""
        g = self._grid

        def rows(lo, hi):  # (N,) units -> (N, size) bool
            a, b = pixel_span(lo, hi, self.size)
            return (g >= a[:, None]) & (g < b[:, None])
        frame = self._background.expand(s.ball_x.shape[0], -1, -1).clone()
        for cols, y, gray in zip(self._paddle_cols, (s.opp_y, s.agent_y), (OPP_GRAY, AGENT_GRAY)):
            frame[:, :, cols] = torch.where(rows(y, y + PADDLE_H)[:, :, None], gray, frame[:, :, cols])
        ball_rows = rows(s.ball_y, s.ball_y + BALL_H) & (s.serve_timer == 0)[:, None]
        ball = ball_rows[:, :, None] & rows(s.ball_x, s.ball_x + BALL_W)[:, None, :]
        return torch.where(ball, BALL_GRAY, frame)

    def _games_step(self, state: PongState, actions: torch.Tensor):
        """The games' part of a step, tensor ops only (what compile_env compiles): (the state with
        ended games restarted, reward, terminated, truncated, done, the score difference and agent
        steps of each game before the restart, the new frame)."""
        move = self._moves[actions]
        s, reward = state, torch.zeros(self.num_envs, dtype=torch.int32, device=self.device)
        for _ in range(self.frame_skip):
            s, r = self._frame(s, move)
            reward = reward + r
        s.frames = s.frames + self.frame_skip
        s.steps = s.steps + 1
        terminated = (s.score_agent >= self.points) | (s.score_opp >= self.points)
        truncated = (s.frames >= self.max_episode_frames) & ~terminated
        done = terminated | truncated
        return (s.restart(done), reward.float(), terminated, truncated, done,
                (s.score_agent - s.score_opp).float(), s.steps.long(), self.render(s))

    def step(self, actions: torch.Tensor) -> PongStep:
        """Repeat `actions` ((N,) int64 on the device) for frame_skip frames in every game."""
        state, reward, terminated, truncated, done, score, length, frame = self._advance(self.state, actions)
        # next_obs in rows 0..N-1 of a buffer whose row N is the reset obs; obs gathers row N where
        # done (a row gather is faster than a torch.where over the pixels on CPU)
        buffer = torch.empty((self.num_envs + 1,) + self.obs.shape[1:], dtype=torch.uint8, device=self.device)
        buffer[-1] = self._reset_obs[0]
        next_obs = torch.cat([self.obs[:, 1:], frame[:, None]], 1, out=buffer[:-1])
        obs = buffer.index_select(0, torch.where(done, self.num_envs, self._rows))
        result = PongStep(self._rows, obs, next_obs, reward, terminated, truncated, done, score, length)
        self.state, self.obs = state, obs
        return result


def make_torch_pong(hp, num_envs: int, device="cpu", compiled: bool = False) -> TorchPong:
    """TorchPong with the run's stack, frame skip, frame size, points, episode cap and court level."""
    return TorchPong(num_envs, device, stack=hp.stack, frame_skip=hp.frame_skip, size=hp.pong_size,
                     points=hp.pong_points, max_episode_frames=hp.max_episode_frames, background=hp.pong_background,
                     compiled=compiled)


class TorchPongVecEnv:
    """TorchPong behind the host contract of `vector.py` (numpy in and out, one sync per recv).

    Sync and same-step autoreset: every recv steps all envs, every row is a transition, and
    where a game ended next_obs is its final observation and obs the new game's first. On the
    CPU the arrays share memory with the env's tensors (which it never writes again): read them,
    do not write to them."""

    def __init__(self, hp, num_envs: int, device="cpu", compiled: bool = False):
        self.env = make_torch_pong(hp, num_envs, device, compiled)
        self.num_envs = self.batch = num_envs
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self._actions = np.zeros(num_envs, np.int64)

    def reset(self, seed: int) -> np.ndarray:
        return self.env.reset(seed).cpu().numpy()

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        self._actions[env_ids] = actions

    def recv(self) -> StepResult:
        r = self.env.step(torch.from_numpy(self._actions).to(self.env.device))
        done = r.done.cpu().numpy()
        obs = r.obs.cpu().numpy()
        next_obs = r.next_obs.cpu().numpy() if done.any() else obs  # equal where no game ended
        n = self.num_envs
        return StepResult(np.arange(n), obs, next_obs, r.rewards.cpu().numpy(), r.terminated.cpu().numpy(),
                          r.truncated.cpu().numpy(), has_transition=np.ones(n, bool), reset=done,
                          episodes=r.ended_episodes() if done.any() else [])

    def close(self) -> None:
        pass
