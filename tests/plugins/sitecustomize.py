"""Test-only (tests/test_check.py): with this folder on PYTHONPATH, every Python process started
sleeps FASTDQN_SLOW_FAST_WRAPPERS seconds in each step of the tweaked wrappers, so the check gate
can be shown to fail on a slowdown, in its own process and in its pytest-benchmark session."""
import os
import time

delay = float(os.environ.get("FASTDQN_SLOW_FAST_WRAPPERS", "0") or 0)
if delay:
    import gymnasium as gym

    from fastdqn.envs import fast

    class SlowStep(gym.Wrapper):
        def step(self, action):
            time.sleep(delay)
            return self.env.step(action)

    make_fast_env = fast.make_fast_env
    fast.make_fast_env = lambda hp: SlowStep(make_fast_env(hp))
