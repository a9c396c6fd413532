"""Runs that cannot go on end in one line: a diverged loss ends the run as failed with its result
and checkpoint written; a replay that does not fit and an env id gymnasium does not know are
usage errors (exit 2) named with what was expected."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fastdqn.replay as replay_mod
from fastdqn.cli import main
from fastdqn.errors import UsageError
from fastdqn.replay import FrameReplay


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("fastdqn: error:")]


def test_a_diverged_loss_fails_the_run_at_the_next_logged_step(tmp_path, capsys, caplog):
    out = tmp_path / "r.json"
    assert main(["train", "--env", "CartPole-v1", "--lr", "1e6", "--max-steps", "20000", "--replay-initial", "200",
                 "--fps-every", "100", "--progress", "false", "--device", "cpu", "--out", str(out)]) == 1
    assert not [r for r in caplog.records if "terminating due to exception" in r.getMessage()]  # ignite's two
    (line,) = error_lines(capsys)
    assert "diverged" in line and ("nan" in line or "inf" in line)
    result = json.loads(out.read_text())
    assert result["status"] == "failed" and "diverged" in result["stop_reason"]
    assert result["steps"] < 2000  # stopped at a logged step soon after, not at the budget
    assert (tmp_path / "r.pt").exists()


@pytest.mark.parametrize("shape,dtype,envs", [((4, 84, 84), np.uint8, 1), ((4, 84, 84), np.uint8, 8),
                                              ((2, 84, 84), np.uint8, 3), ((4,), np.float32, 2),
                                              ((4, 84, 84), torch.uint8, 4)])  # torch_pong's device replay
def test_planned_replay_bytes_are_what_it_allocates(shape, dtype, envs):
    device = torch.device("cpu") if isinstance(dtype, torch.dtype) else None
    assert FrameReplay.planned_nbytes(1000, shape, dtype, envs) == \
        FrameReplay(1000, shape, dtype, envs, device=device).nbytes()


def test_a_replay_over_the_free_memory_is_refused_before_it_is_allocated(monkeypatch):
    need = FrameReplay.planned_nbytes(1000, (4, 84, 84), np.uint8)
    monkeypatch.setattr(replay_mod, "available_bytes", lambda device: (need - 1, "available on this machine"))
    with pytest.raises(UsageError, match=r"replay_size 1,000: the replay needs 0\.01 GiB, 0\.01 GiB available"):
        FrameReplay(1000, (4, 84, 84), np.uint8)
    monkeypatch.setattr(replay_mod, "available_bytes", lambda device: (need, "available on this machine"))
    FrameReplay(1000, (4, 84, 84), np.uint8)  # exactly what it needs: fits


def test_a_replay_larger_than_the_machine_is_a_usage_error(tmp_path, capsys):
    assert main(["train", "--replay-size", "500000000", "--replay-initial", "1000", "--max-steps", "10",
                 "--out", str(tmp_path / "r.json")]) == 2
    (line,) = error_lines(capsys)
    assert "replay_size 500,000,000: the replay needs 3,295.95 GiB" in line and "available on this machine" in line


@pytest.mark.parametrize("env,hint", [("NoSuchGameNoFrameskip-v4", "Did you mean: `NameThisGameNoFrameskip`"),
                                      ("CartPole-v9", "`v0`, `v1`")])
def test_an_unknown_env_id_is_one_line_with_gymnasiums_suggestion(tmp_path, capsys, env, hint):
    assert main(["train", "--env", env, "--max-steps", "10", "--out", str(tmp_path / "r.json")]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"fastdqn: error: env {env!r}:") and hint in line
    assert not (tmp_path / "r.json").exists()  # refused before any env or result
