"""Run a matrix: every (cell, seed) in its own fresh `fastdqn train` process. A launcher
(launchers.py) runs them: here one at a time, so cells never compete for cores or the GPU, or as
Ray tasks. This driver feeds their outcomes to an ignite Engine (one iteration per run), shows
the matrix's progress (runs done, ETA from the budgets, the running cell's own line from its log:
progress.BenchProgress), and writes the summary. Finished results are kept and skipped on
a re-run (resume); Ctrl-C or SIGTERM stops what runs (passed on to the running child, which writes
its result as interrupted) and keeps every finished result. Each run has a wall-clock cap
(cell_cap): past it the child is stopped and its result written as failed, and the matrix goes on.

Layout: <results>/<machine-id>/<matrix>/<cell>/<seed>.json, <results>/<machine-id>/<matrix>/summary.csv;
child logs and TensorBoard files under runs/bench/ (not committed).
"""
from __future__ import annotations

import contextlib
import csv
import sys
from pathlib import Path

from ignite.engine import Engine, Events

from ..errors import UsageError
from ..lifecycle import check_writable_dir, quiet_engine
from ..progress import BenchProgress
from ..results import atomic_path, load_result
from .launchers import LocalLauncher, Outcome
from .matrix import Cell, Matrix

SUMMARY_COLUMNS = ["cell", "seed", "preset", "status", "steps", "episodes", "updates", "fps",
                   "frames_per_second", "wall_seconds", "solve_seconds_mean100", "solve_steps_mean100",
                   "solve_seconds_ema", "last_mean100", "loop_gflops", "loop_share_of_peak", "reference"]


def run_matrix(matrix: Matrix, results: Path, runs: Path = Path("runs/bench"), progress: bool = True,
               launcher=None, only: list[str] | None = None) -> tuple[int, list[str]]:
    """Exit code (1 if a cell failed) and the machine ids whose results this run touched.
    only: the names of the cells to run (default all); the summary still lists every cell."""
    if launcher is None:
        launcher = LocalLauncher()
    cells = [c for c in matrix.cells if not only or c.name in only]
    jobs = [(cell, seed) for cell in cells for seed in matrix.seeds]
    check_writable_dir(results, "--results")  # before any run: not after its compute
    check_writable_dir(runs, "log folder")
    outcomes = launcher.run(matrix, results, runs, jobs)  # checks the matrix against the launcher first
    failed: list[str] = []
    machines = [launcher.machine] if launcher.machine else []  # Ray: known as outcomes arrive
    print(f"matrix {matrix.name}: {len(cells)} cells x {len(matrix.seeds)} seeds -> "
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

    engine = quiet_engine(note)  # a stop is bench's one line, not ignite's two
    log = lambda msg: print(msg, file=sys.stderr)
    display = BenchProgress(matrix.name, jobs) if progress else None
    if display is not None:
        if hasattr(launcher, "watch"):  # the local launcher shows the running cell's own line
            launcher.watch = display.watch
        log = lambda msg: display.outcome(msg, ran=not msg.split(": ", 1)[1].startswith("kept"))
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: log(e.state.output))
    try:
        with contextlib.closing(outcomes):  # an exception here stops the launcher's runs too
            engine.run(outcomes, max_epochs=1, epoch_length=len(jobs))
    finally:  # also on a stop: the summary holds every finished cell
        if display is not None:
            display.close()
        for machine in dict.fromkeys([*machines, *getattr(launcher, "wrote", [])]):  # Ray: cancelled cells too
            write_summary(results / machine / matrix.name, matrix)
    for line in failed:
        print(f"fastdqn: cell failed: {line}", file=sys.stderr)
    return (1 if failed else 0), machines


def summary_row(cell: Cell, seed: int, result: dict, reference: str | None = None) -> dict:
    """reference: the matrix's `reference` cell (a ladder's), what report's ratios are to."""
    mean100, ema = result["solved"]["mean100"], result["solved"]["ema"]
    return {"cell": cell.name, "seed": seed, "preset": cell.preset, "status": result["status"],
            "steps": result["steps"], "episodes": result["episodes"], "updates": result["updates"],
            "fps": result["fps"], "frames_per_second": result["frames_per_second"],
            "wall_seconds": round(result["wall_seconds"], 2), "solve_seconds_mean100": mean100["seconds"],
            "solve_steps_mean100": mean100["steps"], "solve_seconds_ema": ema["seconds"],
            "last_mean100": result.get("last_mean100"),
            "loop_gflops": (result.get("compute") or {}).get("loop_gflops"),
            "loop_share_of_peak": (result.get("compute") or {}).get("loop_share_of_peak"),
            "reference": reference or ""}


def write_summary(folder: Path, matrix: Matrix) -> None:
    rows = []
    for cell in matrix.cells:
        for seed in matrix.seeds:
            path = folder / cell.name / f"{seed}.json"
            if path.exists():
                try:
                    rows.append(summary_row(cell, seed, load_result(path), matrix.reference))
                except UsageError as e:
                    print(f"fastdqn: skipping {e}", file=sys.stderr)
    if not rows:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "summary.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
