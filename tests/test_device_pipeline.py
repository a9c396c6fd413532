"""The device-resident pipeline and the fast flags through whole runs (short budgets, CPU):
torch_pong in every loop that takes it, the replay on the device in the serial and parallel
loops, the recipe's replay ratio as recorded, and nothing copied in the device loop."""
from __future__ import annotations

import pytest
import torch

from fastdqn.cli import main
from fastdqn.results import load_result

SMALL_PONG = ("--env", "torch_pong", "--pong-size", "36", "--stack", "2", "--replay-initial", "200",
              "--replay-size", "2000")


def test_device_loop_runs_torch_pong_without_copies(run_train, one_torch_thread):
    r = run_train(*SMALL_PONG, "--loop", "device", "--envs", "8", "--max-steps", "600",
                  "--updates-per-step", "0.25", "--batch-size", "16")
    assert r["status"] == "budget" and r["steps"] == 600
    assert r["device"] == "cpu"
    share = r["phase_profile"]["trainer"]["seconds"]
    assert share["copy"] == 0.0 and share["learn"] > 0 and share["env"] > 0
    # 0.25 updates of 16 per agent step: 4 samples per step, first update in the round that
    # fills the replay (steps 200..600 -> ceil(401 / 4) updates)
    assert r["updates"] == 101 and r["samples_per_update"] == 16
    assert r["replay_ratio"] == pytest.approx(4, rel=0.1)
    assert r["frames_per_step"] == 4


def test_serial_loop_takes_torch_pong_and_a_device_replay(run_train, one_torch_thread):
    r = run_train(*SMALL_PONG, "--envs", "4", "--replay", "device", "--max-steps", "400")
    assert r["status"] == "budget" and r["steps"] == 400 and r["updates"] == 51  # rounds 200, 204 .. 400
    assert r["samples_per_update"] == 4 * 32


def test_book_schedule_unchanged_by_the_recipe_flag_default(run_train, one_torch_thread):
    r = run_train("--env", "CartPole-v1", "--envs", "3", "--replay-initial", "300", "--max-steps", "900")
    assert r["samples_per_update"] == 96 and r["updates"] == 201  # rounds from the one reaching 300
    assert r["replay_ratio"] == pytest.approx(32, rel=0.05)


@pytest.mark.slow
def test_parallel_loop_takes_torch_pong_and_a_device_replay(run_train, one_torch_thread):
    r = run_train(*SMALL_PONG, "--parallel", "true", "--envs", "2", "--replay", "device",
                  "--max-steps", "600")
    assert r["status"] == "budget" and r["steps"] >= 600 and r["updates"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_loop_on_cuda_with_fast_learner(tmp_path):
    out = tmp_path / "r.json"
    assert main(["train", *SMALL_PONG, "--loop", "device", "--envs", "256", "--max-steps", "20000",
                 "--updates-per-step", "0.0625", "--batch-size", "64", "--adam", "fused", "--cuda-graph",
                 "true", "--device", "cuda", "--progress", "false", "--out", str(out)]) == 0
    r = load_result(out)
    assert r["status"] == "budget" and r["device"].startswith("cuda")
    assert r["phase_profile"]["trainer"]["seconds"]["copy"] == 0.0


def test_device_loop_rejects_pinned_in_one_line(tmp_path, capsys):
    # pinned stages host-to-device copies; the device loop makes none, so the flag would do nothing
    out = tmp_path / "r.json"
    assert main(["train", *SMALL_PONG, "--loop", "device", "--pinned", "true", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdqn: error: pinned") and not out.exists()
