"""500 agent steps of real ALE Pong through each preset: ~400 learner updates, a valid result."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

PRESET_FLAGS = {
    "baseline": {"no_grad": True, "loop": "serial"},
    "slow_grads": {"no_grad": False, "loop": "serial"},
    "ptan_reference": {"no_grad": True, "loop": "ptan"},
}


@pytest.mark.parametrize("preset", list(PRESET_FLAGS))
def test_preset_runs_on_pong(run_train, one_torch_thread, preset):
    result = run_train("--preset", preset, "--replay-initial", "100", "--max-steps", "500")
    assert result["status"] == "budget"
    assert result["stop_reason"].startswith("step budget")
    assert result["error"] is None
    assert result["steps"] == 500
    assert 0 < result["updates"] <= 500
    assert result["updates"] >= 500 - 100 - 1  # one update per agent step after the warm-up
    assert result["fps"] > 0 and result["fps_total"] > 0
    assert result["frames_per_step"] == 4
    assert result["frames_per_second"] == pytest.approx(4 * result["fps"])
    assert result["wall_seconds"] > 0
    assert result["device"] == "cpu"
    cfg = result["config"]
    assert cfg["preset"] == preset
    for flag, value in PRESET_FLAGS[preset].items():
        assert cfg["flags"][flag] == value, flag
    assert cfg["hyperparams"]["env"] == "PongNoFrameskip-v4"
    assert cfg["hyperparams"]["replay_initial"] == 100
    assert cfg["run"]["max_steps"] == 500
    assert result["solved"]["mean100"]["steps"] is None  # 500 steps are less than one Pong game


def test_n_envs_batch_and_replay_ratio(run_train, one_torch_thread):
    """--envs N (the book's way): one SGD step of batch 32 x N per round of N agent steps, so the
    samples per agent step after the warm-up stay the book's 32."""
    result = run_train("--env", "CartPole-v1", "--envs", "3", "--max-steps", "900", "--replay-initial", "300",
                       "--stop-reward", "1000")
    assert result["samples_per_update"] == 96
    assert result["steps"] == 900 and result["updates"] == (900 - 300) // 3 + 1
    assert result["replay_ratio"] == pytest.approx(32, rel=0.02)
