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
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ignite.engine import Engine, Events

from ..config import all_fields, build_config, parse_value
from ..errors import UsageError
from ..lifecycle import check_writable_dir, stop_signal
from ..progress import BenchProgress
from ..results import load_result
from .matrix import Cell, Matrix

if TYPE_CHECKING:
    from .launchers import Outcome

DONE = ("solved", "budget", "completed")
SUMMARY_COLUMNS = ["cell", "seed", "preset", "status", "steps", "episodes", "updates", "fps",
                   "frames_per_second", "wall_seconds", "solve_seconds_mean100", "solve_steps_mean100",
                   "solve_seconds_ema", "last_mean100"]
CHILD_STOP_S = 30.0   # a child asked to stop gets this long to write its result before it is killed
POLL_S = 0.5          # waits on a child stay interruptible: Ray's cancel raises no signal, only a flag
CAP_MARGIN_S = 300.0  # beyond a cell's budget: start-up, a first compile past the time budget, the stop
CHILD_PROGRESS_S = 5.0  # a running cell's progress line in its log this often, for bench's display
CAP_MIN_FPS = 1.0     # a step budget's time at a pace no healthy cell is as slow as


def result_path(results: Path, machine: str, matrix: Matrix, cell: Cell, seed: int) -> Path:
    return results / machine / matrix.name / cell.name / f"{seed}.json"


def finished(path: Path, cell: Cell, seed: int, machine: str | None) -> dict | None:
    """The stored result if it finished with exactly this cell's settings on the machine named
    `machine` (results.machine_name(); None: on any machine), else None. A result of another
    machine of the same hardware id, or one that names no machine, is measured again."""
    if not path.exists():
        return None
    try:
        result = load_result(path)
    except UsageError:
        return None
    if machine is not None and result.get("machine") != machine:
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
           "--name", f"{cell.name}-{seed}", "--out", str(out), "--logdir", str(logdir),
           "--progress", "true", "--progress-every", str(CHILD_PROGRESS_S)]  # its log: what bench shows
    for key, value in cell.settings.items():
        cmd += ["--" + key.replace("_", "-"), str(value).lower() if isinstance(value, bool) else str(value)]
    return cmd


def run_child(cmd: list[str], log: Path, cap: float = 0.0, watch=None) -> int:
    """Run one cell, return its exit code. A stop of this process (Ctrl-C, SIGTERM, Ray's cancel)
    is passed on to the child and re-raised; at `cap` seconds (0: none) the child is stopped with
    SIGTERM. Either way it writes its result (status interrupted) and nothing is left running.
    watch(line): called while it runs with the newest progress line of its log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return _wait(proc, cap, lambda: watch(last_progress_line(log)) if watch else None)
        except BaseException as e:
            stop_child(proc, stop_signal(e))
            raise


def _wait(proc: subprocess.Popen, cap: float, poll=None) -> int:
    end = time.monotonic() + cap if cap else math.inf
    while True:
        if poll:
            poll()
        try:
            return proc.wait(timeout=max(0.0, min(POLL_S, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= end:
                return stop_child(proc, signal.SIGTERM)


def last_progress_line(log: Path) -> str | None:
    """The child's newest progress line (fastdqn/progress.py): a read of the log's tail, so
    watching costs the child nothing."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(fh.seek(0, os.SEEK_END) - 4096, 0))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return None
    lines = [s for s in tail.splitlines() if s.startswith("steps ")]
    return lines[-1] if lines else None


def stop_child(proc: subprocess.Popen, sig: int) -> int:
    """Ask the child to stop (it writes its result); CHILD_STOP_S later kill it and what it started."""
    proc.send_signal(sig)  # a no-op once it has exited
    try:
        return proc.wait(timeout=CHILD_STOP_S)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(proc.pid), proc.pid]:  # listed before the kill orphans them
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return proc.wait()


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, from /proc (Linux; none found elsewhere)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        above = todo.pop()
        children = [child for child, ppid in parent.items() if ppid == above]
        found += children
        todo += children
    return found


def cell_cap(cell: Cell, override: float | None = None) -> float:
    """Seconds a run of `cell` may take before it is stopped as failed (0: no cap): `override`
    (bench --cell-cap), else the cell's time budget, or its step budget at CAP_MIN_FPS, plus
    CAP_MARGIN_S; a cell with neither budget runs until solved, uncapped."""
    if override is not None:
        return override
    run = build_config(cell.preset, None, dict(cell.settings)).run
    budgets = [b for b in (run.max_seconds, run.max_steps / CAP_MIN_FPS) if b]
    return min(budgets) + CAP_MARGIN_S if budgets else 0.0


def capped_record(result: dict | None, cell: Cell, seed: int, cap: float) -> tuple[dict, str | None]:
    """The record of a run stopped at its cap: its own result marked failed with the reason, or,
    where the child wrote none (it had to be killed), one without measurements. A run that
    finished before the stop reached it keeps its status. Returns the record and the reason."""
    reason = f"ran past its cap of {cap:g} s (bench --cell-cap)"
    if result is None:
        from ..envs import frames_per_step
        from ..results import build_result
        from ..telemetry import Telemetry
        cfg = build_config(cell.preset, None, {**cell.settings, "seed": seed, "name": f"{cell.name}-{seed}"})
        telemetry = Telemetry(cfg.hp.stop_reward, frames_per_step(cfg.hp))
        result = build_result(cfg, telemetry, "failed", frames_per_step(cfg.hp), extra={"error": None})
    elif result["status"] in DONE:
        return result, None
    return {**result, "status": "failed", "stop_reason": f"failed: {reason}", "error": reason}, reason


def run_matrix(matrix: Matrix, results: Path, runs: Path = Path("runs/bench"), progress: bool = True,
               launcher=None) -> tuple[int, list[str]]:
    """Exit code (1 if a cell failed) and the machine ids whose results this run touched."""
    if launcher is None:
        from .launchers import LocalLauncher  # launchers build on this module's helpers
        launcher = LocalLauncher()
    jobs = [(cell, seed) for cell in matrix.cells for seed in matrix.seeds]
    check_writable_dir(results, "--results")  # before any run: not after its compute
    check_writable_dir(runs, "log folder")
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
