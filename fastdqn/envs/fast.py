"""The chapter's "tweaked wrappers" (`--wrappers fast`): a cheaper Atari preprocessing stack.

Same observation contract as the baseline DeepMind stack (`make_env(hp)` in atari.py): uint8,
channels first, shape (hp.stack, 84, 84); the same FireReset; rewards clipped to their sign;
the raw game score in info["episode"] (RecordEpisodeStatistics sits before the clipping, as in
the baseline); the same emulator-frame cap (max_num_frames_per_episode = hp.max_episode_frames)
and no sticky actions (repeat_action_probability = 0). The frame stack has the baseline's
semantics, which the replay relies on: at reset every slot holds the reset frame
(FrameStackObservation padding="reset"), and each step shifts the stack by one frame.

What differs from the baseline, and why it is cheaper (per-step costs of each item:
results/amd-epyc-2c/env_step_costs.md):

(a) No max over the last two frames: the action is repeated hp.frame_skip times inside ALE
    (gym.make(frameskip=hp.frame_skip)) and only the last frame is observed. Pong's sprites do
    not flicker, so the max is not needed there; it saves a second screen grab and np.maximum.
(b) No random no-op starts, whatever hp.noop_max says: without them (and without sticky actions)
    Pong's first observation does not depend on the seed.
(c) Cheaper grayscale: ALE renders the grayscale screen directly (obs_type="grayscale"), once per
    agent step. The baseline env renders an RGB screen on every emulator frame (obs_type "rgb",
    frameskip=1, thrown away) and AtariPreprocessing then asks ALE for grayscale again. One
    Python env.step per agent step instead of hp.frame_skip of them through the gym.make wrapper
    chain also saves the wrappers' Python overhead on every frame.
(d) Cheaper resize: cv2.resize INTER_NEAREST instead of INTER_AREA for 210x160 -> 84x84 (as cheap
    as any resize timed).
(e) A preallocated, np.roll-free frame stack: a "double-write" ring of 2 x stack frames holds
    every frame twice, so the current stack is always one contiguous slice, copied once per step,
    instead of FrameStackObservation's deque + concatenate.
    Resize, stack and reward clipping are one wrapper, one Python call per step.
"""
from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
from gymnasium.wrappers import RecordEpisodeStatistics

from .ale_common import FireReset, is_atari

SIZE = 84


class FastAtariFrames(gym.Wrapper):
    """Resize (INTER_NEAREST) + frame stack (double-write ring) + reward clipping, one wrapper,
    over an env whose observation is already the grayscale screen of the last skipped frame."""

    def __init__(self, env: gym.Env, stack: int):
        super().__init__(env)
        self.stack = stack
        self.observation_space = gym.spaces.Box(0, 255, (stack, SIZE, SIZE), np.uint8)
        # (e) Every frame is written to slot p and p + stack, so buf[p+1 : p+1+stack] is always
        # the current stack, oldest frame first, without shifting memory (no np.roll).
        self._buf = np.zeros((2 * stack, SIZE, SIZE), np.uint8)
        self._p = 0  # slot of the newest frame, in [0, stack)

    def _frame(self, screen: np.ndarray, out: np.ndarray) -> None:
        # (d) nearest-neighbour resize straight into the ring slot, instead of INTER_AREA
        cv2.resize(screen, (SIZE, SIZE), dst=out, interpolation=cv2.INTER_NEAREST)

    def reset(self, **kwargs):
        screen, info = self.env.reset(**kwargs)
        self._p = 0
        self._frame(screen, self._buf[0])
        self._buf[1:] = self._buf[0]  # the stack at reset repeats the reset frame (padding="reset")
        return self._buf[1:1 + self.stack].copy(), info

    def step(self, action):
        screen, reward, terminated, truncated, info = self.env.step(action)
        p = self._p = (self._p + 1) % self.stack
        buf = self._buf
        self._frame(screen, buf[p])
        buf[p + self.stack] = buf[p]
        # a copy: the caller may keep the obs (replay, previous obs) while the ring moves on
        obs = buf[p + 1:p + 1 + self.stack].copy()
        # reward clipping to the sign, as the baseline's TransformReward(np.sign), without numpy
        return obs, float((reward > 0) - (reward < 0)), terminated, truncated, info


def make_fast_env(hp) -> gym.Env:
    """One Atari env with the tweaked preprocessing; observations (hp.stack, 84, 84) uint8.
    Seed it through the first reset(seed=...)."""
    if not is_atari(hp.env):
        raise ValueError(f"the fast wrappers are for Atari envs, not {hp.env!r}")
    # (a) action repeat inside ALE, last frame only (no max-pool); (c) grayscale rendered by ALE
    # once per agent step; (b) no no-op starts: hp.noop_max is deliberately ignored.
    env = gym.make(hp.env, frameskip=hp.frame_skip, obs_type="grayscale", repeat_action_probability=0.0,
                   max_num_frames_per_episode=hp.max_episode_frames)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    env = RecordEpisodeStatistics(env)  # raw score before clipping, agent steps only, as the baseline
    return FastAtariFrames(env, hp.stack)  # (d) resize, (e) stack, reward clipping
