"""Env-only ceiling of ale-py's vector env on all cores: agent steps per second of real Pong
through fastdqn's `AleVecEnv` (the ale_sync / ale_async backends), sync and async, for N envs.

    python benchmarks/ale_vector_speed.py [--envs 16,32,64] [--threads 0] [--seconds 2] [--out-dir DIR]

Per N and mode: one env (async: recv returns N/2 envs, as the presets' default), reset, a warm-up
of --warmup agent steps, then --repeats timed runs of about --seconds each, driven through the
vector contract with uniformly random actions (benchmarks/test_env_speed.py's Driver: only rows
with a transition count). --threads 0 gives ale-py one thread per core. No network, no replay:
the most agent steps per second any loop on this backend can reach. Writes
results/<machine-id>/<name>.{json,md} (--out-dir to write elsewhere).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from test_env_speed import Driver  # noqa: E402

from fastdqn.config import Hyperparams  # noqa: E402
from fastdqn.envs.backends import AleVecEnv  # noqa: E402
from fastdqn.results import benchmark_doc, write_benchmark  # noqa: E402


def measure(n: int, mode: str, args) -> dict:
    batch = n if mode == "sync" else max(1, n // 2)
    vec = AleVecEnv(Hyperparams(), n, batch, num_threads=args.threads)
    try:
        driver = Driver(vec, seed=args.seed)
        driver.run(args.warmup)
        start = time.perf_counter()
        done = driver.run(args.warmup)
        per_step = (time.perf_counter() - start) / done
        steps = max(args.warmup, round(args.seconds / per_step))
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = driver.run(steps)
            rates.append(done / (time.perf_counter() - start))
    finally:
        vec.close()
    mean = statistics.fmean(rates)
    return {"envs": n, "mode": mode, "batch": batch, "steps_per_repeat": steps, "agent_steps_per_s": mean,
            "agent_steps_per_s_std": statistics.pstdev(rates), "frames_per_s": mean * Hyperparams().frame_skip,
            "rates": rates}


def table(doc: dict) -> str:
    lines = ["# ale-py vector env: env-only ceiling (Pong, random actions)", "",
             f"Machine `{doc['machine_id']}` ({doc['hardware']['cpu']}, {doc['hardware']['cores']} cores), "
             f"ale-py {doc['versions']['ale_py']}, ale-py threads: {doc['threads'] or 'one per core'}, {doc['timestamp']}.",
             "", f"fastdqn's AleVecEnv (84x84 gray, stack 4, frame skip 4) driven with random actions; per cell a "
                 f"warm-up, then {doc['repeats']} runs of ~{doc['seconds']} s; async returns half of the envs per "
                 f"recv. 1-minute load average before: {doc['loadavg'][0]:.1f}.", "",
             "| envs | mode | batch | agent steps/s | +- std | frames/s |", "|---:|---|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        lines.append(f"| {r['envs']} | {r['mode']} | {r['batch']} | {r['agent_steps_per_s']:,.0f} | "
                     f"{r['agent_steps_per_s_std']:,.0f} | {r['frames_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="16,32,64", help="comma-separated numbers of envs")
    parser.add_argument("--modes", default="sync,async")
    parser.add_argument("--threads", type=int, default=0, help="ale-py threads (0: one per core)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of one timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=200, help="agent steps before the runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="", help="default: results/<machine-id>")
    parser.add_argument("--name", default="ale_vector_speed")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if set(modes) - {"sync", "async"}:
        parser.error(f"--modes {args.modes!r}: expected sync and/or async")
    loadavg = list(os.getloadavg())
    rows = []
    for n in (int(x) for x in args.envs.split(",")):
        for mode in modes:
            rows.append(measure(n, mode, args))
            print(f"N={n:>3} {mode:>5}: {rows[-1]['agent_steps_per_s']:>10,.0f} agent steps/s", flush=True)
    doc = {**benchmark_doc("ale_vector_speed"), "threads": args.threads, "seconds": args.seconds,
           "repeats": args.repeats, "warmup": args.warmup, "loadavg": loadavg, "rows": rows}
    write_benchmark(doc, table(doc), args.out_dir, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
