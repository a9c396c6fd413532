"""Launchers: what runs the runner's (cell, seed) jobs. Each yields one Outcome per job as it ends;
runner.run_matrix drives them, and the results land in the same layout either way.

- LocalLauncher (the default): one job at a time on this machine, the child writing its result
  straight into results/<machine-id>/...
- RayLauncher (`--launcher ray`, the optional `ray` extra): each job a Ray task asking for the CPUs
  and GPU its cell needs. The task runs the same `fastdqn train` child on a worker, in a scratch
  folder, and sends back the result and log as text with the worker's machine id (its TensorBoard
  files are not brought back); the driver validates the result and writes it under that id, so
  results of different machines never mix.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..config import build_config
from ..errors import UsageError
from ..results import machine_id, validate_result, write_json_atomic
from .matrix import Cell, Matrix
from .runner import finished, log_base, result_path, run_child, train_command

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

    def __init__(self):
        self.machine = machine_id()

    def run(self, matrix: Matrix, results: Path, runs: Path, jobs: Jobs) -> Iterator[Outcome]:
        for cell, seed in jobs:
            out = result_path(results, self.machine, matrix, cell, seed)
            if finished(out, cell, seed):
                yield Outcome(cell, seed, self.machine, kept=True)
                continue
            base = log_base(runs, self.machine, matrix, cell, seed)
            rc = run_child(train_command(cell, seed, out, base), base.with_suffix(".log"))
            yield Outcome(cell, seed, self.machine, rc, base.with_suffix(".log"))


def cpus_needed(flags) -> int:
    """Cores a cell keeps busy: its stepping processes (gym_async: one per env copy), plus the
    trainer when play processes step apart from it."""
    per_player = flags.envs if flags.backend == "gym_async" else 1
    return 1 + flags.players * per_player if flags.parallel else per_player


def run_task(cell: Cell, seed: int, done_on: list[str]) -> dict:
    """The Ray task, on a worker: nothing if this machine already finished the job, else the
    child's exit code, log and result JSON (None if it wrote none) as text."""
    machine = machine_id()
    if machine in done_on:
        return {"machine": machine, "kept": True}
    with tempfile.TemporaryDirectory(prefix="fastdqn-cell-") as tmp:
        out, log = Path(tmp, "result.json"), Path(tmp, "train.log")
        rc = run_child(train_command(cell, seed, out, Path(tmp, "tb")), log)
        return {"machine": machine, "rc": rc, "log": log.read_text(errors="replace"),
                "result": out.read_text() if out.exists() else None}


class RayLauncher:
    """Jobs as Ray tasks on the cluster at `address`, or on a new local instance (address None)
    that listens on loopback only and starts no dashboard."""

    machine = None  # known per job, from the worker that ran it

    def __init__(self, address: str | None = None):
        self.address = address
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
        configs = {cell.name: build_config(cell.preset, None, dict(cell.settings)) for cell in matrix.cells}
        for name, cfg in configs.items():
            if cfg.run.device not in ("auto", "cpu", "cuda", "cuda:0"):
                raise UsageError(f"cell {name!r}: device {cfg.run.device!r}: with --launcher ray a cell "
                                 "sees the one GPU Ray gives it: expected auto, cpu, cuda or cuda:0")
        ray = self.ray
        try:  # "local": a new instance even where RAY_ADDRESS or a running one would be picked up
            ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ValueError, ConnectionError) as e:
            if self.address is None:
                raise
            raise UsageError(f"--address {self.address!r}: {e}") from None
        try:
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
                options = {"num_cpus": min(cpus_needed(cfg.flags), node_cpus), "num_gpus": 1 if gpu else 0,
                           "max_retries": 0}  # a failed cell is reported, not rerun
                ref = task.options(**options).remote(cell, seed, finished_on(results, matrix, cell, seed))
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
        except BaseException:  # Ctrl-C, or the runner stopped: kill what runs (Ray kills the children too)
            for ref in pending:
                ray.cancel(ref, force=True)
            ray.wait(list(pending), num_returns=len(pending), timeout=30)
            raise
        finally:
            ray.shutdown()

    def _receive(self, ref, cell, seed, matrix, results, runs) -> Outcome:
        try:
            reply = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            return Outcome(cell, seed, None, error=f"Ray task failed: {str(e).strip().splitlines()[0]}")
        machine = reply["machine"]
        if not MACHINE_RE.fullmatch(machine):
            return Outcome(cell, seed, None, error=f"worker sent machine id {machine!r}")
        if reply.get("kept"):
            return Outcome(cell, seed, machine, kept=True)
        log = log_base(runs, machine, matrix, cell, seed).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(reply["log"])
        error = None
        if reply["result"] is not None:
            try:  # data from another machine: parsed and validated like any result file
                result = validate_result(json.loads(reply["result"]), f"{cell.name}/{seed} from {machine}")
                write_json_atomic(result_path(results, machine, matrix, cell, seed), result)
            except (ValueError, UsageError) as e:
                error = f"unusable result: {e}"
        return Outcome(cell, seed, machine, reply["rc"], log, error)


def finished_on(results: Path, matrix: Matrix, cell: Cell, seed: int) -> list[str]:
    """Machine ids under `results` that hold a finished result of this job."""
    if not results.is_dir():
        return []
    return [d.name for d in results.iterdir()
            if d.is_dir() and finished(result_path(results, d.name, matrix, cell, seed), cell, seed)]


def make_launcher(name: str, address: str | None):
    if address is not None and name != "ray":
        raise UsageError(f"--address {address!r}: only with --launcher ray")
    return RayLauncher(address) if name == "ray" else LocalLauncher()
