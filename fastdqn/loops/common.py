"""Pieces every loop shares."""
from __future__ import annotations

import itertools
import random

import numpy as np
import torch
from ignite.engine import Events

from ..lifecycle import quiet_engine, stop_point


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_engine(iteration, cfg, telemetry) -> None:
    """Run `iteration` on an ignite Engine with the run's telemetry until a stop rule ends it.
    Its data is an endless stream of None: the env drives the iterations, not a dataset."""
    # CUDA math (recorded in the result, results.cuda_math): every loop runs fixed shapes (the act
    # batch, the update batch), so cuDNN's autotuner pays once per shape; TF32 stays at torch's
    # defaults (convolutions in TF32 through cuDNN, matmuls fp32: the fc layers are small)
    torch.backends.cudnn.benchmark = True
    engine = quiet_engine(iteration)
    telemetry.attach(engine, cfg.run.logdir, cfg.run.progress and cfg.run.progress_every)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: stop_point())  # counted, then stopped
    engine.run(itertools.repeat(None), epoch_length=None, max_epochs=1)


def learn(steps: int, schedule, replay, rng, learner, profile, telemetry, to_device=None):
    """The updates `schedule` owes once `steps` agent steps are stored, then the target sync when
    it is due. Batches from a host replay go to the device through `to_device`; a device replay's
    are there already (no copy phase). Returns the last loss as a device tensor (no host sync;
    telemetry reads it when it logs), None when no update ran."""
    n = schedule.due(steps)
    loss = None
    for _ in range(n):
        with profile("replay_sample"):
            if replay.prioritized:  # PrioritizedReplay (make_replay: priority_alpha)
                replay.anneal(steps)
            batch = replay.sample(schedule.batch_size, rng)
        if isinstance(batch[0], np.ndarray):
            with profile("copy"):
                batch = [to_device(a) for a in batch]
        with profile("learn"):
            loss = learner.update(batch)
        if replay.prioritized:  # the batch's TD errors are its new priorities (a host read: CPU replay)
            with profile("replay_sample"):
                loss, td = loss
                replay.update_priorities(td.float().cpu().numpy())
    if n and schedule.sync_due(steps):
        with profile("learn"):
            learner.sync_target()
    telemetry.updates += n
    return None if loss is None else loss.detach()
