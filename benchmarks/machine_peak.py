"""This machine's matmul peak: the limit every run's GFLOP/s is judged against.

    python benchmarks/machine_peak.py [--device cpu] [--threads 1 2] [--dtypes fp32 bf16]
        [--size 1024] [--repeats 5] [--seconds 1.0] [--out DIR]

Square matmuls of --size on the device, per dtype and (CPU) torch thread count: `--repeats` runs
of about `--seconds` each, the best run's rate kept (the peak is what the machine can do, so the
best, not the mean; the spread is recorded beside it). FLOPs per matmul: 2 n^3. Writes
results/<machine-id>/machine_peak.json and .md; `fastdqn train` reads the JSON to put each run's
share of the peak of its dtype and thread count into the result's `compute` block. Measure on a
quiet machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rates(n: int, dtype: torch.dtype, device: torch.device, repeats: int, seconds: float) -> list[float]:
    """GFLOP/s of each of `repeats` runs of back-to-back n x n matmuls."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernel choice, page faults
        torch.mm(a, b, out=out)
    sync(device)
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    sync(device)
    per_call = max(time.perf_counter() - start, 1e-6)
    calls = max(1, int(seconds / per_call))
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        sync(device)
        rates.append(2 * n ** 3 * calls / (time.perf_counter() - start) / 1e9)
    return rates


def markdown(doc: dict) -> str:
    lines = [f"# Matmul peak: {doc['machine']}", "",
             f"{doc['timestamp']}, torch {doc['versions'].get('torch')}, {doc['cpu']}, square matmuls of "
             f"{doc['size']}, best of {doc['repeats']} runs of ~{doc['seconds']:g} s; load average before: "
             f"{doc['load_before']}, after: {doc['load_after']}", "",
             "| device | threads | dtype | GFLOP/s (best) | runs: min-max |", "|---|---|---|---|---|"]
    for p in doc["peaks"]:
        lines.append(f"| {p['device']} | {p['threads']} | {p['dtype']} | {p['gflops']:,.1f} | "
                     f"{min(p['runs']):,.1f}-{max(p['runs']):,.1f} |")
    return "\n".join(lines) + "\n"


def load() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts on the CPU (default: 1 up to the cores, doubling)")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--size", type=int, default=1024, help="side of the square matrices")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed run")
    parser.add_argument("--out", default="", help="output directory (default: results/<machine-id>/)")
    args = parser.parse_args()
    for name, value in (("--size", args.size), ("--repeats", args.repeats)):
        if value < 1:
            print(f"machine_peak: {name} {value}: expected at least 1", file=sys.stderr)
            return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"machine_peak: --device {args.device}: no CUDA device here", file=sys.stderr)
        return 2
    from fastdqn.results import benchmark_doc, cpu_model, write_benchmark

    cores = torch.get_num_threads()
    threads = args.threads or sorted({min(2 ** k, cores) for k in range(cores.bit_length() + 1)})
    if device.type == "cuda":
        threads = [torch.get_num_threads()]
    doc = {**benchmark_doc("machine_peak"), "device": device.type, "cpu": cpu_model(), "size": args.size,
           "repeats": args.repeats, "seconds": args.seconds, "load_before": load(), "peaks": []}
    default_threads = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            for dtype in args.dtypes:
                rates = matmul_rates(args.size, DTYPES[dtype], device, args.repeats, args.seconds)
                doc["peaks"].append({"device": device.type, "threads": t, "dtype": dtype, "gflops": max(rates),
                                     "median": statistics.median(rates), "runs": rates})
                print(f"{device.type} threads {t} {dtype}: {max(rates):,.1f} GFLOP/s", file=sys.stderr)
    finally:
        torch.set_num_threads(default_threads)
    doc["load_after"] = load()
    write_benchmark(doc, markdown(doc), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
