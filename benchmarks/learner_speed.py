"""Updates per second of Learner.update for each learner speed flag, at several batch sizes.

    python benchmarks/learner_speed.py [--device auto] [--batch-sizes 32 128 512]
        [--settings eager foreach fused compile cuda_graph bf16] [--seconds-per-cell 5]
        [--repeats 5] [--warmup 5] [--double] [--threads N] [--max-seconds S] [--out DIR] [--name STEM]

Times the learner alone: NatureDQN (4 stacked 84x84 frames, Pong's 6 actions) and one random
Pong-shaped uint8 batch already on the device, updated again and again. Per cell (setting x batch
size): a fresh net and Learner, `--warmup` updates not timed (compiling, capturing, allocator and
cuDNN warm-up), then `--repeats` runs of N updates each, the device synchronized before the clock
is read, N sized so that the runs of a cell take about `--seconds-per-cell` together. Records the
mean and spread over the runs. Two figures per cell: `pipelined` syncs once per run, so the host
queues updates ahead of the GPU (a ceiling no training loop reaches); `synced` reads the loss
after every update (`loss.item()`, one host sync per update, as the loops did), each run sized
alike. On the CPU both are the same work. A setting joins flags with '+': compile+fused, cuda_graph+bf16.
Settings the device cannot run (cuda_graph on the CPU) are recorded as skipped, and so are the
cells left when --max-seconds has passed (the file is written with what was measured).

Writes results/<machine-id>/learner_speed.json and learner_speed.md (or into --out, named --name). Measure on a
quiet machine: other processes on the same cores or GPU make the numbers meaningless.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

SETTINGS = {  # name -> Flags changes; combined with '+'
    "eager": {}, "foreach": {"adam": "foreach"}, "fused": {"adam": "fused"},
    "compile": {"compile": True}, "cuda_graph": {"cuda_graph": True}, "bf16": {"bf16": True},
}
N_ACTIONS, OBS_SHAPE = 6, (4, 84, 84)  # Pong


def setting_flags(setting: str):
    from fastdqn.config import Flags
    changes = {}
    for part in setting.split("+"):
        if part not in SETTINGS:
            raise SystemExit(f"unknown setting part {part!r} in {setting!r}: expected {', '.join(SETTINGS)}")
        changes.update(SETTINGS[part])
    return dataclasses.replace(Flags(), **changes)


def pong_batch(size: int, device: torch.device, seed: int = 0) -> tuple:
    from fastdqn.loss import discounts_of
    g = torch.Generator().manual_seed(seed)
    obs, next_obs = torch.randint(0, 256, (2, size, *OBS_SHAPE), generator=g, dtype=torch.uint8)
    batch = (obs, torch.randint(0, N_ACTIONS, (size,), generator=g), torch.randint(-1, 2, (size,), generator=g).float(),
             discounts_of(torch.rand(size, generator=g) < 0.01, 0.99), next_obs)
    return tuple(t.to(device) for t in batch)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_cell(setting: str, batch_size: int, device: torch.device, args) -> dict:
    from fastdqn.config import Hyperparams, check_flags
    from fastdqn.errors import UsageError
    from fastdqn.learner import Learner
    from fastdqn.model import NatureDQN
    cell = {"setting": setting, "batch_size": batch_size}
    flags = setting_flags(setting)
    try:
        check_flags(flags, device)
    except UsageError as e:
        return {**cell, "skipped": str(e)}
    torch._dynamo.reset()  # each compiled cell compiles afresh (and no recompile limit builds up)
    torch.manual_seed(0)
    hp = Hyperparams(double=args.double)  # Double DQN: one more forward pass per sample (s' through the online net)
    learner = Learner(NatureDQN(OBS_SHAPE[0], N_ACTIONS).to(device), hp, flags, device)
    batch = pong_batch(batch_size, device)
    start = time.perf_counter()
    for _ in range(args.warmup):
        learner.update(batch)
    sync(device)
    warmup_s = time.perf_counter() - start
    # size the runs from a few synchronized updates after the warm-up
    start = time.perf_counter()
    for _ in range(3):
        learner.update(batch)
    sync(device)
    per_update = (time.perf_counter() - start) / 3
    n = max(1, round(args.seconds_per_cell / 2 / args.repeats / per_update))

    def timed(read_loss: bool) -> list[float]:
        runs = []
        for _ in range(args.repeats):
            sync(device)
            start = time.perf_counter()
            for _ in range(n):
                loss = learner.update(batch)
                if read_loss:
                    loss.item()
            sync(device)
            runs.append(n / (time.perf_counter() - start))
        return runs

    def stats(runs: list[float]) -> dict:
        return {"mean": statistics.fmean(runs), "std": statistics.stdev(runs) if len(runs) > 1 else 0.0,
                "min": min(runs), "max": max(runs), "runs": runs}
    pipelined, synced = stats(timed(False)), stats(timed(True))
    return {**cell, "updates_per_second": pipelined, "updates_per_second_synced": synced,
            "samples_per_second": pipelined["mean"] * batch_size, "updates_per_run": n, "warmup_seconds": warmup_s}


def markdown(result: dict) -> str:
    sizes = result["batch_sizes"]
    eager = {c["batch_size"]: c["updates_per_second"]["mean"] for c in result["cells"]
             if c["setting"] == "eager" and "skipped" not in c}
    lines = [f"# Learner updates per second: {result['device_name']} ({result['device']}), "
             f"torch {result['versions']['torch']}",
             "",
             f"NatureDQN, Pong-shaped uint8 batches on the device; mean ± std over {result['repeats']} runs of "
             f"about {result['seconds_per_cell'] / 2 / result['repeats']:.2g} s each per figure, after "
             f"{result['warmup']} warm-up updates; (xN): speed-up over eager at the same batch size. torch threads: "
             f"{result['torch_threads']}; loss: {'Double DQN' if result.get('double') else 'DQN'}. Pipelined: one sync per run, the host queues updates ahead of the device "
             f"(a ceiling); synced: the loss read after every update (one host sync per update).",
             "",
             "| setting | " + " | ".join(f"batch {b} pipelined | batch {b} synced" for b in sizes) + " |",
             "|---|" + "---:|" * 2 * len(sizes)]
    for setting in result["settings"]:
        row = []
        for b in sizes:
            c = next(c for c in result["cells"] if c["setting"] == setting and c["batch_size"] == b)
            if "skipped" in c:
                row += ["skipped", "skipped"]
                continue
            for key in ("updates_per_second", "updates_per_second_synced"):
                ups = c[key]
                ratio = f" (x{ups['mean'] / eager[b]:.2f})" if b in eager and key == "updates_per_second" else ""
                row.append(f"{ups['mean']:.4g} ± {ups['std']:.2g}{ratio}")
        lines.append(f"| {setting} | " + " | ".join(row) + " |")
    skipped = sorted({c["skipped"] for c in result["cells"] if "skipped" in c})
    lines += [""] + [f"Skipped: {s}." for s in skipped]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--settings", nargs="+", default=None,
                        help="default: eager foreach fused compile bf16, and cuda_graph on CUDA")
    parser.add_argument("--seconds-per-cell", type=float, default=5.0, help="timed seconds per setting x batch size")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (the spread is over these)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates per cell before the runs")
    parser.add_argument("--double", action="store_true", help="the Double DQN loss (solve_recipe's)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="start no cell after this many seconds (0 = no limit); the rest are recorded as skipped")
    parser.add_argument("--out", default="", help="output directory (default: results/<machine-id>/)")
    parser.add_argument("--name", default="learner_speed", help="file name stem of the JSON and table")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 1 or args.seconds_per_cell <= 0:
        parser.error("--repeats and --warmup must be >= 1, --seconds-per-cell > 0")

    from fastdqn.results import benchmark_doc, cpu_model, cuda_math, write_benchmark
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = args.settings or (["eager", "foreach", "fused", "compile", "bf16"]
                                 + (["cuda_graph"] if device.type == "cuda" else []))
    for s in settings:
        setting_flags(s)  # unknown names fail before any measuring
    cells = []
    start = time.monotonic()
    for setting in settings:
        for b in args.batch_sizes:
            if args.max_seconds and time.monotonic() - start > args.max_seconds:
                cell = {"setting": setting, "batch_size": b, "skipped": f"time budget of {args.max_seconds:g} s spent"}
            else:
                cell = measure_cell(setting, b, device, args)
            cells.append(cell)
            if "skipped" in cell:
                print(f"{setting:>20} batch {b:4d}: skipped ({cell['skipped']})", file=sys.stderr)
            else:
                ups = cell["updates_per_second"]
                print(f"{setting:>20} batch {b:4d}: {ups['mean']:9.2f} ± {ups['std']:.2f} updates/s "
                      f"(warm-up {cell['warmup_seconds']:.1f} s)", file=sys.stderr)
    result = {
        **benchmark_doc("learner_speed"), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "torch_threads": torch.get_num_threads(), "double": args.double, "net": f"NatureDQN({OBS_SHAPE[0]}, {N_ACTIONS})",
        "obs_shape": list(OBS_SHAPE), "batch_sizes": args.batch_sizes, "settings": settings,
        "seconds_per_cell": args.seconds_per_cell, "repeats": args.repeats, "warmup": args.warmup,
        "definition": "Learner.update calls per second on one batch already on the device, device "
                      "synchronized before each clock read, warm-up updates excluded; updates_per_second is "
                      "pipelined (one sync per run), updates_per_second_synced reads the loss after each update",
        "cuda_math": cuda_math(),
        "cells": cells,
    }
    write_benchmark(result, markdown(result), args.out, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
