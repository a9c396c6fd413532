"""Environment factories and vector backends."""
from .atari import frames_per_step, is_atari, make_env
from .vector import SequentialVecEnv, StepResult, make_vec_env

__all__ = ["make_env", "is_atari", "frames_per_step", "SequentialVecEnv", "StepResult", "make_vec_env"]
