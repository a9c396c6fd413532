"""The speed gate: passes against a reference it meets, fails (exit 1, table) on an injected slowdown;
absolute rows compare with this machine's pytest-benchmark baseline, skipped where it has none."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdqn.bench import check
from fastdqn.cli import main
from fastdqn.results import machine_id

ROOT = Path(__file__).resolve().parents[1]


def test_committed_reference_is_valid():
    doc = check.load_reference(check.REFERENCE)
    assert "default" in doc["machines"] and set(doc["machines"]["default"]) == set(check.GATES)


def test_gate_verdicts_against_a_reference(tmp_path, monkeypatch, capsys):
    measured = {name: 2.0 for name in check.GATES}
    monkeypatch.setattr(check, "measure", lambda rounds: dict(measured))
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"tolerance": 0.25, "machines": {"default": {n: 2.5 for n in check.GATES}}}))
    assert check.run_check(ref, baselines=tmp_path) == 0  # 2.0 >= 2.5 x 0.75
    measured["wrappers_fast"] = 1.8    # < 1.875
    assert check.run_check(ref, baselines=tmp_path) == 1
    out = capsys.readouterr().out
    assert "| wrappers_fast | ratio | 1.80 | 2.50 | REGRESSED" in out and "| act_no_grad | ratio | 2.00 | 2.50 | ok" in out


def benchmark_json(speeds: dict, machine: str) -> str:
    """The parts of a pytest-benchmark JSON of benchmarks/test_env_speed.py the gate reads."""
    return json.dumps({"benchmarks": [{"param": cell, "extra_info": {"steps_per_s": v, "machine_id": machine}}
                                      for cell, v in speeds.items()]})


@pytest.fixture
def absolute(tmp_path, monkeypatch):
    """Ratios that pass; the absolute session replaced by fixed speeds (1000 steps/s per cell)."""
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"tolerance": 0.25, "machines": {"default": {n: 1.0 for n in check.GATES}}}))
    monkeypatch.setattr(check, "measure", lambda rounds: {n: 1.0 for n in check.GATES})
    sessions = []

    def session(path):
        sessions.append(path)
        return benchmark_json({cell: 1000.0 for cell in check.ABSOLUTE}, machine_id())
    monkeypatch.setattr(check, "measure_absolute", session)

    def run(baseline_speed):
        if baseline_speed is not None:
            path = tmp_path / machine_id() / check.BASELINE_NAME
            path.parent.mkdir(exist_ok=True)
            path.write_text(benchmark_json({cell: baseline_speed for cell in check.ABSOLUTE}, machine_id()))
        return check.run_check(ref, baselines=tmp_path)
    run.sessions = sessions
    return run


def test_absolute_rows_pass_within_the_tolerance(absolute, capsys):
    assert absolute(2400.0) == 0  # 1000 steps/s now: 2.4x slower than the baseline still passes
    out = capsys.readouterr().out
    assert "| sequential-fast-1 | absolute | 1,000 | 2,400 | ok |" in out
    assert "| act_no_grad | ratio |" in out  # one table for both kinds


def test_absolute_row_fails_when_much_slower_than_the_baseline(absolute, capsys):
    assert absolute(2600.0) == 1  # 2.6x slower
    out = capsys.readouterr().out
    assert "| sequential-baseline-1 | absolute | 1,000 | 2,600 | REGRESSED (< 1,040) |" in out


def test_failed_session_fails_the_absolute_rows(absolute, monkeypatch, capsys):
    monkeypatch.setattr(check, "measure_absolute", lambda path: None)  # it printed why
    assert absolute(1000.0) == 1
    assert "| sequential-fast-1 | absolute | - | 1,000 | REGRESSED (< 400) |" in capsys.readouterr().out


def test_absolute_gates_skipped_without_a_baseline_for_this_machine(absolute, tmp_path, capsys):
    other = tmp_path / "some-other-machine" / check.BASELINE_NAME  # another machine's numbers never count
    other.parent.mkdir()
    other.write_text(benchmark_json({cell: 1e9 for cell in check.ABSOLUTE}, "some-other-machine"))
    assert absolute(None) == 0
    out = capsys.readouterr().out
    assert f"absolute gates skipped: no pytest-benchmark baseline for {machine_id()}" in out
    assert "| absolute |" not in out and not absolute.sessions  # nothing measured for it


def test_baseline_of_another_machine_is_a_usage_error(absolute, tmp_path, monkeypatch, capsys):
    path = tmp_path / machine_id() / check.BASELINE_NAME
    path.parent.mkdir()
    path.write_text(benchmark_json({"sequential-fast-1": 1.0}, "copied-from-elsewhere"))
    monkeypatch.setattr(check, "BASELINES", tmp_path)
    assert main(["check", "--reference", str(tmp_path / "ref.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "measured on 'copied-from-elsewhere'" in err[0] and str(path) in err[0]
    assert not absolute.sessions  # failed before measuring


def test_update_writes_ratios_and_the_session_as_baseline(absolute, tmp_path):
    ref = tmp_path / "ref.json"
    assert check.run_check(ref, update=True, baselines=tmp_path) == 0
    assert json.loads(ref.read_text())["machines"][machine_id()] == {n: 1.0 for n in check.GATES}
    assert check.load_baseline(tmp_path / machine_id() / check.BASELINE_NAME, machine_id()) == \
        {cell: 1000.0 for cell in check.ABSOLUTE}


def test_committed_baseline_is_this_machines_pytest_benchmark_json():
    for path in check.BASELINES.glob(f"*/{check.BASELINE_NAME}"):
        speeds = check.load_baseline(path, path.parent.name)
        assert set(speeds) == set(check.ABSOLUTE), path
        assert "machine_info" in json.loads(path.read_text())  # pytest-benchmark's own file


def test_bad_reference_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "ref.json"
    bad.write_text("{not json")
    assert main(["check", "--reference", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid JSON" in err[0]


@pytest.mark.slow
@pytest.mark.quiet
def test_injected_slowdown_fails_the_gate(tmp_path):
    """The real measurement: the committed reference passes on a clean tree (CI runs that), and a
    sleep in every fast-wrapper env step (tests/plugins/sitecustomize.py, in every process the
    check starts) makes the gate exit 1, in the ratio gate and, where this machine has a
    pytest-benchmark baseline, in the absolute rows too."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests' / 'plugins'}:{ROOT}", "FASTDQN_SLOW_FAST_WRAPPERS": "0.003",
           "FASTDQN_BENCH_STEPS": "500"}  # shorter rounds: the slowed cells take 3 ms a step
    proc = subprocess.run([sys.executable, "-m", "fastdqn", "check", "--rounds", "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr

    def verdict(gate):
        return proc.stdout.split(f"| {gate} |")[1].split("\n")[0]
    assert "REGRESSED" in verdict("wrappers_fast")
    if (check.BASELINES / machine_id() / check.BASELINE_NAME).exists():
        assert "REGRESSED" in verdict("sequential-fast-1") and "ok" in verdict("sequential-baseline-1")
