"""Env-only throughput table: run benchmarks/test_env_speed.py (or read its JSON) and write
results/<machine-id>/env_speed.md with the raw pytest-benchmark JSON beside it (env_speed.json).

    python benchmarks/env_table.py                      # run the benchmark here (~1-2 minutes)
    python benchmarks/env_table.py --json run.json      # tabulate an existing --benchmark-json file

The machine id is the one recorded in the JSON by the benchmark (fastdqn.results.machine_id() of
the machine that ran it), else this machine's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from test_env_speed import BASELINE_CELL, CELLS, cell_id  # noqa: E402


def run_benchmark(json_path: Path, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", str(HERE / "test_env_speed.py"), f"--benchmark-json={json_path}",
           "--benchmark-columns=min,median,max,rounds", *extra]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def cells_of(doc: dict) -> dict[tuple, dict]:
    """(backend, wrappers, envs) -> extra_info of the benchmarks that recorded a speed."""
    out = {}
    for bench in doc.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "steps_per_s" in info:
            out[(info["backend"], info["wrappers"], int(info["envs"]))] = info
    return out


def table(doc: dict, machine: str) -> str:
    cells = cells_of(doc)
    base = cells.get(BASELINE_CELL)
    infos = list(cells.values())
    mi = doc.get("machine_info", {})
    cpu = mi.get("cpu", {})
    lines = ["# Env-only throughput (Pong, random actions)", "",
             f"Machine `{machine}` ({cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} logical cores), "
             f"{doc.get('datetime', '?')}, Python {mi.get('python_version', '?')}."]
    if infos:
        rounds = next(b["stats"]["rounds"] for b in doc["benchmarks"] if "steps_per_s" in b.get("extra_info", {}))
        loads = [i["loadavg"][0] for i in infos if i.get("loadavg")]
        lines += ["", f"Agent steps/s = agent steps (rows with a transition) / median round time, "
                      f"{infos[0]['steps_per_round']:.0f} agent steps per round, {rounds} rounds after a "
                      f"warm-up round; frames/s = agent steps/s x frame skip ({infos[0]['frames_per_step']}). "
                      "\"vs baseline\": ratio to sequential / baseline wrappers / 1 env. "
                      f"1-minute load average during the run: {min(loads):.1f}-{max(loads):.1f} "
                      "(other processes may share the CPU: compare within one table)."]
    else:
        lines += ["", "No cell was measured."]
    lines += ["", "| backend | wrappers | envs | agent steps/s | frames/s | vs baseline | best round steps/s |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for cell in CELLS:
        backend, wrappers, envs = cell
        info = cells.get(cell)
        label = wrappers or "ALE (C++)"
        if info is None:
            lines.append(f"| {backend} | {label} | {envs} | not measured | | | |")
            continue
        sps = info["steps_per_s"]
        ratio = f"{sps / base['steps_per_s']:.2f}x" if base else "n/a"
        lines.append(f"| {backend} | {label} | {envs} | {sps:,.0f} | {sps * info['frames_per_step']:,.0f} | "
                     f"{ratio} | {info['steps_per_s_best']:,.0f} |")
    missing = [cell_id(c) for c in CELLS if c not in cells]
    if missing:
        lines += ["", f"Not measured (skipped or failed; see the pytest output): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="an existing pytest-benchmark JSON of benchmarks/test_env_speed.py")
    ap.add_argument("--results", default=str(ROOT / "results"), help="results root (default: %(default)s)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments when running (after --)")
    args = ap.parse_args(argv)

    if args.json:
        src = Path(args.json)
        doc = json.loads(src.read_text())
        tmp = None
    else:
        tmp = Path(tempfile.mkdtemp(prefix="env_speed."))
        src = tmp / "env_speed.json"
        rc = run_benchmark(src, args.pytest_args)
        if not src.exists():
            print(f"the benchmark wrote no JSON (pytest exit {rc})", file=sys.stderr)
            return rc or 1
        doc = json.loads(src.read_text())

    ids = {b.get("extra_info", {}).get("machine_id") for b in doc.get("benchmarks", [])} - {None}
    if len(ids) > 1:
        print(f"the JSON mixes machines {sorted(ids)}", file=sys.stderr)
        return 1
    if ids:
        machine = ids.pop()
    else:
        from fastdqn.results import machine_id
        machine = machine_id()
    out_dir = Path(args.results) / machine
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "env_speed.json"
    if src.resolve() != raw.resolve():
        shutil.copyfile(src, raw)
    md = table(doc, machine)
    (out_dir / "env_speed.md").write_text(md)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    print(md)
    print(f"wrote {out_dir / 'env_speed.md'} and {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
