"""Launchers: what runs the runner's (cell, seed) jobs. Each yields one Outcome per job as it ends;
runner.run_matrix drives them, and the results land in the same layout either way.

- LocalLauncher (the default): one job at a time on this machine, the child writing its result
  straight into results/<machine-id>/...
- RayLauncher (`--launcher ray`, the optional `ray` extra): each job a Ray task asking for the CPUs
  and GPU its cell needs. The task runs the same `fastdqn train` child on a worker, in a scratch
  folder, and sends back the result and log as text with the worker's machine id (its TensorBoard
  files are not brought back); the driver validates the result and writes it under that id, so
  results of different machines never mix.

Both run each job with its wall-clock cap (jobs.cell_cap) and pass a stop on: the local child
gets the signal this process got; a Ray task is cancelled, passes SIGTERM on to its child and
sends the child's interrupted result back through a mailbox actor (a cancelled task's return
value never reaches the driver).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import UsageError
from ..lifecycle import STOP_SIGNALS
from ..results import load_result, machine_id, machine_name, validate_result, write_json_atomic
from .matrix import Cell, Matrix
from .jobs import (CHILD_STOP_S, capped_record, cell_cap, cell_config, finished, log_base, result_path,
                   run_child, train_command)

Jobs = list[tuple[Cell, int]]
MACHINE_RE = re.compile(r"[a-z0-9][a-z0-9-]*")  # what results.machine_id() makes
# Ray's multi-node switch (on Linux too, despite its name), read when ray is imported. Set to 0, a
# new local instance takes 127.0.0.1 as its node IP, and Ray 2.60 binds its servers to the node IP
# (checked with `ss`, tests/test_ray.py). ray.init(_node_ip_address="127.0.0.1") does not do it:
# Ray swaps a loopback address given there for the routable one.
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass
class Outcome:
    cell: Cell
    seed: int
    machine: str | None       # id of the machine that ran (or had finished) the job; None: unknown
    rc: int | None = None     # the child's exit code
    log: Path | None = None
    error: str | None = None  # why the job failed, where an exit code does not say
    kept: bool = False        # a finished result was kept, nothing ran


class LocalLauncher:
    """One job at a time here, so cells never compete for cores or the GPU."""

    def __init__(self, cell_cap: float | None = None):
        self.machine = machine_id()  # the results folder
        self.name = machine_name()  # whose finished results are reused
        self.cell_cap = cell_cap  # bench --cell-cap: overrides every cell's own cap
        self.watch = None  # watch(job, line): the running cell's progress, for bench's display

    def run(self, matrix: Matrix, results: Path, runs: Path, jobs: Jobs) -> Iterator[Outcome]:
        for cell, seed in jobs:
            out = result_path(results, self.machine, matrix, cell, seed)
            if finished(out, cell, seed, self.name):
                yield Outcome(cell, seed, self.machine, kept=True)
                continue
            base = log_base(runs, self.machine, matrix, cell, seed)
            cap, start, before = cell_cap(cell, self.cell_cap), time.monotonic(), mtime(out)
            watch = (lambda line, job=f"{cell.name}/{seed}": self.watch(job, line)) if self.watch else None
            rc = run_child(train_command(cell, seed, out, base), base.with_suffix(".log"), cap, watch)
            error = mark_capped(out, before, cell, seed, cap) if cap and time.monotonic() - start >= cap else None
            yield Outcome(cell, seed, self.machine, rc, base.with_suffix(".log"), error)


def mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def mark_capped(out: Path, before: int | None, cell: Cell, seed: int, cap: float) -> str | None:
    """Rewrite the result of a run stopped at its cap as failed (jobs.capped_record); `before`
    is the file's mtime before the run, so that an older run's result is not taken for it.
    Returns the reason, None if the run had finished anyway."""
    result = None
    if mtime(out) != before:
        try:
            result = load_result(out)
        except UsageError:
            pass
    record, reason = capped_record(result, cell, seed, cap)
    if reason:
        write_json_atomic(out, record)
    return reason


def cpus_needed(flags) -> int:
    """Cores a cell keeps busy: its stepping processes (gym_async: one per env copy), plus the
    trainer when play processes step apart from it."""
    per_player = flags.envs if flags.backend == "gym_async" else 1
    return 1 + flags.players * per_player if flags.parallel else per_player


def run_task(cell: Cell, seed: int, done_on: list[str], cap: float = 0.0, mailbox=None) -> dict:
    """The Ray task, on a worker: nothing if this machine (by name) already finished the job,
    else the child's exit code, log and result JSON (None if it wrote none) as text, and why it
    failed where the exit code does not say (its cap). Cancelled, it sends the same to `mailbox`."""
    machine = machine_id()
    if machine_name() in done_on:
        return {"machine": machine, "kept": True}
    with tempfile.TemporaryDirectory(prefix="fastdqn-cell-") as tmp:
        out, log = Path(tmp, "result.json"), Path(tmp, "train.log")
        reply = lambda rc, error=None: {"machine": machine, "rc": rc, "log": log.read_text(errors="replace"),
                                        "result": out.read_text() if out.exists() else None, "error": error}
        start = time.monotonic()
        try:
            rc = run_child(train_command(cell, seed, out, Path(tmp, "tb")), log, cap)
        except KeyboardInterrupt:  # ray.cancel: run_child has stopped the child, which wrote its result
            if mailbox is not None:
                import ray
                ray.get(mailbox.put.remote(cell.name, seed, reply(None)))
            raise
        capped = cap and time.monotonic() - start >= cap
        return reply(rc, mark_capped(out, None, cell, seed, cap) if capped else None)


class Mailbox:
    """A Ray actor: what cancelled tasks send back, their children's interrupted results."""

    def __init__(self):
        self.items = []

    def put(self, *item) -> None:
        self.items.append(item)

    def take(self) -> list:
        items, self.items = self.items, []
        return items


