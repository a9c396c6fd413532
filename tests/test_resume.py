"""`train --resume STATE`: a stopped serial-loop run goes on where it ended. The state round-trips
bit for bit; a resumed run continues its counters, schedules, curve and clock; the result names
every part; what cannot be resumed is a one-line error."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastdqn.agent import EpsilonGreedy
from fastdqn.cli import main
from fastdqn.config import build_config
from fastdqn.learner import Learner
from fastdqn.model import make_net
from fastdqn.replay import FrameReplay, sampler
from fastdqn.resume import load_state, restore, save_state
from fastdqn.schedule import UpdateSchedule
from fastdqn.telemetry import Telemetry

BASE = ["--env", "CartPole-v1", "--replay-initial", "50", "--batch-size", "8", "--progress", "false"]


def fresh_loop(cfg):
    hp = cfg.hp
    learner = Learner(make_net((4,), 2, hp.mlp_hidden), hp, cfg.flags, "cpu")
    replay = FrameReplay(300, (4,), np.float32, num_envs=2, gamma=hp.gamma, n_step=3)
    loop = {"learner": learner, "schedule": UpdateSchedule(hp, 2), "replay": replay, "rng": sampler(replay, 1),
            "policy": EpsilonGreedy(learner.net, 2, "cpu", True, seed=3)}
    loop["collector"] = type("Steps", (), {"steps": 0})()
    return loop


def flat(doc, prefix=""):
    """Every leaf of a state doc by its path, tensors as numpy."""
    if isinstance(doc, dict):
        return {k: v for key, sub in doc.items() for k, v in flat(sub, f"{prefix}/{key}").items()}
    if isinstance(doc, (list, tuple)):
        return {k: v for i, sub in enumerate(doc) for k, v in flat(sub, f"{prefix}/{i}").items()}
    return {prefix: doc.numpy() if isinstance(doc, torch.Tensor) else doc}


def test_state_round_trip_is_bit_for_bit(tmp_path):
    cfg = build_config(None, None, {"env": "CartPole-v1", "n_step": 3, "batch_size": 8})
    a, t = fresh_loop(cfg), Telemetry(475.0, 1)
    rng = np.random.default_rng(0)
    a["replay"].start(np.arange(2), rng.random((2, 4), dtype=np.float32))
    for _ in range(40):  # some transitions, updates, draws: every part of the state non-trivial
        a["replay"].add(rng.integers(0, 2, 2), rng.random(2, dtype=np.float32), rng.random(2) < 0.1,
                        rng.random((2, 4), dtype=np.float32))
    for _ in range(5):
        a["learner"].update([torch.as_tensor(x) for x in a["replay"].sample(8, a["rng"])])
    a["policy"](rng.random((2, 4), dtype=np.float32), 0.5)
    a["schedule"].done, a["schedule"].last_sync, a["collector"].steps = 7, 40, 80
    t.curve, t.rewards.window, t.updates = [[1, 30, 1.5, 12.0]], type(t.rewards.window)([12.0], maxlen=100), 5
    save_state(tmp_path / "a.pt", cfg, a, t, with_replay=True)
    b, t2 = fresh_loop(cfg), Telemetry(475.0, 1)
    doc = load_state(tmp_path / "a.pt")
    restore(doc, b, t2)
    b["collector"].steps = doc["agent_steps"]
    save_state(tmp_path / "b.pt", cfg, b, t2, with_replay=True)
    # the telemetry's clock goes on and its parts grow by the one in progress: all else is equal
    moving = lambda key: key == "/telemetry/seconds" or key.startswith("/telemetry/parts")
    da, db = (flat(load_state(tmp_path / f"{n}.pt")) for n in "ab")
    da, db = ({k: v for k, v in d.items() if not moving(k)} for d in (da, db))
    assert da.keys() == db.keys() and len(da) > 40
    for key in da:
        assert np.array_equal(da[key], db[key]) if isinstance(da[key], np.ndarray) else da[key] == db[key], key


def run(tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    assert main(["train", *BASE, "--out", str(out), *args]) == 0
    return out, json.loads(out.read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return run(tmp_path_factory.mktemp("straight"), "straight", "--max-steps", "600")[1]


@pytest.mark.parametrize("resumable, updates", [("with_replay", 551), ("yes", 251 + 251)])
def test_a_resumed_run_continues_its_counters_schedules_curve_and_clock(tmp_path, straight, resumable, updates):
    out, first = run(tmp_path, "r", "--max-steps", "300", "--resumable", resumable)
    assert main(["train", "--resume", str(out.with_suffix(".state.pt")), "--max-steps", "600",
                 "--progress", "false"]) == 0
    resumed = json.loads(out.read_text())
    assert resumed["steps"] == straight["steps"] == 600
    # with the replay, learning never pauses: the updates are the straight run's; without, it
    # refills replay_initial (50) first: 251 updates in each part
    assert resumed["updates"] == updates and straight["updates"] == 551
    assert resumed["reward_curve"][:len(first["reward_curve"])] == first["reward_curve"]
    later = resumed["reward_curve"][len(first["reward_curve"]):]
    assert later and min(row[2] for row in later) >= first["wall_seconds"]  # the clock goes on
    parts = resumed["resumed"]["parts"]
    assert [p["steps"] for p in parts] == [[0, 300], [300, 600]]
    assert parts[0]["seconds"] == pytest.approx(first["wall_seconds"], abs=0.01)
    assert resumed["wall_seconds"] == pytest.approx(sum(p["seconds"] for p in parts), abs=0.01)
    assert resumed["stop_rule"] == first["stop_rule"] == straight["stop_rule"]  # CartPole's 475, derived again
    assert resumed["config"]["hyperparams"] == first["config"]["hyperparams"]
    from fastdqn.bench.report import cell_stats
    assert cell_stats([resumed, straight])["resumed"] == 1


@pytest.mark.parametrize("args, message", [
    (["--lr", "0.5"], "--resume goes on with the run's own settings: lr 0.5 given"),
    (["--preset", "baseline"], "no --preset or --config with it"),
])
def test_resume_with_other_settings_is_one_line(tmp_path, capsys, args, message):
    out, _ = run(tmp_path, "r", "--max-steps", "120", "--resumable", "yes")
    capsys.readouterr()
    assert main(["train", "--resume", str(out.with_suffix(".state.pt")), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_what_cannot_be_resumed_is_one_line(tmp_path, capsys):
    out, _ = run(tmp_path, "r", "--max-steps", "120")  # not resumable: a checkpoint only
    capsys.readouterr()
    assert main(["train", "--resume", str(out.with_suffix(".pt"))]) == 2
    assert "resume takes <name>.state.pt" in capsys.readouterr().err
    assert main(["train", *BASE, "--parallel", "true", "--resumable", "yes", "--out", str(tmp_path / "p.json")]) == 2
    assert "the serial loop's" in capsys.readouterr().err


def test_checkpoints_go_on_at_the_next_multiple_after_a_resume(tmp_path):
    out, _ = run(tmp_path, "r", "--max-steps", "250", "--resumable", "yes", "--checkpoint-every", "100")
    assert main(["train", "--resume", str(out.with_suffix(".state.pt")), "--max-steps", "450",
                 "--progress", "false"]) == 0
    assert sorted(p.name for p in tmp_path.glob("r.step*.pt")) == [f"r.step{n}.pt" for n in (100, 200, 300, 400)]
