"""Atari helpers both wrapper stacks (atari.py's book stack, fast.py's tweaked one) use."""
from __future__ import annotations

import ale_py
import gymnasium as gym

from ..config import TORCH_PONG

gym.register_envs(ale_py)


def is_atari(env_id: str) -> bool:
    try:
        return "ale_py" in str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        return False


def frames_per_step(hp) -> int:
    """Emulator (physics) frames per agent step: frame skip for Atari, torch_pong and CarRacing
    (its action repeat), 1 otherwise."""
    return hp.frame_skip if is_atari(hp.env) or hp.env == TORCH_PONG or hp.env.startswith("CarRacing") else 1


class FireReset(gym.Wrapper):
    """Press FIRE (then RIGHT) after reset: Pong does not start a rally until FIRE is pressed."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        assert env.unwrapped.get_action_meanings()[1] == "FIRE"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info
