"""Counted FLOPs against the hand-computed Nature-DQN figures, the compute block's arithmetic, and
the matmul peak benchmark writing what train reads."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fastdqn.compute import FlopCount, compute_report, count_flops, find_peak, load_peaks
from fastdqn.config import Hyperparams
from fastdqn.model import make_net
from fastdqn.profile import PhaseTimer

ROOT = Path(__file__).resolve().parent.parent

# multiply-adds of each Nature-DQN layer on a (4, 84, 84) Pong observation, 6 actions
CONV1 = 20 * 20 * 32 * 8 * 8 * 4
CONV2 = 9 * 9 * 64 * 4 * 4 * 32
CONV3 = 7 * 7 * 64 * 3 * 3 * 64
FC = 3136 * 512 + 512 * 6
FORWARD = 2 * (CONV1 + CONV2 + CONV3 + FC)  # 18.7 MFLOP
BACKWARD = 2 * FORWARD - 2 * CONV1          # weight and input grads, no input grad of the frames


@pytest.mark.parametrize("double, expected", [(False, 2 * FORWARD + BACKWARD), (True, 3 * FORWARD + BACKWARD)])
def test_counted_flops_match_the_hand_count(double, expected):
    hp = dataclasses.replace(Hyperparams(), double=double)
    count = count_flops(make_net((4, 84, 84), 6), (4, 84, 84), np.uint8, hp)
    assert count.per_act == FORWARD == 18_692_096
    assert count.per_update_sample == expected  # 68.2 MFLOP; Double DQN 86.9 (the extra s' forward)


def test_vector_observations_are_counted_too():
    count = count_flops(make_net((4,), 2, 16), (4,), np.float32, Hyperparams())
    assert count.per_act == 2 * (4 * 16 + 16 * 16 + 16 * 2)


def _telemetry(updates=100, batch=32, steps=10_000, learn_s=2.0, act_s=0.5, fps=500.0, replay_ratio=4.0):
    profile = PhaseTimer()
    profile.seconds.update(learn=learn_s, act=act_s)
    return SimpleNamespace(profile=profile, updates=updates, samples_per_update=batch, steps=steps,
                           fps=lambda: fps, replay_ratio=lambda: replay_ratio)


PEAKS = [{"device": "cpu", "threads": 2, "dtype": "bf16", "gflops": 400.0},
         {"device": "cpu", "threads": 2, "dtype": "fp32", "gflops": 180.0},
         {"device": "cpu", "threads": 1, "dtype": "bf16", "gflops": 200.0}]


def test_compute_report_rates_and_shares():
    flops = FlopCount(per_update_sample=80_000_000, per_act=20_000_000)
    out = compute_report(flops, _telemetry(), "cpu", 2, True, PEAKS)
    assert out["learn_gflops"] == pytest.approx(100 * 32 * 80e6 / 2.0 / 1e9)  # 128
    assert out["act_gflops"] == pytest.approx(10_000 * 20e6 / 0.5 / 1e9)       # 400
    assert out["loop_gflops"] == pytest.approx(500 * (4 * 80e6 + 20e6) / 1e9)   # 170
    assert out["peak"] == {"dtype": "bf16", "threads": 2, "gflops": 400.0}
    assert out["learn_share_of_peak"] == pytest.approx(128 / 400)
    assert out["loop_share_of_peak"] == pytest.approx(170 / 400)
    fp32 = compute_report(flops, _telemetry(), "cpu", 2, False, PEAKS)
    assert fp32["peak"]["gflops"] == 180.0


def test_compute_report_without_a_peak_or_phases():
    flops = FlopCount(80, 20)
    out = compute_report(flops, _telemetry(act_s=0.0), "cpu", 4, True, PEAKS)
    assert out["peak"] is None and out["learn_share_of_peak"] is None
    assert "machine_peak.py" in out["peak_note"]
    assert out["act_gflops"] is None  # no act phase (parallel loop: the players act)
    assert compute_report(None, _telemetry(), "cpu", 2, True, PEAKS) is None


def test_gpu_peak_ignores_threads():
    peaks = [{"device": "cuda", "threads": 16, "dtype": "bf16", "gflops": 5e5}]
    assert find_peak(peaks, "cuda:0", 2, "bf16") == peaks[0]
    assert find_peak(peaks, "cpu", 16, "bf16") is None


def test_machine_peak_benchmark_writes_what_train_reads(tmp_path):
    out = tmp_path / "machine"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "machine_peak.py"), "--threads", "1",
                           "--size", "64", "--repeats", "2", "--seconds", "0.01", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "machine_peak.json").read_text())
    assert [(p["dtype"], p["threads"]) for p in doc["peaks"]] == [("fp32", 1), ("bf16", 1)]
    assert all(p["gflops"] == max(p["runs"]) > 0 for p in doc["peaks"])
    assert load_peaks("machine", tmp_path) == doc["peaks"]
    assert "| cpu | 1 | bf16 |" in (out / "machine_peak.md").read_text()
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "machine_peak.py"), "--size", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["machine_peak: --size 0: expected at least 1"]


def test_a_run_records_its_compute_and_the_report_shows_it(tmp_path):
    from fastdqn.bench.report import matrix_table, phase_table
    from fastdqn.cli import main
    out = tmp_path / "r.json"
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "150", "--replay-initial", "50", "--batch-size", "8",
                 "--mlp-hidden", "16", "--progress", "false", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    compute = result["compute"]
    assert compute["flops_per_act"] == 2 * (4 * 16 + 16 * 16 + 16 * 2)
    # online forward on s, target forward on s', backward (weight grads = a forward, input grads of
    # every layer but the first)
    assert compute["flops_per_update_sample"] == 4 * compute["flops_per_act"] - 2 * 4 * 16
    learn_flops = result["updates"] * 8 * compute["flops_per_update_sample"]
    learn_seconds = result["phase_profile"]["trainer"]["seconds"]["learn"]  # rounded to 0.1 ms
    assert compute["learn_gflops"] == pytest.approx(learn_flops / learn_seconds / 1e9, rel=1e-2)
    table = matrix_table({"cell": [result]}, ["cell"])
    assert f"| {compute['loop_gflops']:,.1f}" in table
    assert f"{compute['learn_gflops']:,.1f}" in phase_table({"cell": [result]}, ["cell"])
