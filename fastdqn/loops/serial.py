"""fastdqn's serial loop: act, step, store, sample, learn, sync, all in one process.

With the book's settings one iteration is one env step and, after the replay warm-up, one SGD
step of batch 32: the chapter's baseline (and slow_grads with the no_grad flag off).
"""
from __future__ import annotations

import numpy as np
import torch
from ignite.engine import Engine

from ..agent import EpsilonGreedy, epsilon_at
from ..envs import make_vec_env
from ..loss import make_target, sgd_step, sync_target
from ..model import make_net
from ..replay import FrameReplay
from ..telemetry import Telemetry
from .common import run_engine, seed_everything


def run(cfg, device: torch.device, telemetry: Telemetry) -> None:
    hp, flags = cfg.hp, cfg.flags
    seed_everything(hp.seed)
    env = make_vec_env(hp, flags)
    obs_space, n_actions = env.single_observation_space, int(env.single_action_space.n)
    net = make_net(obs_space.shape, n_actions, hp.mlp_hidden).to(device)
    tgt_net = make_target(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=hp.lr)
    replay = FrameReplay(hp.replay_size, obs_space.shape, obs_space.dtype, env.num_envs)
    select_actions = EpsilonGreedy(net, n_actions, device, flags.no_grad, seed=hp.seed)
    sample_rng = np.random.default_rng(hp.seed + 1)
    batch_size = hp.batch_size * env.batch  # flag site: envs (the book's batch 32 x N per round of N steps)
    telemetry.samples_per_update = batch_size
    to_device = lambda a: torch.as_tensor(a).to(device, non_blocking=True)
    profile = telemetry.profile

    obs, env_ids = env.reset(seed=hp.seed), np.arange(env.num_envs)
    taken = np.zeros(env.num_envs, np.int64)  # last action sent to each env
    replay.start(env_ids, obs)
    last_sync = 0

    def iteration(engine: Engine, _):
        nonlocal obs, env_ids, last_sync
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
        engine.state.steps = steps + int(t.sum())
        engine.state.epsilon = epsilon
        telemetry.episodes_ended(engine, result.episodes)
        if len(replay) < hp.replay_initial:
            return None
        with profile("replay_sample"):
            batch = replay.sample(batch_size, sample_rng)
        with profile("copy"):
            batch = [to_device(a) for a in batch]
        with profile("learn"):
            loss = sgd_step(net, tgt_net, optimizer, batch, hp.gamma, flags.no_grad, hp.loss)
            if engine.state.steps - last_sync >= hp.target_sync_steps:
                sync_target(net, tgt_net)
                last_sync = engine.state.steps
            return loss.item()

    try:
        run_engine(iteration, cfg, telemetry)
    finally:
        env.close()
