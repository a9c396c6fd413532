"""The parallel vector backends behind the contract of `vector.py` (`make_vec_env` imports them).

- `GymAsyncVecEnv` (`--backend gym_async`): gymnasium's AsyncVectorEnv, one subprocess per env copy,
  each running `make_env(hp, wrappers)`: the very env of the sequential backend. Same-step
  autoreset, so every row is a transition, as in `SequentialVecEnv`; env i is seeded with seed + i
  at `reset(seed)` and autoresets unseeded, so for the same actions it gives exactly the
  sequential backend's observations, rewards and episodes.
- `AleVecEnv` (`--backend ale_sync` / `ale_async`): ale-py's C++ vector env (`AtariVectorEnv`),
  which steps its envs on a pool of C++ threads and does the DeepMind preprocessing itself.
  Next-step autoreset: the step after an episode's end is a reset step (reward 0, action
  ignored): a row with `reset` and no transition.

What the ALE vector env does differently from the baseline stack (`make_env`), all checked
against ale-py 0.12.1:

- Resize: cv2 INTER_AREA, 210x160 -> 84x84, of the max over the last two frames of the frame
  skip, as AtariPreprocessing does (same interpolation, same maxpool).
- Reset: ALE presses FIRE once (one frame) then does uniform[0, noop_max - 1] - 1 no-ops; the
  baseline does 1..noop_max no-ops, then FIRE and RIGHT (one agent step each). Same game, different
  first frames: the two stacks are not frame-identical.
- Frame stack: ALE pads the stack of a reset observation with black frames; the baseline
  (FrameStackObservation padding="reset") and FrameReplay repeat the reset frame. AleVecEnv
  rewrites the padding to the reset frame (in the first hp.stack - 1 observations of an episode),
  so what the agent acts on is what the replay rebuilds.
- Reward: AleVecEnv turns ALE's clipping off and clips to the sign itself, so that the episode
  returns it reports are the raw game score, as RecordEpisodeStatistics gives on the other backends.
- Episode cap: ALE's max_num_frames_per_episode counts the frames of agent steps only (not the
  reset's FIRE and no-op frames), gymnasium's counts every frame of the episode: ALE episodes can
  run up to (noop_max + 1) frames longer before truncation.
- Final observation: ALE, like AtariPreprocessing, leaves the frame-skip loop at an episode's
  end before grabbing the screen, so the newest frame of a final observation is stale (checked:
  the same code path in both stacks, not a backend difference).
- Seeding: `reset(seed=s)` reseeds env i with s + i (its ALE system seed and its no-op RNG, and
  reloads the ROM); autoresets continue each env's own RNG. Without a seed an env seeds itself
  from std::random_device. So in sync mode two runs with the same seed and actions are
  observation-identical; in async mode each env's trajectory depends only on its seed and its own
  actions, but which envs come back in which recv depends on thread scheduling, so a whole run
  (whose epsilon-greedy draws follow that order) is not reproducible.
"""
from __future__ import annotations

import functools
import os
import signal

import gymnasium as gym
import numpy as np

from ..errors import UsageError
from .ale_common import is_atari
from .atari import make_env
from .contract import StepResult


def _worker_env(hp, wrappers: str, parent_pid: int) -> gym.Env:
    """Runs in each AsyncVectorEnv subprocess (and once in the parent, for the spaces)."""
    if os.getpid() != parent_pid:  # a worker, not the parent's dummy env
        # Ctrl-C (and a supervisor's SIGTERM) goes to the whole process group: let the parent
        # handle it and close the workers through their pipes, instead of every worker dying.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # One thread per worker: the workers are the parallelism. Forked workers inherit the
        # parent's imported torch but never call it, so no torch thread starts in them.
        import cv2
        cv2.setNumThreads(1)
    return make_env(hp, wrappers)


