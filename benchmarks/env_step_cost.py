"""Env-only cost of one agent step through fastdqn's own env stack, one env, random actions, for
each env id given: what a training run pays for the env alone before any network runs.

    python benchmarks/env_step_cost.py [--steps 2000] [--rounds 3] [ENV_ID ...]
                                       # default: PongNoFrameskip-v4 CarRacing-v3

Each round steps one env (envs/atari.make_env: the baseline's DeepMind stack for Atari, the
carracing preprocessing for CarRacing-v3) for --steps agent steps, resetting at episode ends;
the best round counts. Prints a markdown table (agent steps/s, ms per agent step, emulator or
physics frames per agent step) to stdout.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastdqn.config import build_config, check_env_id  # noqa: E402
from fastdqn.envs import frames_per_step  # noqa: E402
from fastdqn.envs.atari import make_env  # noqa: E402
from fastdqn.errors import UsageError  # noqa: E402


def steps_per_second(cfg, steps: int, rounds: int, seed: int = 0) -> float:
    env = make_env(cfg.hp, cfg.flags.wrappers)
    try:
        env.action_space.seed(seed)
        env.reset(seed=seed)
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(steps):
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if terminated or truncated:
                    env.reset()
            best = max(best, steps / (time.perf_counter() - start))
        return best
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("envs", nargs="*", default=["PongNoFrameskip-v4", "CarRacing-v3"])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        print(f"env_step_cost: --steps {args.steps} / --rounds {args.rounds}: expected >= 1", file=sys.stderr)
        return 2
    rows = ["| env | agent steps/s | ms per agent step | frames per agent step |", "|---|---:|---:|---:|"]
    for env_id in args.envs:
        try:
            check_env_id(env_id)
            cfg = build_config(None, None, {"env": env_id})
            rate = steps_per_second(cfg, args.steps, args.rounds)
            frames = frames_per_step(cfg.hp)
        except UsageError as e:
            print(f"env_step_cost: {e}", file=sys.stderr)
            return 2
        rows.append(f"| {env_id} | {rate:,.1f} | {1000 / rate:.2f} | {frames} |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
