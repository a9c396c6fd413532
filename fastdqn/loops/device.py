"""The device-resident loop: torch_pong, the replay and action selection all live on the torch
device, so nothing in the hot path is copied between host and device (its `copy` phase stays 0).

One iteration is one batched step of all N games (N agent steps), then the updates the schedule
owes. What reaches the host: which games ended, their returns and lengths, and the loss, copied
without blocking and read one iteration later (HostReadback), so the host queues the next
iteration while the device still runs this one and no operation waits for the device.
"""
from __future__ import annotations

import numpy as np
import torch
from ignite.engine import Engine

from ..agent import EpsilonGreedy, epsilon_at
from ..envs.torch_pong import make_torch_pong
from ..learner import Learner
from ..model import make_net
from ..replay import FrameReplay
from ..schedule import UpdateSchedule
from ..telemetry import Telemetry
from .collect import Collector
from .common import learn, run_engine, seed_everything


class HostReadback:
    """The host's view of a device step, one iteration late: push() queues a non-blocking copy of
    the step's ended games (mask, returns, lengths) and the loss into one page-locked buffer and
    records an event; pop() (the next iteration, after its work is queued) waits on that event,
    i.e. for the previous iteration only, and reads the buffer. On the CPU the copy is a plain
    one and the same code runs."""

    def __init__(self, num_envs: int, device: torch.device):
        self.n, self.cuda = num_envs, device.type == "cuda"
        self.buf = torch.zeros(3 * num_envs + 1, dtype=torch.float64, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.pending = self.has_loss = False

    def push(self, step, loss: torch.Tensor | None) -> None:
        last = loss.detach().reshape(1) if loss is not None else step.episode_returns[:1]
        packed = torch.cat([step.done.double(), step.episode_returns.double(), step.episode_lengths.double(),
                            last.double()])
        self.buf.copy_(packed, non_blocking=self.cuda)
        if self.cuda:
            self.event.record()
        self.pending, self.has_loss = True, loss is not None

    def pop(self) -> tuple[list[tuple[int, float, int]], float | None]:
        """(env index, return, length) of the games that ended in the pushed step, and its loss
        (None if no update ran)."""
        if not self.pending:
            return [], None
        if self.cuda:
            self.event.synchronize()
        a, n = self.buf.numpy(), self.n
        episodes = [(int(i), float(a[n + i]), int(a[2 * n + i])) for i in np.flatnonzero(a[:n])]
        self.pending = False
        return episodes, float(a[3 * n]) if self.has_loss else None


def run(cfg, device: torch.device, telemetry: Telemetry) -> None:
    hp, flags = cfg.hp, cfg.flags
    seed_everything(hp.seed)
    env = make_torch_pong(hp, flags.envs, device, flags.compile_env)  # flag site: envs (the games on the device)
    obs_shape, n_actions = env.single_observation_space.shape, int(env.single_action_space.n)
    learner = Learner(make_net(obs_shape, n_actions, hp.mlp_hidden, hp.dueling).to(device), hp, flags, device)
    replay = FrameReplay(hp.replay_size, obs_shape, torch.uint8, env.num_envs, hp.gamma, hp.n_step, device)
    policy = EpsilonGreedy(learner.net, n_actions, device, flags.no_grad, seed=hp.seed)
    collector = Collector(env, policy, replay, telemetry.profile, hp.seed)
    rng = torch.Generator(device).manual_seed(hp.seed + 1)
    schedule = UpdateSchedule(hp, env.num_envs)
    telemetry.samples_per_update = schedule.batch_size
    telemetry.track_net(learner.net, obs_shape, torch.uint8, n_actions, hp)
    readback = HostReadback(env.num_envs, device)

    def iteration(engine: Engine, _):
        epsilon = epsilon_at(collector.steps, hp.epsilon_start, hp.epsilon_final, hp.epsilon_steps)
        step = collector.round(epsilon)
        loss = learn(collector.steps, schedule, replay, rng, learner, telemetry.profile, telemetry)
        with telemetry.profile("env"):  # the only device-to-host traffic: the step before's, read now
            episodes, last_loss = readback.pop()
            readback.push(step, loss)
        telemetry.episodes_ended(engine, episodes)  # at state.steps of the step they ended in
        engine.state.steps, engine.state.epsilon = collector.steps, epsilon
        return last_loss

    run_engine(iteration, cfg, telemetry)
