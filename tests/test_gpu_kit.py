"""The GPU kit (benchmarks/gpu_kit.py): its dry run passes every step on the CPU and writes the
results layout; the CUDA tests it names exist; without CUDA the real run refuses in one line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdqn.results import load_result, machine_id

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "benchmarks" / "gpu_kit.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_kit  # noqa: E402


def test_the_cuda_tests_it_names_exist():
    for node in gpu_kit.CUDA_TESTS + gpu_kit.COMPILE_TESTS:
        path, _, name = node.partition("::")
        text = (ROOT / path).read_text()
        assert not name or re.search(rf"^def {name}\(", text, re.M), node


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_real_run_without_cuda_is_refused_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(KIT), "part1", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "--dry-run" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # about a minute on the 2-core machine: every step of both parts, tiny budgets
def test_dry_run_passes_every_step_and_writes_the_results_layout(tmp_path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = tmp_path / "out"
    for part in ("part1", "part2"):
        proc = subprocess.run([sys.executable, str(KIT), part, str(out), "--dry-run"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    d = out / machine_id()
    summary = json.loads((d / "gpu_kit.json").read_text())
    steps = {s["step"]: s["status"] for part in ("part1", "part2") for s in summary[part]["steps"]}
    assert steps == dict.fromkeys(["preflight", "cuda_tests", "torch_pong_speed", "ale_vector_speed",
                                   "learner_speed", "cuda_compile_tests", "learner_speed_compile", "kit_ladder",
                                   "kit_fast_path", "time_to_17", "report"], "ok")
    assert json.loads((d / "gpu_kit_preflight.json").read_text())["compile_ok"] is True
    assert "testsuite" in (d / "gpu_kit_cuda_tests.xml").read_text()
    for name in ("learner_speed", "learner_speed_compile"):
        learner = json.loads((d / f"{name}.json").read_text())
        assert learner["cells"] and all("updates_per_second_synced" in c for c in learner["cells"])
    for name in ("torch_pong_speed_cpu", "ale_vector_speed"):
        assert json.loads((d / f"{name}.json").read_text())["rows"]
    for matrix, cell in (("kit_ladder", "baseline"), ("kit_fast_path", "torch_pong_device"),
                         ("kit_time_to_17", "recipe")):
        result = load_result(d / matrix / cell / "123.json")
        assert result["status"] == "budget" and result["machine"] and result["cuda_math"]
    recipe = load_result(d / "kit_time_to_17" / "recipe" / "123.json")["config"]
    assert recipe["hyperparams"]["n_step"] == 3 and recipe["flags"]["backend"] == "ale_async"
    report = (out / "README.md").read_text()
    assert f"## {machine_id()} / kit_ladder" in report and "learner_speed.md" in report
