"""stable-baselines3's PPO, A2C and DQN as peer cells (sb3_ppo, sb3_a2c, sb3_dqn): SB3's own
learn(), unchanged, with rl-zoo3's published hyperparameters for the env, on the env rl-zoo3
builds for them; the harness watches through an SB3 callback and stops learn() from it.

- Envs as rl-zoo3 (and SB3's make_atari_env) make them: make_vec_env wraps each env copy in SB3's
  Monitor first and rl-zoo3's env_wrapper (AtariWrapper) above it, so the Monitor sees whole
  games and the raw score below AtariWrapper's episodic life and reward clipping; then
  VecFrameStack. DummyVecEnv, rl-zoo3's default. The env copies count as agent steps, as
  fastdqn's N envs do. AtariWrapper's stack is the DeepMind one fastdqn uses (30 no-ops, action
  repeat 4 with a max over the last two frames, FIRE reset, 84x84 gray, clipped rewards, 4 frames,
  ALE's 108,000-frame cap of NoFrameskip-v4), plus the end of a life as a training episode end.
- Episodes: the Monitor's `episode` records (its per-copy CSV files are kept in <logdir>/monitor).
- Updates: optimizer steps (a torch step hook), so the replay ratio is samples per agent step;
  the first one ends the warm-up (DQN: learning_starts; PPO and A2C: the first rollout).
- The phase profile's `learn` is SB3's train() between two rollouts; acting and env steps are
  `other`. rl-zoo3's separate evaluation (EvalCallback) is not run: a run is judged on its
  training games.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..envs import is_atari
from ..errors import UsageError

# rl-zoo3 2.9.2 (DLR-RM/rl-baselines3-zoo), rl_zoo3/hyperparams/{ppo,a2c,dqn}.yml, entries `atari`
# (every Atari NoFrameskip id) and `CartPole-v1`, value by value as published; what rl-zoo3's
# ExperimentManager does with its own keys (n_envs, env_wrapper, frame_stack, n_timesteps, policy,
# `lin_` schedules, policy_kwargs) is done the same way in make_env, algorithm_kwargs and run.
ZOO_RELEASE = "rl-zoo3 2.9.2"
ATARI_WRAPPER = "stable_baselines3.common.atari_wrappers.AtariWrapper"
ZOO = {
    ("PPO", "atari"): {
        "env_wrapper": ATARI_WRAPPER, "frame_stack": 4, "policy": "CnnPolicy", "n_envs": 8, "n_steps": 128,
        "n_epochs": 4, "batch_size": 256, "n_timesteps": 1e7, "learning_rate": "lin_2.5e-4",
        "clip_range": "lin_0.1", "vf_coef": 0.5, "ent_coef": 0.01},
    ("PPO", "CartPole-v1"): {
        "n_envs": 8, "n_timesteps": 1e5, "policy": "MlpPolicy", "n_steps": 32, "batch_size": 256,
        "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0, "learning_rate": "lin_0.001",
        "clip_range": "lin_0.2"},
    ("A2C", "atari"): {
        "env_wrapper": ATARI_WRAPPER, "frame_stack": 4, "policy": "CnnPolicy", "n_envs": 16, "n_timesteps": 1e7,
        "ent_coef": 0.01, "vf_coef": 0.25,
        "policy_kwargs": "dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))"},
    ("A2C", "CartPole-v1"): {"n_envs": 8, "n_timesteps": 5e5, "policy": "MlpPolicy", "ent_coef": 0.0},
    ("DQN", "atari"): {
        "env_wrapper": ATARI_WRAPPER, "frame_stack": 4, "policy": "CnnPolicy", "n_timesteps": 1e7,
        "buffer_size": 100000, "learning_rate": 1e-4, "batch_size": 32, "learning_starts": 100000,
        "target_update_interval": 1000, "train_freq": 4, "gradient_steps": 1, "exploration_fraction": 0.1,
        "exploration_final_eps": 0.01, "optimize_memory_usage": False},
    ("DQN", "CartPole-v1"): {
        "n_timesteps": 5e4, "policy": "MlpPolicy", "learning_rate": 2.3e-3, "batch_size": 64,
        "buffer_size": 100000, "learning_starts": 1000, "gamma": 0.99, "target_update_interval": 10,
        "train_freq": 256, "gradient_steps": 128, "exploration_fraction": 0.16, "exploration_final_eps": 0.04,
        "policy_kwargs": "dict(net_arch=[256, 256])"},
}
# the zoo's policy_kwargs strings (it evaluates them) as the objects they make
POLICY_KWARGS = {
    "dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))":
        lambda sb3: {"optimizer_class": sb3.common.sb2_compat.rmsprop_tf_like.RMSpropTFLike,
                     "optimizer_kwargs": {"eps": 1e-5}},
    "dict(net_arch=[256, 256])": lambda sb3: {"net_arch": [256, 256]},
}
ZOO_ONLY = ("n_timesteps", "policy", "n_envs", "env_wrapper", "frame_stack")  # rl-zoo3's, not the algorithm's


def published(p, cfg) -> tuple[dict, str]:
    """rl-zoo3's entry for the env of `cfg` (a fastdqn Config) and where it is published."""
    env = cfg.hp.env
    entry = "atari" if is_atari(env) else env
    if (p.algorithm, entry) not in ZOO:
        have = sorted({e for a, e in ZOO if a == p.algorithm})
        raise UsageError(f"peer {p.name}: no published hyperparameters for env {env!r} here: expected an Atari "
                         f"NoFrameskip id or one of {', '.join(e for e in have if e != 'atari')}")
    if entry == "atari" and "NoFrameskip" not in env:  # AtariWrapper repeats actions itself
        raise UsageError(f"peer {p.name}: env {env!r}: rl-zoo3's Atari entry runs NoFrameskip ids (AtariWrapper "
                         "repeats the action itself), e.g. PongNoFrameskip-v4")
    algo_file = p.algorithm.lower()
    return dict(ZOO[(p.algorithm, entry)]), f"{ZOO_RELEASE}, hyperparams/{algo_file}.yml, entry {entry!r}"


