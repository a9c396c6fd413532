"""Pieces every loop shares."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class RunState:
    """What a loop hands back besides the telemetry."""
    net: Any = None
    env: Any = None
    engine: Any = None

    @staticmethod
    def forever():
        """The engine's data: iterations are driven by the env, not by a dataset."""
        return itertools.repeat(None)
