"""The act / step / store round that every fastdqn loop runs: the serial loop, the device loop
and each parallel player (ptan's reference loop keeps ptan's own)."""
from __future__ import annotations

import numpy as np
import torch

from ..replay import TransitionSink


def store(sink: TransitionSink, result, taken) -> None:
    """Store one recv: the transitions of the rows that have one (their action: taken[env], the
    last one sent to that env), then the episodes that start in it."""
    if result.has_transition is None:  # every env stepped, same-step autoreset (torch_pong): masks, no sync
        sink.add(taken, result.rewards, result.terminated, result.next_obs)
        sink.start_where(result.reset, result.obs)
        return
    t = result.has_transition
    ids = result.env_ids[t]
    sink.add(taken[ids], result.rewards[t], result.terminated[t], result.next_obs[t], ids)
    if result.reset.any():
        sink.start(result.env_ids[result.reset], result.obs[result.reset])


class Collector:
    """Acts on the envs that are ready, steps them and stores what they return in `sink`.

    env: a host vector env (envs/vector.py: numpy StepResults; async backends return the envs that
    are ready, maybe others than were sent) or TorchPong (tensors on its device, every game every
    step). `steps` counts the agent steps stored (a host count, no sync)."""

    def __init__(self, env, policy, sink: TransitionSink, profile, seed: int):
        self.env, self.policy, self.sink, self.profile = env, policy, sink, profile
        self.obs = env.reset(seed=seed)
        n = env.num_envs
        self.env_ids = torch.arange(n, device=self.obs.device) if isinstance(self.obs, torch.Tensor) else np.arange(n)
        self.taken = self.env_ids * 0  # the last action sent to each env
        self.steps = 0
        sink.start(self.env_ids, self.obs)

    def round(self, epsilon: float):
        """One round; returns the env's step result (its episodes are the caller's to log)."""
        with self.profile("act"):
            actions = self.policy(self.obs, epsilon)
            self.taken[self.env_ids] = actions
        with self.profile("env"):
            self.env.send(actions, self.env_ids)
            result = self.env.recv()
        with self.profile("replay_insert"):
            store(self.sink, result, self.taken)
        self.obs, self.env_ids = result.obs, result.env_ids
        t = result.has_transition
        self.steps += len(result.rewards) if t is None else int(t.sum())
        return result
