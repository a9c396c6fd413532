"""`fastdqn eval CHECKPOINT`: whole games played by a saved policy, apart from its training.

The training result judges a run on its training games (epsilon-greedy at its final epsilon,
weights changing between games); an evaluation plays the checkpoint's fixed network greedily
(epsilon 0 unless asked) on fresh seeds, with the training run's env stack. Games are split
evenly over the env copies and each env's first games are the ones counted, so parallel envs
do not favour the games that happen to end first (short ones).
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .agent import EpsilonGreedy
from .checkpoint import build_net, load_checkpoint
from .config import TORCH_PONG, build_config
from .errors import UsageError
from .results import write_json_atomic

SEED_OFFSET = 10_000  # eval games start from other seeds than the training run's envs


def eval_path(checkpoint: str | Path) -> Path:
    """Beside the checkpoint: runs/x/result.pt -> runs/x/result.eval.json."""
    return Path(checkpoint).with_suffix(".eval.json")


def quotas(episodes: int, envs: int) -> np.ndarray:
    """Games per env copy: as even as possible, the first envs one more."""
    return np.array([episodes // envs + (i < episodes % envs) for i in range(envs)])


def evaluate(checkpoint: str, episodes: int = 10, epsilon: float = 0.0, envs: int | None = None,
             backend: str | None = None, seed: int | None = None, out: str | None = None,
             progress: bool = True) -> dict:
    from .envs import make_vec_env
    if episodes < 1:
        raise UsageError(f"--episodes {episodes}: expected at least 1")
    if not 0.0 <= epsilon <= 1.0:
        raise UsageError(f"--epsilon {epsilon}: expected a value in [0, 1]")
    doc = load_checkpoint(checkpoint)
    saved = doc["config"]
    cfg = build_config(saved.get("preset"), None, {**saved["hyperparams"], **saved["flags"]})
    if cfg.hp.env == TORCH_PONG:
        raise UsageError("eval plays gymnasium envs; a torch_pong checkpoint is not supported yet")
    copies = min(envs or cfg.flags.envs, episodes)
    if copies < 1:
        raise UsageError(f"--envs {envs}: expected at least 1")
    backend = backend or cfg.flags.backend
    if backend == "ale_async":  # the sync twin: the same games, in a reproducible order
        backend = "ale_sync"
    if backend in ("ale_sync", "ale_async") and copies < 2:
        backend = "sequential"  # ALE's vector env for one env is the baseline stack's job
    flags = dataclasses.replace(cfg.flags, envs=copies, backend=backend, async_batch=0, parallel=False)
    seed = cfg.hp.seed + SEED_OFFSET if seed is None else seed
    out_path = Path(out) if out else eval_path(checkpoint)
    env = make_vec_env(cfg.hp, flags)
    games: list[dict] = []
    try:
        space = env.single_observation_space
        net = build_net(doc, space.shape, int(env.single_action_space.n)).eval()
        policy = EpsilonGreedy(net, int(env.single_action_space.n), torch.device("cpu"), True, seed=seed)
        play(env, policy, epsilon, quotas(episodes, copies), seed, games, progress)
    finally:  # a stop (Ctrl-C, SIGTERM) still writes the games ended so far, as interrupted
        env.close()
        result = write_eval(out_path, checkpoint, doc, cfg, backend, copies, epsilon, seed, episodes, games)
    return result


def play(env, policy, epsilon: float, quota: np.ndarray, seed: int, games: list, progress: bool) -> None:
    """Appends each env's first quota[env] games to `games`."""
    counted = np.zeros_like(quota)
    obs, ids = env.reset(seed=seed), np.arange(env.num_envs)
    start = time.monotonic()
    while (counted < quota).any():
        env.send(policy(obs, epsilon), ids)
        result = env.recv()
        obs, ids = result.obs, result.env_ids
        for env_id, score, length in result.episodes:
            if counted[env_id] < quota[env_id]:
                counted[env_id] += 1
                games.append({"env": int(env_id), "score": score, "steps": length})
                if progress:
                    print(f"game {len(games)}/{int(quota.sum())}: score {score:g} ({length:,} agent steps, "
                          f"{time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)


def write_eval(path: Path, checkpoint, doc, cfg, backend, copies, epsilon, seed, episodes, games) -> dict:
    scores = [g["score"] for g in games]
    result = {
        "kind": "eval", "checkpoint": str(checkpoint), "checkpoint_step": doc["step"], "env": cfg.hp.env,
        "backend": backend, "envs": copies, "epsilon": epsilon, "seed": seed,
        "episodes_asked": episodes, "episodes": len(games),
        "status": "completed" if len(games) == episodes else "interrupted",
        "mean": statistics.fmean(scores) if scores else None,
        "std": statistics.pstdev(scores) if scores else None,
        "min": min(scores) if scores else None, "max": max(scores) if scores else None,
        "scores": scores, "steps_per_game": [g["steps"] for g in games], "games": games,
        "config": doc["config"],
    }
    write_json_atomic(path, result)
    mean = "-" if not scores else f"{result['mean']:.2f}"
    print(f"eval: {path} ({len(games)} games, mean {mean})", file=sys.stderr)
    return result
