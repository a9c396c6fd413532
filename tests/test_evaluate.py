"""`fastdqn eval`: whole games of a checkpoint's policy, split evenly over the env copies."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastdqn.cli import main
from fastdqn.evaluate import quotas


def test_quotas_split_games_evenly():
    assert quotas(10, 4).tolist() == [3, 3, 2, 2]
    assert quotas(3, 3).tolist() == [1, 1, 1]
    assert quotas(1, 1).sum() == 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "r.json"
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "120", "--replay-initial", "40", "--batch-size", "8",
                 "--progress", "false", "--out", str(out)]) == 0
    return out.with_suffix(".pt")


def test_eval_plays_whole_games_on_each_env(checkpoint, capsys):
    assert main(["eval", str(checkpoint), "--episodes", "5", "--envs", "2"]) == 0
    doc = json.loads(checkpoint.with_suffix(".eval.json").read_text())
    assert doc["status"] == "completed" and doc["episodes"] == 5 and doc["epsilon"] == 0.0
    assert sorted(g["env"] for g in doc["games"]) == [0, 0, 0, 1, 1]  # each env's first games
    assert doc["scores"] == doc["steps_per_game"]  # CartPole: 1 point per step, the raw score
    assert doc["mean"] == pytest.approx(np.mean(doc["scores"])) and doc["max"] == max(doc["scores"])
    assert doc["checkpoint_step"] == 120
    assert "5 games: mean" in capsys.readouterr().out


def test_eval_is_reproducible_for_a_seed(checkpoint, tmp_path):
    for name in ("a", "b"):
        assert main(["eval", str(checkpoint), "--episodes", "3", "--epsilon", "0.5", "--seed", "7", "--no-progress",
                     "--out", str(tmp_path / f"{name}.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b"))
    assert a["games"] == b["games"]


@pytest.mark.parametrize("args, message", [
    (["--episodes", "0"], "--episodes 0: expected at least 1"),
    (["--epsilon", "2"], "--epsilon 2.0: expected a value in [0, 1]"),
])
def test_eval_bad_input_is_one_line(checkpoint, capsys, args, message):
    assert main(["eval", str(checkpoint), *args]) == 2
    assert capsys.readouterr().err.strip() == f"fastdqn: error: {message}"


def test_train_can_evaluate_its_checkpoint_at_the_end_and_report_shows_it(tmp_path):
    from fastdqn.bench.report import matrix_table
    out = tmp_path / "r.json"
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "120", "--replay-initial", "40", "--batch-size", "8",
                 "--eval-episodes", "3", "--progress", "false", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    played = json.loads((tmp_path / "r.eval.json").read_text())
    assert result["eval"]["episodes"] == played["episodes"] == 3 and result["eval"]["mean"] == played["mean"]
    assert result["eval"]["epsilon"] == 0.0
    assert f"| {played['mean']:,.1f} | budget |" in matrix_table({"cell": [result]}, ["cell"])