class GymAsyncVecEnv:
    """`num_envs` copies of `make_env(hp, wrappers)` in gymnasium AsyncVectorEnv subprocesses.

    Every recv steps all envs (batch == num_envs). Works for any env id (CartPole in tests)."""

    def __init__(self, hp, num_envs: int, wrappers: str = "baseline", context: str | None = None):
        # context None: the platform's default start method (fork on Linux; workers import
        # nothing new). "forkserver"/"spawn" also work, as the env factory is a picklable partial.
        self.env = gym.vector.AsyncVectorEnv(
            [functools.partial(_worker_env, hp, wrappers, os.getpid()) for _ in range(num_envs)],
            context=context, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.num_envs = num_envs
        self.batch = num_envs
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self._actions = np.zeros(num_envs, np.int64)

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)  # env i: seed + i, as SequentialVecEnv
        return obs

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        self._actions[env_ids] = actions
        self.env.step_async(self._actions)

    def recv(self) -> StepResult:
        obs, rewards, terminated, truncated, info = self.env.step_wait()
        done = terminated | truncated
        next_obs = obs  # shared with obs while no env ended (neither is written to)
        episodes = []
        if done.any():
            ended = np.flatnonzero(done)
            next_obs = obs.copy()
            final_obs = info["final_obs"]  # object array, set where "_final_obs"
            final_info = info["final_info"]  # vector info layout: arrays with "_key" masks
            stats, has_stats = final_info["episode"], final_info["_episode"]
            for i in ended:
                next_obs[i] = final_obs[i]
                assert has_stats[i], "every env is wrapped by RecordEpisodeStatistics"
                episodes.append((int(i), float(stats["r"][i]), int(stats["l"][i])))
        n = self.num_envs
        return StepResult(np.arange(n), obs, next_obs, rewards.astype(np.float32), terminated, truncated,
                          has_transition=np.ones(n, bool), reset=done, episodes=episodes)

    def close(self) -> None:
        self.env.close()  # sends "close" to every worker and joins it


def ale_game(env_id: str) -> str:
    """ALE's ROM name of a gymnasium Atari id (PongNoFrameskip-v4 -> "pong"); UsageError otherwise."""
    if not is_atari(env_id):
        raise UsageError(f"backends ale_sync and ale_async run Atari games only, not {env_id!r}: "
                         "use backend sequential or gym_async")
    return gym.spec(env_id).kwargs["game"]


