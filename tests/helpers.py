"""Helpers shared by several test files (pytest puts tests/ on sys.path)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import time

import torch
from torch import nn

from fastdqn.config import Hyperparams


def hparams(**changes) -> Hyperparams:
    return dataclasses.replace(Hyperparams(), **changes)


def play(env, seed: int, actions) -> tuple[list, list]:
    """Reset with `seed`, step `actions`; observations (reset obs first) and step rewards."""
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, r, terminated, truncated, _ = env.step(int(a))
        observations.append(obs)
        rewards.append(r)
        if terminated or truncated:
            break
    return observations, rewards


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout
    return bool(state.strip()) and not state.strip().startswith("Z")


def linear(weight, bias) -> nn.Linear:
    """A 2x2 linear layer with the given weights: Q-values that can be worked out by hand."""
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        lin.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return lin
