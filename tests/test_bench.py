"""Matrix validation, the runner's resume, and the report."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdqn.bench.matrix import load_matrix
from fastdqn.bench.report import collect, write_report
from fastdqn.cli import main
from fastdqn.config import build_config
from fastdqn.errors import UsageError

GOOD = """
name = "tiny"
seeds = [5]
[defaults]
env = "CartPole-v1"
max_steps = 300
replay_initial = 100
batch_size = 16
[[cell]]
name = "baseline"
[[cell]]
name = "slow_grads"
preset = "slow_grads"
"""

BAD = {
    "unknown top key": ('colour = "red"\n[[cell]]\nname = "a"\n', "'colour'"),
    "unknown cell key": ('[[cell]]\nname = "a"\nlearning_rate = 0.1\n', "'learning_rate'"),
    "unknown defaults key": ('[defaults]\nwarmup = 3\n[[cell]]\nname = "a"\n', "'warmup'"),
    "bad value": ('[[cell]]\nname = "a"\nbatch_size = -4\n', "-4"),
    "wrong type": ('[[cell]]\nname = "a"\nlr = "fast"\n', "'fast'"),
    "duplicate cell": ('[[cell]]\nname = "a"\n[[cell]]\nname = "a"\n', "duplicate cell name 'a'"),
    "unknown preset": ('[[cell]]\nname = "a"\npreset = "turbo"\n', "'turbo'"),
    "no cells": ('seeds = [1]\n', "[[cell]]"),
    "bad seeds": ('seeds = [1, 1]\n[[cell]]\nname = "a"\n', "seeds"),
    "reserved key": ('[[cell]]\nname = "a"\nout = "x.json"\n', "'out'"),
    "bad cell name": ('[[cell]]\nname = "../up"\n', "'../up'"),
    "malformed toml": ('[[cell]\nname = "a"\n', "malformed TOML"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_malformed_matrix_fails_before_any_run(kind, tmp_path, capsys, monkeypatch):
    text, needle = BAD[kind]
    path = tmp_path / "m.toml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=None) as info:
        load_matrix(path)
    assert needle in str(info.value)
    assert main(["bench", str(path), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdqn: error:") and needle in err[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()  # nothing ran


def test_matrix_settings_are_typed_and_merged(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(GOOD)
    m = load_matrix(path)
    assert m.name == "tiny" and m.seeds == [5]
    assert [c.name for c in m.cells] == ["baseline", "slow_grads"]
    assert m.cells[1].preset == "slow_grads" and m.cells[1].settings["max_steps"] == 300


def _bench(tmp_path, matrix, *extra):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "fastdqn", "bench", str(matrix), "--results", "results",
                           "--no-progress", *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_bench_cell_runs_one_cell_and_the_rest_later(tmp_path):
    matrix = tmp_path / "tiny.toml"
    matrix.write_text(GOOD)
    only = _bench(tmp_path, matrix, "--cell", "slow_grads")
    assert only.returncode == 0, only.stderr
    assert [f.parent.name for f in (tmp_path / "results").glob("*/tiny/*/5.json")] == ["slow_grads"]
    rest = _bench(tmp_path, matrix)
    assert "slow_grads/5: kept" in rest.stderr and "baseline/5: exit 0" in rest.stderr


def test_bench_unknown_cell_is_a_usage_error(tmp_path, capsys):
    matrix = tmp_path / "tiny.toml"
    matrix.write_text(GOOD)
    assert main(["bench", str(matrix), "--cell", "nope", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope'" in err and "baseline, slow_grads" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_bench_runs_resumes_and_reports(tmp_path):
    matrix = tmp_path / "tiny.toml"
    matrix.write_text(GOOD)
    first = _bench(tmp_path, matrix)
    assert first.returncode == 0, first.stderr
    files = sorted((tmp_path / "results").glob("*/tiny/*/5.json"))
    assert [f.parent.name for f in files] == ["baseline", "slow_grads"]
    assert (files[0].parent.parent / "summary.csv").read_text().count("\n") == 3
    assert (tmp_path / "runs" / "bench").is_dir()  # child logs + TensorBoard
    assert "| baseline | 1 |" in first.stdout and "1.00x" in first.stdout
    mtimes = [f.stat().st_mtime_ns for f in files]

    # an interrupted result is rerun, finished ones are kept
    interrupted = json.loads(files[1].read_text())
    interrupted["status"] = "interrupted"
    files[1].write_text(json.dumps(interrupted))
    second = _bench(tmp_path, matrix)
    assert second.returncode == 0, second.stderr
    assert "baseline/5: kept" in second.stderr and "slow_grads/5: exit 0" in second.stderr
    assert files[0].stat().st_mtime_ns == mtimes[0]
    assert json.loads(files[1].read_text())["status"] == "budget"

    # a changed setting invalidates the kept result
    matrix.write_text(GOOD.replace("max_steps = 300", "max_steps = 320"))
    third = _bench(tmp_path, matrix)
    assert "baseline/5: exit 0" in third.stderr
    assert json.loads(files[0].read_text())["steps"] == 320


def test_report_skips_corrupt_result_by_name(tmp_path, capsys):
    root = tmp_path / "results"
    # a valid result made by a tiny real run, plus a truncated one beside it
    out = root / "m1" / "mx" / "baseline" / "1.json"
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "150", "--replay-initial", "50",
                 "--batch-size", "8", "--progress", "false", "--device", "cpu", "--out", str(out)]) == 0
    bad = root / "m1" / "mx" / "broken" / "1.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(out.read_text()[:100])
    capsys.readouterr()
    path = write_report(root)
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid JSON" in err
    text = path.read_text()
    assert "## m1 / mx" in text and "| baseline | 1 |" in text and "| broken |" not in text
    assert set(collect(root)[("m1", "mx")]) == {"baseline"}


def test_committed_matrices_load_and_the_headline_reruns_the_solved_cell():
    import importlib.util
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    paths = sorted(bench.glob("*.toml"))
    needs = {"carracing.toml": ["Box2D"], "peers_pong.toml": ["stable_baselines3"],
             "cartpole.toml": ["evotorch", "stable_baselines3"]}
    for name, modules in needs.items():  # their cells are refused, in one line, without their extras
        if any(importlib.util.find_spec(m) is None for m in modules):
            with pytest.raises(UsageError, match=r"box2d extra|pip install 'fastdqn\["):
                load_matrix(bench / name)
            paths.remove(bench / name)
    matrices = {p.stem: load_matrix(p) for p in paths}
    assert {"solve_cpu", "solve_headline"} <= set(matrices)

    def settings(matrix, cell):
        c = next(c for c in matrices[matrix].cells if c.name == cell)
        d = build_config(c.preset, None, c.settings).to_dict()
        d.pop("preset")
        return d
    assert (settings("solve_headline", "solve_recipe_t2")
            == settings("solve_cpu", "a5_n3_double_u0125_bf16_compile_t2"))
    assert 123 in matrices["solve_headline"].seeds
