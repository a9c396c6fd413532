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
from ..loss import dqn_loss, make_target, sync_target
from ..model import make_net
from ..replay import FrameReplay
from ..telemetry import Telemetry
from .common import RunState, seed_everything


def run(cfg, device: torch.device, telemetry: Telemetry) -> RunState:
    hp, flags = cfg.hp, cfg.flags
    seed_everything(hp.seed)
    env = make_vec_env(hp, num_envs=1)
    obs_space, n_actions = env.single_observation_space, int(env.single_action_space.n)
    net = make_net(obs_space.shape, n_actions, hp.mlp_hidden).to(device)
    tgt_net = make_target(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=hp.lr)
    replay = FrameReplay(hp.replay_size, obs_space.shape, obs_space.dtype, env.num_envs)
    select_actions = EpsilonGreedy(net, n_actions, device, flags.no_grad, seed=hp.seed)
    sample_rng = np.random.default_rng(hp.seed + 1)
    to_device = lambda a: torch.as_tensor(a).to(device, non_blocking=True)

    obs = env.reset(seed=hp.seed)
    replay.start(np.arange(env.num_envs), obs)
    state = RunState(net=net, env=env)
    last_sync = 0

    def iteration(engine: Engine, _):
        nonlocal obs, last_sync
        steps = engine.state.steps
        epsilon = epsilon_at(steps, hp.epsilon_start, hp.epsilon_final, hp.epsilon_steps)
        actions = select_actions(obs, epsilon)                                   # act
        result = env.step(actions)                                               # step
        replay.add(actions, result.rewards, result.terminated, result.next_obs)  # store
        done = np.flatnonzero(result.terminated | result.truncated)
        if len(done):
            replay.start(done, result.obs[done])
        obs = result.obs
        engine.state.steps = steps + env.num_envs
        engine.state.epsilon = epsilon
        telemetry.episodes_ended(engine, result.episodes)
        if len(replay) < hp.replay_initial:
            return None
        batch = [to_device(a) for a in replay.sample(hp.batch_size, sample_rng)]  # sample
        loss = dqn_loss(net, tgt_net, *batch, gamma=hp.gamma, no_grad=flags.no_grad, kind=hp.loss)
        optimizer.zero_grad()                                                    # learn
        loss.backward()
        optimizer.step()
        if engine.state.steps - last_sync >= hp.target_sync_steps:              # sync
            sync_target(net, tgt_net)
            last_sync = engine.state.steps
        return loss.item()

    engine = Engine(iteration)
    telemetry.attach(engine, cfg.run.logdir, cfg.run.progress)
    state.engine = engine
    try:
        engine.run(state.forever(), epoch_length=None, max_epochs=1)
    finally:
        env.close()
    return state
