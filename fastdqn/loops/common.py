"""Pieces every loop shares."""
from __future__ import annotations

import itertools
import random

import numpy as np
import torch
from ignite.engine import Engine


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_engine(iteration, cfg, telemetry) -> None:
    """Run `iteration` on an ignite Engine with the run's telemetry until a stop rule ends it.
    Its data is an endless stream of None: the env drives the iterations, not a dataset."""
    engine = Engine(iteration)
    telemetry.attach(engine, cfg.run.logdir, cfg.run.progress)
    engine.run(itertools.repeat(None), epoch_length=None, max_epochs=1)
