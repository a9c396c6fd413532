"""CarRacing-v3 with discrete actions, preprocessed for the Nature-DQN network.

gymnasium's box2d extra (`pip install 'fastdqn[carracing]'`). Five actions: nothing, steer left,
steer right, gas, brake (gymnasium's discrete mode). Each step of the stack, and why:

- action repeat of `frame_skip` (4) physics frames, rewards summed, the observation the max of
  the last two: the car is steered at 12.5 Hz instead of 50, which the track's curves allow, and
  an episode (1,000 frames) becomes 250 agent steps;
- the bottom 12 rows (the speed, ABS and steering bars) cut off: what they show the stacked
  frames show by motion, and the rest is the 84-row view of the track;
- grayscale: the grey track and the green grass stay apart in luminance;
- resized to 84x84 (cv2 INTER_AREA, as the Atari stack), `stack` (4) frames stacked, uint8;
- no reward clipping: the score is +1000/N per track tile and -0.1 per frame, and clipping to the
  sign would weigh a tile like one frame's time penalty. Episodes end at 1,000 frames
  (truncated) or when the car leaves the playfield (-100, terminated).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box
from gymnasium.wrappers import (FrameStackObservation, GrayscaleObservation, MaxAndSkipObservation,
                                RecordEpisodeStatistics, ResizeObservation, TransformObservation)

from ..errors import UsageError

INFO_BAR_ROWS = 12  # of the 96: the speed, ABS and steering indicators


def is_carracing(env_id: str) -> bool:
    return env_id.startswith("CarRacing")


def make_carracing_env(hp) -> gym.Env:
    try:
        env = gym.make(hp.env, continuous=False)
    except gym.error.DependencyNotInstalled:
        raise UsageError(f"env {hp.env} needs gymnasium's box2d extra: pip install 'fastdqn[carracing]'") from None
    if hp.frame_skip > 1:
        env = MaxAndSkipObservation(env, skip=hp.frame_skip)
    env = RecordEpisodeStatistics(env)  # outside the skip: lengths in agent steps
    height, width, channels = env.observation_space.shape
    env = TransformObservation(env, lambda obs: obs[:height - INFO_BAR_ROWS],
                               Box(0, 255, (height - INFO_BAR_ROWS, width, channels), np.uint8))
    env = ResizeObservation(GrayscaleObservation(env), (84, 84))
    return FrameStackObservation(env, hp.stack)  # (stack, 84, 84) uint8
