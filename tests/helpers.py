"""Helpers shared by several test files (pytest puts tests/ on sys.path)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import time

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
