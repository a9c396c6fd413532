"""Env-only throughput of torch_pong: agent steps per second of `TorchPong.step` for N games.

    python benchmarks/torch_pong_speed.py                                  # CPU, N = 1, 64, 1024
    python benchmarks/torch_pong_speed.py --device cuda --envs 1,64,1024,8192,65536
    python benchmarks/torch_pong_speed.py --compiled                       # the compile_env step

Random actions are drawn on the device (no host copy in the loop). Per N: warm-up steps (not
timed), then --repeats timed runs of about --seconds each, the device synchronized before each
clock read. Reports agent steps/s (N x steps / time: mean, std, min, max over the repeats) and
emulator frames/s (x frame skip), prints a markdown table and writes it with the JSON to
results/<machine-id>/<name>.{json,md} (--out-dir to write elsewhere).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastdqn.envs.torch_pong import TorchPong  # noqa: E402
from fastdqn.results import benchmark_doc, write_benchmark  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(n: int, device: torch.device, args) -> dict:
    env = TorchPong(n, device, stack=args.stack, frame_skip=args.frame_skip, size=args.size, points=args.points,
                    compiled=args.compiled)
    env.reset(args.seed)
    gen = torch.Generator(device=device).manual_seed(args.seed)

    def run(steps: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            env.step(torch.randint(0, 6, (n,), device=device, generator=gen))
        sync(device)
        return time.perf_counter() - start

    if args.compiled:
        run(1)  # the compile, kept out of the warm-up that sizes the runs
    per_step = run(args.warmup) / args.warmup  # warm-up: allocator, caches, kernels; sizes the runs
    steps = max(args.min_steps, round(args.seconds / per_step))
    rates = [n * steps / run(steps) for _ in range(args.repeats)]
    mean = statistics.fmean(rates)
    return {"envs": n, "steps_per_repeat": steps, "repeats": args.repeats,
            "agent_steps_per_s": mean, "agent_steps_per_s_std": statistics.pstdev(rates),
            "agent_steps_per_s_min": min(rates), "agent_steps_per_s_max": max(rates),
            "frames_per_s": mean * args.frame_skip, "ms_per_step": 1e3 * n / mean, "rates": rates}


def table(doc: dict) -> str:
    cfg = doc["config"]
    lines = [
        "# torch_pong env-only throughput",
        "",
        f"Machine `{doc['machine_id']}`, device `{doc['device']}` ({doc['device_name']}), "
        f"{doc['torch_threads']} torch CPU threads, torch {doc['versions']['torch']}, {doc['timestamp']}.",
        "",
        f"`TorchPong.step` ({'compiled: `compile_env`' if cfg.get('compiled') else 'eager'}) with uniformly "
        f"random actions drawn on the device; frames {cfg['size']}x{cfg['size']}, "
        f"stack {cfg['stack']}, frame skip {cfg['frame_skip']}. Per N: {doc['warmup']} warm-up steps, then "
        f"{doc['repeats']} timed repeats of ~{doc['seconds']} s (device synchronized before each clock read). "
        f"Agent steps/s = N x steps / time (mean +- std over the repeats); frames/s = x frame skip. "
        f"1-minute load average before the run: {doc['loadavg'][0]:.1f}.",
        "",
        "| envs | agent steps/s | +- std | frames/s | ms per step (all envs) | steps timed per repeat |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(f"| {r['envs']:,} | {r['agent_steps_per_s']:,.0f} | {r['agent_steps_per_s_std']:,.0f} | "
                     f"{r['frames_per_s']:,.0f} | {r['ms_per_step']:.3f} | {r['steps_per_repeat']:,} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="1,64,1024", help="comma-separated numbers of games N")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="target duration of one timed repeat")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before the repeats")
    parser.add_argument("--min-steps", type=int, default=10, help="timed steps per repeat at least")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--stack", type=int, default=4)
    parser.add_argument("--frame-skip", type=int, default=4)
    parser.add_argument("--points", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compiled", action="store_true",
                        help="step through torch.compile (the compile_env flag); the compile is not timed")
    parser.add_argument("--out-dir", default="", help="default: results/<machine-id>")
    parser.add_argument("--name", default="torch_pong_speed", help="file name stem of the JSON and table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    loadavg = list(os.getloadavg())
    rows = []
    for n in (int(x) for x in args.envs.split(",")):
        rows.append(measure(n, device, args))
        r = rows[-1]
        print(f"N={n:>6}: {r['agent_steps_per_s']:>14,.0f} agent steps/s (+-{r['agent_steps_per_s_std']:,.0f}), "
              f"{r['frames_per_s']:>14,.0f} frames/s", flush=True)
    doc = benchmark_doc("torch_pong_speed")
    doc.update({
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else doc["hardware"]["cpu"],
        "torch_threads": torch.get_num_threads(), "loadavg": loadavg, "warmup": args.warmup,
        "repeats": args.repeats, "seconds": args.seconds,
        "config": {"size": args.size, "stack": args.stack, "frame_skip": args.frame_skip,
                   "points": args.points, "seed": args.seed, "compiled": args.compiled},
        "rows": rows})
    md = table(doc)
    print(md)
    write_benchmark(doc, md, args.out_dir, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
