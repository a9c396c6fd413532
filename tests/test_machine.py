"""Machine identity: a name made on first use and kept outside the checkout, recorded in every
result; bench reuses a finished result only when this machine's name made it (a fresh clone on
another machine of the same hardware measures it), while the results folder stays keyed by the
hardware id."""
from __future__ import annotations

import json
import platform

import pytest

import fastdqn.bench.launchers as launchers
from fastdqn.bench.launchers import LocalLauncher
from fastdqn.bench.matrix import load_matrix
from fastdqn.bench.jobs import result_path
from fastdqn.cli import main
from fastdqn.errors import UsageError
from fastdqn.results import MACHINE_ENV, _slug, machine_file, machine_id, machine_name

MATRIX = """
name = "tiny"
seeds = [5]
[defaults]
env = "CartPole-v1"
max_steps = 120
replay_initial = 50
batch_size = 8
[[cell]]
name = "baseline"
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A machine with no name yet: its own config folder, no override."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(MACHINE_ENV, raising=False)
    return tmp_path


def test_name_is_made_on_first_use_and_kept(home, monkeypatch):
    assert not machine_file().exists()
    name = machine_name()
    assert name.startswith(f"{_slug(platform.node())}-{machine_id()}-")
    assert json.loads(machine_file().read_text())["name"] == name
    assert machine_name() == name  # every later call, every clone: the file's
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "other"))
    assert machine_name() != name  # another machine of the same hostname and hardware
    monkeypatch.setenv(MACHINE_ENV, "gpu-box.1")
    assert machine_name() == "gpu-box.1"


@pytest.mark.parametrize("bad", ["Has Space", "../up", "-dash"])
def test_bad_name_is_a_one_line_error(home, monkeypatch, capsys, bad):
    monkeypatch.setenv(MACHINE_ENV, bad)
    with pytest.raises(UsageError, match="machine name"):
        machine_name()
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "10", "--out", str(home / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdqn: error:") and repr(bad) in err[0]
    assert not (home / "r.json").exists()


def test_corrupt_machine_file_is_named(home):
    machine_file().parent.mkdir(parents=True)
    machine_file().write_text("{not json")
    with pytest.raises(UsageError, match=str(machine_file())):
        machine_name()


def test_bench_reuses_only_this_machines_results(home, monkeypatch, capsys):
    matrix_path = home / "tiny.toml"
    matrix_path.write_text(MATRIX)
    matrix = load_matrix(matrix_path)
    cell, results = matrix.cells[0], home / "results"
    out = result_path(results, machine_id(), matrix, cell, 5)
    monkeypatch.setenv(MACHINE_ENV, "box-a")
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "120", "--replay-initial", "50",
                 "--batch-size", "8", "--seed", "5", "--device", "cpu", "--progress", "false",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["machine"] == "box-a"
    ran = []
    monkeypatch.setattr(launchers, "run_child", lambda cmd, log, *cap: ran.append(cmd) or 0)

    def outcomes():
        return list(LocalLauncher().run(matrix, results, home / "runs", [(cell, 5)]))
    assert outcomes()[0].kept and not ran  # a rerun on the same machine resumes
    monkeypatch.setenv(MACHINE_ENV, "box-b")
    assert not outcomes()[0].kept and len(ran) == 1  # same hardware id, another machine: measured
    legacy = json.loads(out.read_text())
    del legacy["machine"]  # results made before machines had names (the committed ones)
    out.write_text(json.dumps(legacy))
    monkeypatch.setenv(MACHINE_ENV, "box-a")
    assert not outcomes()[0].kept and len(ran) == 2

    # the flag names the machine for the runs (and for the children, through the environment)
    legacy["machine"] = "box-c"
    out.write_text(json.dumps(legacy))
    capsys.readouterr()
    assert main(["bench", str(matrix_path), "--results", str(results), "--machine", "box-c", "--no-progress"]) == 0
    assert "baseline/5: kept" in capsys.readouterr().err and len(ran) == 2


def test_hardware_id_tells_cpus_apart_by_their_matrix_isa():
    """Hosts behind one VM model name ("AMD EPYC") with and without AVX-512 BF16 get different
    ids; results recorded before the ISA was keep the id they were filed under."""
    from fastdqn.results import cpu_isa, native_cpu_bf16
    zen3 = {"fpu", "sse2", "avx", "avx2", "fma"}
    zen4 = zen3 | {"avx512f", "avx512bw", "avx512_bf16", "avx_vnni"}
    assert (cpu_isa(zen3), cpu_isa(zen4), cpu_isa({"sse2"})) == ("avx2", "avx512bf16", "")
    assert cpu_isa(zen3 | {"avx512f"}) == "avx512f" and cpu_isa(zen4 | {"amx_bf16"}) == "amxbf16"
    assert (native_cpu_bf16(zen3), native_cpu_bf16(zen4)) == (False, True)
    hw = {"cpu": "AMD EPYC", "cores": 2, "gpu": None}
    assert machine_id({**hw, "cpu_isa": "avx2"}) == "amd-epyc-avx2-2c"
    assert machine_id({**hw, "cpu_isa": "avx512bf16"}) == "amd-epyc-avx512bf16-2c"
    assert machine_id(hw) == machine_id({**hw, "cpu_isa": ""}) == "amd-epyc-2c"


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_warns_in_one_line(tmp_path, monkeypatch, capsys, native):
    import fastdqn.train
    monkeypatch.setattr(fastdqn.train, "native_cpu_bf16", lambda: native)
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "60", "--replay-initial", "30",
                 "--batch-size", "8", "--bf16", "true", "--device", "cpu", "--progress", "false",
                 "--out", str(tmp_path / "r.json")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    if native:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "without native bf16" in warnings[0] and "--bf16 false" in warnings[0]
