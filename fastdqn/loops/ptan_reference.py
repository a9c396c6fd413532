"""The book's reference pipeline: the same experiment through ptan's own wrap_dqn, DQNAgent,
ExperienceSourceFirstLast and ExperienceReplayBuffer (imported, never copied: ptan is GPL-3).
The loss, optimizer, schedules and telemetry are fastdqn's, so only the pipeline differs.
ptan's agent always selects actions under no_grad; the no_grad flag still governs the target net.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from ignite.engine import Engine

from ..agent import epsilon_at
from ..envs import is_atari
from ..errors import UsageError
from ..loss import discounts_of, sgd_step
from ..model import make_net
from ..telemetry import Telemetry
from .common import run_engine, seed_everything


def import_ptan():
    try:
        import ptan
        import ptan.common.wrappers  # needs stable-baselines3
    except ImportError as e:
        raise UsageError(f"loop 'ptan' needs the reference extra ({e}): "
                         "pip install 'fastdqn[ref]' && pip install --no-deps ptan==0.8.1") from None
    return ptan


def make_ptan_env(hp) -> gym.Env:
    ptan = import_ptan()
    if not is_atari(hp.env) or hp.frame_skip != 4:
        raise UsageError(f"loop 'ptan' runs Atari NoFrameskip envs with frame_skip 4, got env "
                         f"{hp.env!r}, frame_skip {hp.frame_skip}")
    env = gym.make(hp.env, repeat_action_probability=0.0, max_num_frames_per_episode=hp.max_episode_frames)
    env.reset(seed=hp.seed)  # wrap_dqn's stacking wrapper drops reset seeds: seed the base env once
    return ptan.common.wrappers.wrap_dqn(env, stack_frames=hp.stack, noop_max=hp.noop_max)


def unpack_batch(batch, device, gamma: float):
    """ExperienceFirstLast list -> tensors; last_state None marks episode ends (no bootstrap)."""
    obs = np.asarray([e.state for e in batch])
    actions = np.asarray([e.action for e in batch])
    rewards = np.asarray([e.reward for e in batch], dtype=np.float32)
    dones = np.asarray([e.last_state is None for e in batch])
    next_obs = np.asarray([e.state if e.last_state is None else e.last_state for e in batch])
    return [torch.as_tensor(a).to(device) for a in (obs, actions, rewards, discounts_of(dones, gamma), next_obs)]


def run(cfg, device: torch.device, telemetry: Telemetry) -> None:
    ptan = import_ptan()
    hp, flags = cfg.hp, cfg.flags
    seed_everything(hp.seed)  # ptan draws exploration and replay samples from np.random
    env = make_ptan_env(hp)
    net = make_net(env.observation_space.shape, int(env.action_space.n), hp.mlp_hidden, hp.dueling).to(device)
    tgt_net = ptan.agent.TargetNet(net)
    selector = ptan.actions.EpsilonGreedyActionSelector(epsilon=hp.epsilon_start)
    agent = ptan.agent.DQNAgent(net, selector, device=device)
    exp_source = ptan.experience.ExperienceSourceFirstLast(env, agent, gamma=hp.gamma, steps_count=1)
    buffer = ptan.experience.ExperienceReplayBuffer(exp_source, buffer_size=hp.replay_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=hp.lr, eps=hp.adam_eps)
    telemetry.samples_per_update = hp.batch_size
    telemetry.track_net(net, env.observation_space.shape, env.observation_space.dtype, int(env.action_space.n), hp)
    profile = telemetry.profile
    last_sync = 0

    def iteration(engine: Engine, _):
        nonlocal last_sync
        steps = engine.state.steps
        selector.epsilon = epsilon_at(steps, hp.epsilon_start, hp.epsilon_final, hp.epsilon_steps)
        with profile("env"):  # act + step + store happen inside ptan: one phase
            buffer.populate(1)
        engine.state.steps = steps + 1
        engine.state.epsilon = selector.epsilon
        telemetry.episodes_ended(engine, [(0, r, n) for r, n in exp_source.pop_rewards_steps()])
        if len(buffer) < hp.replay_initial:
            return None
        with profile("replay_sample"):
            batch = buffer.sample(hp.batch_size)
        with profile("copy"):
            batch = unpack_batch(batch, device, hp.gamma)
        with profile("learn"):
            loss = sgd_step(net, tgt_net.target_model, optimizer, batch, flags.no_grad, hp.loss)
            if engine.state.steps - last_sync >= hp.target_sync_steps:
                tgt_net.sync()
                last_sync = engine.state.steps
            telemetry.updates += 1
            return loss.item()

    try:
        run_engine(iteration, cfg, telemetry)
    finally:
        env.close()
