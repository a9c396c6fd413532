"""Single-env factory. Atari ids get the book's DeepMind preprocessing, CarRacing its own
(carracing.py); other ids (CartPole in tests) are used as they are."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import (AtariPreprocessing, FrameStackObservation, RecordEpisodeStatistics,
                                TransformReward)

from .ale_common import FireReset, is_atari
from .carracing import is_carracing, make_carracing_env


def make_env(hp, wrappers: str = "baseline") -> gym.Env:
    """One env with the baseline preprocessing, or the tweaked one (envs/fast.py). Episode
    statistics (info["episode"]) record the raw game score, before reward clipping. Seed it
    through the first reset(seed=...)."""
    if is_carracing(hp.env):
        return make_carracing_env(hp)
    if not is_atari(hp.env):
        return RecordEpisodeStatistics(gym.make(hp.env))
    if wrappers == "fast":  # flag site: wrappers
        from .fast import make_fast_env
        return make_fast_env(hp)
    env = gym.make(hp.env, frameskip=1, repeat_action_probability=0.0,
                   max_num_frames_per_episode=hp.max_episode_frames)
    # noop starts, action repeat with max over the last two frames, 84x84 grayscale (cv2 INTER_AREA)
    env = AtariPreprocessing(env, noop_max=hp.noop_max, frame_skip=hp.frame_skip, screen_size=84,
                             terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    env = RecordEpisodeStatistics(env)  # outside FireReset: lengths count the agent's steps only
    env = TransformReward(env, lambda r: float(np.sign(r)))  # reward clipping, as the book's
    return FrameStackObservation(env, hp.stack)  # (stack, 84, 84) uint8, channels first