class AleVecEnv:
    """ale-py's C++ vector env: sync when batch == num_envs (every recv steps all envs, rows in
    env order), async when batch < num_envs (recv returns the first `batch` envs to finish).

    Async protocol: ALE takes actions for exactly the envs of its last recv. After `reset`, which
    returns all num_envs observations as the contract asks, ALE has handed out only `batch` of
    them; the other envs' reset results wait inside ALE. The actions `send` gets for those are
    dropped, and each such env comes back once more as a reset row with the same observation (no
    transition: nothing is stored twice, only the first action of those envs is lost).
    """

    def __init__(self, hp, num_envs: int, batch: int | None = None, num_threads: int = 0):
        from ale_py.vector_env import AtariVectorEnv  # imports ale-py's threads only when used

        game = ale_game(hp.env)
        batch = num_envs if batch is None else batch
        if not 1 <= batch <= num_envs:
            raise UsageError(f"async batch {batch}: expected 1 to envs ({num_envs})")
        self.num_envs, self.batch, self.stack = num_envs, batch, hp.stack
        self._kwargs = dict(
            img_height=84, img_width=84, grayscale=True, stack_num=hp.stack,
            frameskip=hp.frame_skip, maxpool=True, noop_max=hp.noop_max, use_fire_reset=True,
            episodic_life=False, life_loss_info=False, repeat_action_probability=0.0,
            max_num_frames_per_episode=hp.max_episode_frames, full_action_space=False,
            # ALE would clip rewards with clamp(-1, 1) and the raw score would be lost; we clip to
            # the sign in recv (the same for integer game rewards) and sum the raw rewards.
            reward_clipping=False,
            autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        self._game = game
        self.env = AtariVectorEnv(game, num_envs, batch_size=0 if batch == num_envs else batch,
                                  num_threads=num_threads, **self._kwargs)
        self.single_observation_space = self.env.single_observation_space  # (stack, 84, 84) uint8
        self.single_action_space = self.env.single_action_space            # minimal set: 6 for Pong
        self._actions = np.zeros(num_envs, np.int64)       # last action given per env
        self._last_ids = np.arange(batch)                  # envs ALE expects actions for, in order
        self._expect_reset = np.zeros(num_envs, bool)      # the env's next row is a reset step
        self._pos = np.zeros(num_envs, np.int64)           # agent steps since the env's reset
        self._ret = np.zeros(num_envs, np.float64)         # raw return of the running episode
        self._len = np.zeros(num_envs, np.int64)           # its length in agent steps
        self._was_reset = False

    def _pad(self, obs: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Replace ALE's black padding frames by the episode's reset frame (rows with pos < stack-1)."""
        for row in np.flatnonzero(pos < self.stack - 1):
            first = self.stack - 1 - pos[row]  # index of the reset frame in this stack
            obs[row, :first] = obs[row, first]
        return obs

    def reset(self, seed: int) -> np.ndarray:
        if self._was_reset and self.batch < self.num_envs:
            # envs in flight would come back after the new reset's rows, seen as new episodes
            raise RuntimeError("AleVecEnv in async mode is reset once; make a new one instead")
        self._was_reset = True
        obs, info = self.env.reset(seed=seed)  # env i: seed + i; returns `batch` envs
        ids = info["env_id"].astype(np.int64)
        self._last_ids = ids
        self._pos[:], self._ret[:], self._len[:] = 0, 0.0, 0
        self._expect_reset[:] = True
        self._expect_reset[ids] = False
        if self.batch == self.num_envs:
            out = np.empty_like(obs)
            out[ids] = obs  # ordered mode: already in env order
        else:
            # The other envs' reset results are still inside ALE; get the same observations from a
            # sync twin seeded alike (a seeded reset is deterministic), so all num_envs start now.
            from ale_py.vector_env import AtariVectorEnv
            out = np.empty((self.num_envs,) + obs.shape[1:], obs.dtype)
            out[ids] = obs
            rest = np.flatnonzero(self._expect_reset)  # never empty: batch < num_envs
            twin = AtariVectorEnv(self._game, len(rest), num_threads=1, **self._kwargs)
            try:
                out[rest], _ = twin.reset(seed=(seed + rest).astype(np.int64))
            finally:
                twin.close()
                del twin
        return self._pad(out, np.zeros(self.num_envs, np.int64))

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        self._actions[env_ids] = actions
        # positional: ALE applies action i to the i-th env of its last recv
        self.env.send(self._actions[self._last_ids])

    def recv(self) -> StepResult:
        obs, raw, terminated, truncated, info = self.env.recv()
        ids = info["env_id"].astype(np.int64)
        self._last_ids = ids
        reset = self._expect_reset[ids]
        trans = ~reset
        raw = np.where(trans, raw, 0).astype(np.float32)
        terminated &= trans  # False on reset steps anyway
        truncated &= trans
        done = terminated | truncated
        # Episode returns: raw game score (reward_clipping is off); length in agent steps.
        self._ret[ids] = np.where(reset, 0.0, self._ret[ids] + raw)
        self._len[ids] = np.where(reset, 0, self._len[ids] + 1)
        pos = np.where(reset, 0, self._pos[ids] + 1)
        self._pos[ids] = pos
        self._expect_reset[ids] = done
        episodes = [(int(i), float(self._ret[i]), int(self._len[i])) for i in ids[done]]
        obs = self._pad(obs, pos)
        # The done row's obs is the final observation: it is next_obs, and the agent acts on it,
        # but ALE ignores that action and resets the env instead (the next row of that env).
        return StepResult(ids, obs, obs, np.sign(raw), terminated, truncated,
                          has_transition=trans, reset=reset, episodes=episodes)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None  # the C++ destructor stops and joins the worker threads
