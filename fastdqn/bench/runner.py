"""Run a matrix: every (cell, seed) in its own fresh `fastdqn train` process. A launcher
(launchers.py) runs them: here one at a time, so cells never compete for cores or the GPU, or as
Ray tasks. This driver feeds their outcomes to an ignite Engine (one iteration per run) for the
progress bar with count and ETA, and writes the summary. Finished results are kept and skipped on
a re-run (resume); Ctrl-C stops what runs and keeps every finished result.

Layout: <results>/<machine-id>/<matrix>/<cell>/<seed>.json, <results>/<machine-id>/<matrix>/summary.csv;
child logs and TensorBoard files under runs/bench/ (not committed).
"""
from __future__ import annotations

import contextlib
import csv
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from ..config import all_fields, parse_value
from ..errors import UsageError
from ..results import load_result
from .matrix import Cell, Matrix

if TYPE_CHECKING:
    from .launchers import Outcome

DONE = ("solved", "budget", "completed")
SUMMARY_COLUMNS = ["cell", "seed", "preset", "status", "steps", "episodes", "updates", "fps",
                   "frames_per_second", "wall_seconds", "solve_seconds_mean100", "solve_steps_mean100",
                   "solve_seconds_ema", "last_mean100"]


def result_path(results: Path, machine: str, matrix: Matrix, cell: Cell, seed: int) -> Path:
    return results / machine / matrix.name / cell.name / f"{seed}.json"


def finished(path: Path, cell: Cell, seed: int) -> dict | None:
    """The stored result if it finished with exactly this cell's settings, else None."""
    if not path.exists():
        return None
    try:
        result = load_result(path)
    except UsageError:
        return None
    cfg = result["config"]
    recorded = {**cfg["hyperparams"], **cfg["flags"], **cfg["run"]}
    table = all_fields()
    same = (result["status"] in DONE and cfg["preset"] == cell.preset and recorded.get("seed") == seed
            and all(recorded.get(k) == parse_value(k, v, table[k][1]) for k, v in cell.settings.items()))
    return result if same else None


def log_base(runs: Path, machine: str, matrix: Matrix, cell: Cell, seed: int) -> Path:
    """Child's TensorBoard folder; its log is this path + .log."""
    return runs / machine / matrix.name / cell.name / str(seed)


def train_command(cell: Cell, seed: int, out: Path, logdir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "fastdqn", "train", "--preset", cell.preset, "--seed", str(seed),
           "--name", f"{cell.name}-{seed}", "--out", str(out), "--logdir", str(logdir), "--progress", "false"]
    for key, value in cell.settings.items():
        cmd += ["--" + key.replace("_", "-"), str(value).lower() if isinstance(value, bool) else str(value)]
    return cmd


def run_child(cmd: list[str], log: Path) -> int:
    """Run one cell; on Ctrl-C pass SIGINT on (the child writes its result), then re-raise."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


def run_matrix(matrix: Matrix, results: Path, runs: Path = Path("runs/bench"), progress: bool = True,
               launcher=None) -> tuple[int, list[str]]:
    """Exit code (1 if a cell failed) and the machine ids whose results this run touched."""
    if launcher is None:
        from .launchers import LocalLauncher  # launchers build on this module's helpers
        launcher = LocalLauncher()
    jobs = [(cell, seed) for cell in matrix.cells for seed in matrix.seeds]
    outcomes = launcher.run(matrix, results, runs, jobs)  # checks the matrix against the launcher first
    failed: list[str] = []
    machines = [launcher.machine] if launcher.machine else []  # Ray: known as outcomes arrive
    print(f"matrix {matrix.name}: {len(matrix.cells)} cells x {len(matrix.seeds)} seeds -> "
          f"{results / (launcher.machine or '<machine-id>') / matrix.name}", file=sys.stderr)

    def note(engine: Engine, o: Outcome) -> str:
        if o.machine and o.machine not in machines:
            machines.append(o.machine)
        where = "" if launcher.machine else f" on {o.machine or '?'}"
        if o.kept:
            return f"{o.cell.name}/{o.seed}: kept{where}"
        what = o.error or f"exit {o.rc}"
        if o.error or o.rc != 0:
            failed.append(f"{o.cell.name}/{o.seed} ({what}{where}{f', log {o.log}' if o.log else ''})")
        return f"{o.cell.name}/{o.seed}: {what}{where}"

    engine = Engine(note)
    log = lambda msg: print(msg, file=sys.stderr)
    if progress:
        pbar = ProgressBar(persist=True, desc=f"bench {matrix.name}")
        pbar.attach(engine, output_transform=lambda _: {})
        log = pbar.log_message  # prints above the bar
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: log(e.state.output))
    try:
        with contextlib.closing(outcomes):  # an exception here stops the launcher's runs too
            engine.run(outcomes, max_epochs=1, epoch_length=len(jobs))
    finally:  # also on Ctrl-C: the summary holds every finished cell
        for machine in machines:
            write_summary(results / machine / matrix.name, matrix)
    for line in failed:
        print(f"fastdqn: cell failed: {line}", file=sys.stderr)
    return (1 if failed else 0), machines


def summary_row(cell: Cell, seed: int, result: dict) -> dict:
    mean100, ema = result["solved"]["mean100"], result["solved"]["ema"]
    return {"cell": cell.name, "seed": seed, "preset": cell.preset, "status": result["status"],
            "steps": result["steps"], "episodes": result["episodes"], "updates": result["updates"],
            "fps": result["fps"], "frames_per_second": result["frames_per_second"],
            "wall_seconds": round(result["wall_seconds"], 2), "solve_seconds_mean100": mean100["seconds"],
            "solve_steps_mean100": mean100["steps"], "solve_seconds_ema": ema["seconds"],
            "last_mean100": result.get("last_mean100")}


def write_summary(folder: Path, matrix: Matrix) -> None:
    rows = []
    for cell in matrix.cells:
        for seed in matrix.seeds:
            path = folder / cell.name / f"{seed}.json"
            if path.exists():
                try:
                    rows.append(summary_row(cell, seed, load_result(path)))
                except UsageError as e:
                    print(f"fastdqn: skipping {e}", file=sys.stderr)
    if not rows:
        return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".summary.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(folder / "summary.csv")