class RayLauncher:
    """Jobs as Ray tasks on the cluster at `address`, or on a new local instance (address None)
    that listens on loopback only and starts no dashboard."""

    machine = None  # known per job, from the worker that ran it

    def __init__(self, address: str | None = None, cell_cap: float | None = None):
        self.address = address
        self.cell_cap = cell_cap  # bench --cell-cap: overrides every cell's own cap
        self.mailbox = None
        self.wrote: list[str] = []  # machine ids with results written, cancelled cells' too (summaries)
        if address is None:
            os.environ[RAY_LOOPBACK_ENV] = "0"
        try:
            import ray
        except ImportError:
            raise UsageError("--launcher ray needs Ray: install the extra, pip install 'fastdqn[ray]'") from None
        self.ray = ray

    def run(self, matrix: Matrix, results: Path, runs: Path, jobs: Jobs) -> Iterator[Outcome]:
        """Starts Ray and submits every job (errors here come before any cell runs); the
        returned iterator yields the outcomes as tasks end and shuts Ray down."""
        configs = {cell.name: cell_config(cell) for cell in matrix.cells}
        for name, cfg in configs.items():
            if cfg.run.device not in ("auto", "cpu", "cuda", "cuda:0"):
                raise UsageError(f"cell {name!r}: device {cfg.run.device!r}: with --launcher ray a cell "
                                 "sees the one GPU Ray gives it: expected auto, cpu, cuda or cuda:0")
        ray = self.ray
        handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        try:  # "local": a new instance even where RAY_ADDRESS or a running one would be picked up
            ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ValueError, ConnectionError) as e:
            if self.address is None:
                raise
            raise UsageError(f"--address {self.address!r}: {e}") from None
        for sig, handler in handlers.items():  # ray.init makes SIGTERM exit at once: ours stops the cells
            if handler is not None:
                signal.signal(sig, handler)
        try:
            self.mailbox = ray.remote(Mailbox).options(num_cpus=0).remote()
            ip = ray.util.get_node_ip_address()
            if self.address is None and not ipaddress.ip_address(ip).is_loopback:
                raise UsageError(f"the local Ray instance took node IP {ip}, not loopback "
                                 f"(Ray was imported before {RAY_LOOPBACK_ENV}=0 could apply)")
            total = ray.cluster_resources()
            node_cpus = max([n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]] or [1])
            print(f"ray: {'local instance on ' + ip if self.address is None else 'cluster at ' + self.address}, "
                  f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs, no dashboard", file=sys.stderr)
            task, pending = ray.remote(run_task), {}
            for cell, seed in jobs:
                cfg = configs[cell.name]
                gpu = cfg.run.device.startswith("cuda") or (cfg.run.device == "auto" and total.get("GPU", 0) > 0)
                if gpu and not total.get("GPU"):
                    raise UsageError(f"cell {cell.name!r}: device {cfg.run.device!r} but the Ray cluster has no GPU")
                cpus = cfg.workers if cell.peer else cpus_needed(cfg.flags)  # peer cells: their workers
                options = {"num_cpus": min(cpus, node_cpus), "num_gpus": 1 if gpu else 0,
                           "max_retries": 0}  # a failed cell is reported, not rerun
                ref = task.options(**options).remote(cell, seed, finished_on(results, matrix, cell, seed),
                                                     cell_cap(cell, self.cell_cap), self.mailbox)
                pending[ref] = (cell, seed)
        except BaseException:
            ray.shutdown()
            raise
        return self._outcomes(pending, matrix, results, runs)

    def _outcomes(self, pending: dict, matrix, results, runs) -> Iterator[Outcome]:
        ray = self.ray
        try:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                cell, seed = pending.pop(ref)
                yield self._receive(ref, cell, seed, matrix, results, runs)
        except BaseException:  # Ctrl-C, SIGTERM, or the runner stopped: stop what runs
            if pending:
                self._cancel(pending, matrix, results, runs)
            raise
        finally:
            ray.shutdown()

    def _cancel(self, pending: dict, matrix, results, runs) -> None:
        """Cancel every job: a running task passes the stop on to its child and mails back the
        result it wrote (kept, as interrupted); a task still running CHILD_STOP_S later is killed
        with its child (that cell is not written; it runs again next time). A task that finished
        just before the stop is kept as it came."""
        ray = self.ray
        for ref in pending:
            ray.cancel(ref)  # a running task gets a KeyboardInterrupt; a finished one is left as it is
        ended, running = ray.wait(list(pending), num_returns=len(pending), timeout=CHILD_STOP_S + 10)
        for ref in running:
            ray.cancel(ref, force=True)
        for ref in ended:  # a cancelled one only gives an error Outcome, not kept
            self._receive(ref, *pending[ref], matrix, results, runs)
        cells = {cell.name: cell for cell in matrix.cells}
        try:
            mailed = ray.get(self.mailbox.take.remote(), timeout=10)
        except ray.exceptions.RayError:
            mailed = []
        for name, seed, reply in mailed:
            self._store(reply, cells[name], seed, matrix, results, runs)

    def _receive(self, ref, cell, seed, matrix, results, runs) -> Outcome:
        try:
            reply = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            return Outcome(cell, seed, None, error=f"Ray task failed: {str(e).strip().splitlines()[0]}")
        return self._store(reply, cell, seed, matrix, results, runs)

    def _store(self, reply: dict, cell, seed, matrix, results, runs) -> Outcome:
        """Write a task's log and result under the id of the machine that ran it."""
        machine = reply["machine"]
        if not MACHINE_RE.fullmatch(machine):
            return Outcome(cell, seed, None, error=f"worker sent machine id {machine!r}")
        if reply.get("kept"):
            return Outcome(cell, seed, machine, kept=True)
        log = log_base(runs, machine, matrix, cell, seed).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(reply["log"])
        error = reply.get("error")
        if reply["result"] is not None:
            try:  # data from another machine: parsed and validated like any result file
                result = validate_result(json.loads(reply["result"]), f"{cell.name}/{seed} from {machine}")
                write_json_atomic(result_path(results, machine, matrix, cell, seed), result)
                if machine not in self.wrote:
                    self.wrote.append(machine)
            except (ValueError, UsageError) as e:
                error = f"unusable result: {e}"
        return Outcome(cell, seed, machine, reply["rc"], log, error)


def finished_on(results: Path, matrix: Matrix, cell: Cell, seed: int) -> list[str]:
    """Names of the machines (results.machine_name()) whose finished result of this job is under
    `results`."""
    if not results.is_dir():
        return []
    found = [finished(result_path(results, d.name, matrix, cell, seed), cell, seed, None)
             for d in results.iterdir() if d.is_dir()]
    return [r["machine"] for r in found if r is not None and r.get("machine")]


def make_launcher(name: str, address: str | None, cell_cap: float | None = None):
    if address is not None and name != "ray":
        raise UsageError(f"--address {address!r}: only with --launcher ray")
    return RayLauncher(address, cell_cap) if name == "ray" else LocalLauncher(cell_cap)
