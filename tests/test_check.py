"""The speed gate: passes against a reference it meets, fails (exit 1, table) on an injected slowdown."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdqn.bench import check
from fastdqn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_committed_reference_is_valid():
    doc = check.load_reference(check.REFERENCE)
    assert "default" in doc["machines"] and set(doc["machines"]["default"]) == set(check.GATES)


def test_gate_verdicts_against_a_reference(tmp_path, monkeypatch, capsys):
    measured = {name: 2.0 for name in check.GATES}
    monkeypatch.setattr(check, "measure", lambda rounds: dict(measured))
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"tolerance": 0.25, "machines": {"default": {n: 2.5 for n in check.GATES}}}))
    assert check.run_check(ref) == 0  # 2.0 >= 2.5 x 0.75
    measured["wrappers_fast"] = 1.8    # < 1.875
    assert check.run_check(ref) == 1
    out = capsys.readouterr().out
    assert "| wrappers_fast | 1.80 | 2.50 | REGRESSED" in out and "| act_no_grad | 2.00 | 2.50 | ok" in out


def test_bad_reference_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "ref.json"
    bad.write_text("{not json")
    assert main(["check", "--reference", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid JSON" in err[0]


@pytest.mark.slow
def test_injected_slowdown_fails_the_gate(tmp_path):
    """The real measurement: the committed reference passes on a clean tree (CI runs that), and a
    sleep in every fast-wrapper env step (the test-only switch) makes the gate exit 1."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), check.SLOWDOWN_ENV: "0.003"}
    proc = subprocess.run([sys.executable, "-m", "fastdqn", "check", "--rounds", "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "| wrappers_fast |" in proc.stdout and "REGRESSED" in proc.stdout.split("| wrappers_fast |")[1].split("\n")[0]
