"""fastdqn's serial loop: act, step, store, sample, learn, sync, all in one process.

With the book's settings one iteration is one env step and, after the replay warm-up, one SGD
step of batch 32: the chapter's baseline (and slow_grads with the no_grad flag off). With N envs
one iteration is a round of N steps; the schedule decides how many updates follow it.
"""
from __future__ import annotations

import numpy as np
from ignite.engine import Engine

from ..agent import EpsilonGreedy, epsilon_at
from ..envs import make_vec_env
from ..learner import Learner
from ..model import make_net
from ..replay import make_replay, sampler
from ..schedule import UpdateSchedule
from ..telemetry import Telemetry
from ..transfer import make_to_device
from .common import learn, run_engine, seed_everything


def run(cfg, device, telemetry: Telemetry) -> None:
    hp, flags = cfg.hp, cfg.flags
    seed_everything(hp.seed)
    env = make_vec_env(hp, flags)
    obs_space, n_actions = env.single_observation_space, int(env.single_action_space.n)
    learner = Learner(make_net(obs_space.shape, n_actions, hp.mlp_hidden).to(device), hp, flags, device)
    to_device = make_to_device(device, flags.pinned)
    replay = make_replay(hp, flags, obs_space.shape, obs_space.dtype, env.num_envs, device, to_device)
    select_actions = EpsilonGreedy(learner.net, n_actions, device, flags.no_grad, seed=hp.seed, to_device=to_device)
    rng = sampler(replay, hp.seed + 1)
    schedule = UpdateSchedule(hp, env.batch)
    telemetry.samples_per_update = schedule.batch_size
    profile = telemetry.profile

    obs, env_ids = env.reset(seed=hp.seed), np.arange(env.num_envs)
    taken = np.zeros(env.num_envs, np.int64)  # last action sent to each env
    replay.start(env_ids, obs)

    def iteration(engine: Engine, _):
        nonlocal obs, env_ids
        steps = engine.state.steps
        epsilon = epsilon_at(steps, hp.epsilon_start, hp.epsilon_final, hp.epsilon_steps)
        with profile("act"):
            actions = select_actions(obs, epsilon)
            taken[env_ids] = actions
        with profile("env"):
            env.send(actions, env_ids)
            result = env.recv()  # async backends: the envs that are ready, maybe others than sent
        with profile("replay_insert"):
            t = result.has_transition
            replay.add(taken[result.env_ids[t]], result.rewards[t], result.terminated[t],
                       result.next_obs[t], result.env_ids[t])
            if result.reset.any():
                replay.start(result.env_ids[result.reset], result.obs[result.reset])
        obs, env_ids = result.obs, result.env_ids
        engine.state.steps = steps = steps + int(t.sum())
        engine.state.epsilon = epsilon
        telemetry.episodes_ended(engine, result.episodes)
        return learn(steps, schedule, replay, rng, learner, profile, telemetry, to_device)

    try:
        run_engine(iteration, cfg, telemetry)
    finally:
        env.close()
