"""Environment factories and vector backends."""
from .ale_common import frames_per_step, is_atari
from .atari import make_env
from .contract import StepResult
from .vector import SequentialVecEnv, make_vec_env

__all__ = ["make_env", "is_atari", "frames_per_step", "SequentialVecEnv", "StepResult", "make_vec_env"]
