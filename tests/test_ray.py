"""The Ray launcher: `fastdqn bench --launcher ray` with no address starts a local Ray instance
(loopback only, no dashboard) for the test, runs a two-cell matrix as Ray tasks, and writes the
results into the local layout, where `fastdqn report` treats them like local ones."""
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bench import GOOD

from fastdqn.bench.launchers import RAY_LOOPBACK_ENV, cpus_needed, finished_on, run_task
from fastdqn.bench.matrix import load_matrix
from fastdqn.cli import main
from fastdqn.config import build_config
from fastdqn.results import machine_id, machine_name

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray instance at a time


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def listening(pids: set[int]) -> set[str]:
    """Local addresses (ip:port) on which these processes listen for TCP, from `ss -ltnp`."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    return {line.split()[3] for line in out.splitlines() if pids & {int(p) for p in re.findall(r"pid=(\d+)", line)}}


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")
    return ipaddress.ip_address(host).is_loopback


@pytest.mark.slow
def test_ray_launcher_runs_a_matrix_into_the_local_layout(tmp_path):
    matrix = tmp_path / "tiny.toml"
    matrix.write_text(GOOD)
    proc = subprocess.Popen([sys.executable, "-m", "fastdqn", "bench", str(matrix), "--results", "results",
                             "--no-progress", "--launcher", "ray"], cwd=tmp_path, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    addresses: set[str] = set()
    while proc.poll() is None and shutil.which("ss"):  # what Ray's processes listen on while it runs
        addresses |= listening(descendants(proc.pid))
        time.sleep(0.3)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "ray: local instance on 127.0.0.1" in err
    if shutil.which("ss"):
        assert addresses and all(map(is_loopback, addresses)), addresses

    machine = machine_id()
    files = sorted((tmp_path / "results").glob("*/tiny/*/5.json"))
    assert [f.relative_to(tmp_path / "results").parts for f in files] == [
        (machine, "tiny", "baseline", "5.json"), (machine, "tiny", "slow_grads", "5.json")]
    for f in files:
        result = json.loads(f.read_text())
        assert result["status"] == "budget" and result["steps"] == 300
        assert machine_id(result["hardware"]) == machine  # the id of the machine that ran it
    assert (tmp_path / "results" / machine / "tiny" / "summary.csv").read_text().count("\n") == 3
    assert (tmp_path / "runs" / "bench" / machine / "tiny" / "baseline" / "5.log").exists()
    assert f"baseline/5: exit 0 on {machine}" in err and "| baseline | 1 |" in out

    # the report treats them like local results
    assert main(["report", str(tmp_path / "results")]) == 0
    report = (tmp_path / "results" / "README.md").read_text()
    section = report.split(f"## {machine} / tiny", 1)[1]
    assert "| baseline | 1 |" in section and "| slow_grads | 1 |" in section and "1.00x" in section

    # resume: a worker on this machine (by name) skips both jobs
    m = load_matrix(matrix)
    for cell in m.cells:
        assert finished_on(tmp_path / "results", m, cell, 5) == [machine_name()]
        assert run_task(cell, 5, [machine_name()]) == {"machine": machine, "kept": True}


def test_ray_launcher_without_ray_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.setenv(RAY_LOOPBACK_ENV, "1")      # restored afterwards: the launcher sets it
    matrix = tmp_path / "tiny.toml"
    matrix.write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", str(matrix), "--launcher", "ray", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdqn: error:") and "fastdqn[ray]" in err[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_address_needs_the_ray_launcher(tmp_path, capsys):
    matrix = tmp_path / "tiny.toml"
    matrix.write_text(GOOD)
    assert main(["bench", str(matrix), "--address", "auto"]) == 2
    assert "--address 'auto': only with --launcher ray" in capsys.readouterr().err


def test_cells_ask_ray_for_the_cores_they_keep_busy():
    def cpus(**settings):
        return cpus_needed(build_config("baseline", None, settings).flags)
    assert cpus() == 1 and cpus(envs=3) == 1  # one process steps them in turn
    assert cpus(parallel=True, players=2) == 3  # trainer + 2 players
    assert cpus(backend="gym_async", envs=4) == 4  # a subprocess per env copy
