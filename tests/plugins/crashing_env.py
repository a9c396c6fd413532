"""A test-only env, made by gymnasium from the id "crashing_env:CrashingCartPole-v1" (the module
is imported first, in whatever process makes it): CartPole whose second play process raises
after 500 steps. Player p seeds its envs from seed + 1000 p (loops/parallel.py), so a reset seed
of 1000 or more marks player 1 or later; the trainer's own env never steps."""
import gymnasium as gym

CRASH_AFTER = 500


class CrashingCartPole(gym.Wrapper):
    def __init__(self):
        super().__init__(gym.make("CartPole-v1"))
        self.steps, self.armed = 0, False

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.armed = seed >= 1000
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.armed and self.steps >= CRASH_AFTER:
            raise RuntimeError(f"test-only crash after {self.steps} env steps")
        return self.env.step(action)


gym.register("CrashingCartPole-v1", entry_point=CrashingCartPole)
