"""One bench job, a (cell, seed): where its result and log go, whether a finished result can be
kept, the `fastdqn train` command that runs it, running that child under a wall-clock cap and
stopping it. The launchers (launchers.py) run jobs with these; runner.py drives the launchers."""
from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import peers
from ..config import all_fields, build_config, parse_value
from ..errors import UsageError
from ..lifecycle import stop_signal
from ..results import load_result
from .matrix import Cell, Matrix

DONE = ("solved", "budget", "completed")
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
    parse = ((lambda k, v: peers.parse_setting(cell.peer, k, v)) if cell.peer  # peer cells (fastdqn/peers)
             else (lambda k, v: parse_value(k, v, table[k][1])))
    same = (result["status"] in DONE and cfg["preset"] == cell.preset and recorded.get("seed") == seed
            and all(recorded.get(k) == parse(k, v) for k, v in cell.settings.items()))
    return result if same else None


def cell_config(cell: Cell, run: dict | None = None):
    """The config a run of `cell` gets, with the runner's `run` settings on top: a fastdqn Config,
    or a peer cell's PeerConfig (fastdqn/peers)."""
    settings = {**cell.settings, **(run or {})}
    return peers.peer_config(cell.peer, settings) if cell.peer else build_config(cell.preset, None, settings)


def log_base(runs: Path, machine: str, matrix: Matrix, cell: Cell, seed: int) -> Path:
    """Child's TensorBoard folder; its log is this path + .log."""
    return runs / machine / matrix.name / cell.name / str(seed)


def train_command(cell: Cell, seed: int, out: Path, logdir: Path) -> list[str]:
    trainer = (["fastdqn.peers", cell.peer] if cell.peer  # peer cells: fastdqn/peers/__main__.py
               else ["fastdqn", "train", "--preset", cell.preset])
    cmd = [sys.executable, "-m", *trainer, "--seed", str(seed),
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
    run = cell_config(cell).run
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
        cfg = cell_config(cell, {"seed": seed, "name": f"{cell.name}-{seed}"})
        telemetry = Telemetry(cfg.hp.stop_reward, frames_per_step(cfg.hp))
        result = build_result(cfg, telemetry, "failed", frames_per_step(cfg.hp), extra={"error": None})
    elif result["status"] in DONE:
        return result, None
    return {**result, "status": "failed", "stop_reason": f"failed: {reason}", "error": reason}, reason