def import_library(p):
    try:
        import stable_baselines3
        import stable_baselines3.common.sb2_compat.rmsprop_tf_like  # noqa: F401  (A2C's Atari optimizer)
    except ImportError as e:
        raise UsageError(f"peer {p.name} needs stable-baselines3 ({e}): install the extra, "
                         f"pip install 'fastdqn[{p.extra}]'") from None
    return stable_baselines3


def device(cfg):
    from ..train import resolve_device
    return resolve_device(cfg.run.device)


def make_env(cfg, zoo: dict, monitor_dir: Path | None):
    """rl-zoo3's create_envs: make_vec_env (Monitor, then the env_wrapper), then VecFrameStack."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack
    if is_atari(cfg.hp.env):
        import ale_py
        import gymnasium as gym
        gym.register_envs(ale_py)  # make_vec_env makes the id with gym.make
    wrapper = None
    if zoo.get("env_wrapper") == ATARI_WRAPPER:
        from stable_baselines3.common.atari_wrappers import AtariWrapper as wrapper
    env = make_vec_env(cfg.hp.env, n_envs=zoo.get("n_envs", 1), seed=cfg.hp.seed, wrapper_class=wrapper,
                       monitor_dir=None if monitor_dir is None else str(monitor_dir), vec_env_cls=DummyVecEnv)
    if zoo.get("frame_stack"):
        env = VecFrameStack(env, zoo["frame_stack"])
    return env


def algorithm_kwargs(sb3, zoo: dict) -> dict:
    """The zoo entry as the algorithm's keyword arguments: `lin_X` is rl-zoo3's linear schedule
    from X to 0 over the run (progress_remaining * X), SB3's LinearSchedule(X, 0, 1)."""
    from stable_baselines3.common.utils import LinearSchedule
    kwargs = {}
    for key, value in zoo.items():
        if key in ZOO_ONLY:
            continue
        if isinstance(value, str) and value.startswith("lin_"):
            value = LinearSchedule(float(value[4:]), 0.0, 1.0)
        elif key == "policy_kwargs":
            value = POLICY_KWARGS[value](sb3)
        kwargs[key] = value
    return kwargs


def samples_per_update(model, zoo: dict) -> int:
    """Samples in one optimizer step: A2C takes the whole rollout as one batch."""
    if zoo.get("batch_size"):
        return int(zoo["batch_size"])
    return int(model.n_steps * model.n_envs)


def make_callback(meter, zoo: dict):
    from stable_baselines3.common.callbacks import BaseCallback

    class HarnessCallback(BaseCallback):
        """The harness's hook into learn(): episodes, updates, the learn phase, stops."""

        def __init__(self):
            super().__init__()
            self.train_began = None

        def _on_training_start(self) -> None:
            meter.telemetry.samples_per_update = samples_per_update(self.model, zoo)
            self.model.policy.optimizer.register_step_post_hook(
                lambda *_: meter.learned(1, self.model.num_timesteps))

        def _on_rollout_end(self) -> None:  # SB3's train() follows
            self.train_began = time.perf_counter()

        def _on_rollout_start(self) -> None:
            if self.train_began is not None:
                meter.telemetry.profile.seconds["learn"] += time.perf_counter() - self.train_began
                self.train_began = None

        def _on_step(self) -> bool:
            step = self.model.num_timesteps  # every env copy's steps, this one included
            for info in self.locals["infos"]:
                if "episode" in info:  # the Monitor's record of a whole game
                    meter.episode(info["episode"]["r"], step)
            return not meter.advance(step, getattr(self.model, "exploration_rate", None))

    return HarnessCallback()


def run(cfg, sb3, device, meter) -> None:
    algorithm = getattr(sb3, cfg.library["algorithm"])
    zoo = cfg.published
    monitor_dir = Path(cfg.run.logdir) / "monitor" if cfg.run.logdir else None
    env = make_env(cfg, zoo, monitor_dir)
    model = None
    try:
        # no SB3 TensorBoard log (rl-zoo3's default) and verbose 0 (rl-zoo3 prints SB3's tables): the
        # progress line and the harness's scalars (PeerMeter) are the run's output
        model = algorithm(zoo["policy"], env, seed=cfg.hp.seed, device=str(device), verbose=0,
                          **algorithm_kwargs(sb3, zoo))
        # the warm-up shown until the first update: DQN's learning_starts, the first rollout otherwise
        meter.set_warmup(zoo["learning_starts"] if "learning_starts" in zoo else model.n_steps * model.n_envs)
        meter.record.update({
            "episodes_from": "SB3's Monitor, below AtariWrapper's episodic life where it applies: whole games, "
                             "raw score", "updates": "optimizer steps",
            "phases": "learn: SB3's train() between rollouts; acting and env steps are in other",
            "evaluation": "none: judged on its training episodes", "n_timesteps": int(zoo["n_timesteps"]),
            "monitor_dir": None if monitor_dir is None else str(monitor_dir)})
        meter.start()
        model.learn(total_timesteps=int(zoo["n_timesteps"]), callback=make_callback(meter, zoo))
        meter.stop()
    finally:
        if model is not None:  # SB3's own count, beside the harness's
            meter.record["library_steps"] = int(model.num_timesteps)
        env.close()
