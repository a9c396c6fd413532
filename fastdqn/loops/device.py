"""The device-resident loop: torch_pong, the replay and action selection all live on the torch
device, so nothing in the hot path is copied between host and device (its `copy` phase stays 0).

One iteration is one batched step of all N games (N agent steps), then the updates the schedule
owes. What reaches the host per iteration: one flag (did a game end?), the returns of the games
that ended, and the loss scalar for the progress bar.
"""
from __future__ import annotations

import torch
from ignite.engine import Engine

from ..agent import DeviceEpsilonGreedy, epsilon_at
from ..envs.torch_pong import make_torch_pong
from ..learner import Learner
from ..model import make_net
from ..replay import DeviceReplay
from ..schedule import UpdateSchedule
from ..telemetry import Telemetry
from .common import learn, run_engine, seed_everything


def run(cfg, device: torch.device, telemetry: Telemetry) -> None:
    hp, flags = cfg.hp, cfg.flags
    seed_everything(hp.seed)
    env = make_torch_pong(hp, flags.envs, device)
    obs_shape, n_actions = env.single_observation_space.shape, int(env.single_action_space.n)
    learner = Learner(make_net(obs_shape, n_actions, hp.mlp_hidden).to(device), hp, flags, device)
    replay = DeviceReplay(hp.replay_size, obs_shape, torch.uint8, env.num_envs, device, gamma=hp.gamma,
                          n_step=hp.n_step)
    select_actions = DeviceEpsilonGreedy(learner.net, n_actions, device, flags.no_grad, seed=hp.seed)
    rng = torch.Generator(device).manual_seed(hp.seed + 1)
    schedule = UpdateSchedule(hp, env.num_envs)
    telemetry.samples_per_update = schedule.batch_size
    profile = telemetry.profile

    obs = env.reset(seed=hp.seed)
    replay.start(None, obs)

    def iteration(engine: Engine, _):
        nonlocal obs
        steps = engine.state.steps
        epsilon = epsilon_at(steps, hp.epsilon_start, hp.epsilon_final, hp.epsilon_steps)
        with profile("act"):
            actions = select_actions(obs, epsilon)
        with profile("env"):
            step = env.step(actions)
        with profile("replay_insert"):
            replay.add(actions, step.rewards, step.terminated, step.next_obs)
            replay.start_where(step.done, step.obs)  # same-step autoreset: a new stream there
        obs = step.obs
        with profile("env"):  # episode bookkeeping: the only device-to-host traffic of a step
            episodes = step.ended_episodes() if bool(step.done.any()) else []
        engine.state.steps = steps = steps + env.num_envs
        engine.state.epsilon = epsilon
        telemetry.episodes_ended(engine, episodes)
        return learn(steps, schedule, replay, rng, learner, profile, telemetry)

    run_engine(iteration, cfg, telemetry)
