"""Core pieces against hand-computed values: Bellman loss, epsilon schedule, the no_grad flag,
the stop rules, and the result file (write, read back, validation)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fastdqn.agent import EpsilonGreedy, epsilon_at, q_values
from fastdqn.cli import main
from fastdqn.config import build_config
from fastdqn.errors import UsageError
from fastdqn.loss import discounts_of, dqn_loss, make_target
from fastdqn.results import SCHEMA_VERSION, load_result, write_json_atomic
from fastdqn.telemetry import RewardTracker
from helpers import linear


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Two shared cores: OpenMP threads spinning against other processes make a tiny MLP far
    slower (results/amd-epyc-2c/torch_threads.md). One thread is what these sizes need."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the loss ---------------------------------------------------------------------------

def _nets():
    # Q(s) = W s + b
    net = linear([[1.0, 2.0], [0.0, -1.0]], [0.5, 0.0])
    tgt = linear([[2.0, 0.0], [1.0, 1.0]], [0.0, -1.0])
    return net, tgt


def _batch(gamma=None):
    """With gamma: the replay's form, one-step discounts in place of the done flags."""
    obs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    actions = torch.tensor([0, 1, 1])
    rewards = torch.tensor([1.0, -1.0, 0.5])
    dones = torch.tensor([False, True, False])          # the 2nd transition is terminal
    next_obs = torch.tensor([[0.5, 2.0], [1.0, 1.0], [2.0, -1.0]])
    return obs, actions, rewards, (dones if gamma is None else discounts_of(dones, gamma)), next_obs


GAMMA = 0.5
# By hand:
#   Q(s1) = [1+0+.5, 0] = [1.5, 0]     a=0 -> 1.5
#   Q(s2) = [0+2+.5, -1] = [2.5, -1]   a=1 -> -1
#   Q(s3) = [1+2+.5, -1] = [3.5, -1]   a=1 -> -1
#   Qt(s1') = [1, .5+2-1] = [1, 1.5]   max 1.5 -> y1 = 1 + .5*1.5 = 1.75
#   Qt(s2') = [2, 1]  terminal         -> y2 = -1   (bootstrapping would give 0)
#   Qt(s3') = [4, 2-1-1] = [4, 0]      max 4   -> y3 = .5 + .5*4 = 2.5
#   errors q - y: -0.25, 0, -3.5
EXPECTED_MSE = (0.0625 + 0.0 + 12.25) / 3            # 4.1041666...
EXPECTED_HUBER = (0.5 * 0.0625 + 0.0 + (3.5 - 0.5)) / 3  # smooth L1, beta 1: 1.0104166...


@pytest.mark.parametrize("no_grad", [True, False])
def test_mse_loss_by_hand(no_grad):
    net, tgt = _nets()
    loss = dqn_loss(net, tgt, *_batch(GAMMA), no_grad=no_grad, kind="mse")
    assert loss.item() == pytest.approx(EXPECTED_MSE, rel=1e-6)
    assert loss.item() == pytest.approx(4.1041667, rel=1e-6)


@pytest.mark.parametrize("no_grad", [True, False])
def test_huber_loss_by_hand(no_grad):
    net, tgt = _nets()
    loss = dqn_loss(net, tgt, *_batch(GAMMA), no_grad=no_grad, kind="huber")
    assert loss.item() == pytest.approx(EXPECTED_HUBER, rel=1e-6)
    assert loss.item() == pytest.approx(1.0104167, rel=1e-6)


def test_truncated_transition_bootstraps():
    # same batch, nothing terminal: y2 = -1 + .5 * max(2, 1) = 0, error -1 - 0 = -1
    net, tgt = _nets()
    obs, actions, rewards, _, next_obs = _batch()
    loss = dqn_loss(net, tgt, obs, actions, rewards, torch.full((3,), GAMMA), next_obs)
    assert loss.item() == pytest.approx((0.0625 + 1.0 + 12.25) / 3, rel=1e-6)


@pytest.mark.parametrize("no_grad", [True, False])
def test_loss_gradient_only_to_online_net(no_grad):
    net, tgt = _nets()
    loss = dqn_loss(net, tgt, *_batch(GAMMA), no_grad=no_grad)
    loss.backward()
    # d/dq of mean (q - y)^2 = 2 (q - y) / 3, only into the taken action's row:
    #   row 0 (action 0): s1 with error -0.25 -> 2*(-0.25)/3 * [1, 0]
    #   row 1 (action 1): s2 error 0, s3 error -3.5 -> 2*(-3.5)/3 * [1, 1]
    expected_w = torch.tensor([[-1 / 6, 0.0], [-7 / 3, -7 / 3]])
    expected_b = torch.tensor([-1 / 6, -7 / 3])
    torch.testing.assert_close(net.weight.grad, expected_w)
    torch.testing.assert_close(net.bias.grad, expected_b)
    # the target is a constant in both modes
    assert tgt.weight.grad is None and tgt.bias.grad is None


def test_gamma_scales_bootstrap():
    net, tgt = _nets()
    # gamma 0: y = r -> errors 1.5-1, -1-(-1), -1-.5
    loss = dqn_loss(net, tgt, *_batch(0.0))
    assert loss.item() == pytest.approx((0.25 + 0.0 + 2.25) / 3, rel=1e-6)


# --- epsilon ------------------------------------------------------------------------------

def test_epsilon_schedule_book_values():
    eps = lambda step: epsilon_at(step, 1.0, 0.02, 100_000)
    assert eps(0) == pytest.approx(1.0)
    assert eps(25_000) == pytest.approx(0.755)
    assert eps(50_000) == pytest.approx(0.51)
    assert eps(99_999) == pytest.approx(0.0200098)
    assert eps(100_000) == pytest.approx(0.02)
    assert eps(100_001) == pytest.approx(0.02)
    assert eps(10_000_000) == pytest.approx(0.02)


def test_epsilon_schedule_other_values():
    assert epsilon_at(0, 0.5, 0.1, 10) == pytest.approx(0.5)
    assert epsilon_at(5, 0.5, 0.1, 10) == pytest.approx(0.3)
    assert epsilon_at(10, 0.5, 0.1, 10) == pytest.approx(0.1)
    assert epsilon_at(11, 0.5, 0.1, 10) == pytest.approx(0.1)
    values = [epsilon_at(s, 1.0, 0.02, 1000) for s in range(0, 2001, 50)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never increases


# --- the no_grad flag -----------------------------------------------------------------------

@pytest.mark.parametrize("no_grad,builds_graph", [(True, False), (False, True)])
def test_action_selection_grad_flag(no_grad, builds_graph):
    net, _ = _nets()
    q = q_values(net, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), no_grad)
    assert q.requires_grad is builds_graph
    assert (q.grad_fn is not None) is builds_graph
    torch.testing.assert_close(q.detach(), torch.tensor([[1.5, 0.0], [2.5, -1.0]]))


def test_action_selection_greedy_and_random():
    net, _ = _nets()
    agent = EpsilonGreedy(net, 2, torch.device("cpu"), no_grad=True, seed=0)
    obs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)  # greedy: 0, 0, 0
    assert agent(obs, 0.0).tolist() == [0, 0, 0]
    obs = np.array([[0.0, -1.0]] * 200, np.float32)  # Q = [-1.5, 1] -> greedy 1
    assert set(agent(obs, 0.0).tolist()) == {1}
    assert set(agent(obs, 1.0).tolist()) == {0, 1}   # all random: both actions appear


@pytest.mark.parametrize("no_grad,builds_graph", [(True, False), (False, True)])
def test_target_branch_grad_flag(no_grad, builds_graph):
    net, tgt = _nets()
    seen = []
    tgt.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    dqn_loss(net, tgt, *_batch(GAMMA), no_grad=no_grad)
    assert seen == [builds_graph]


def test_loss_identical_in_both_modes():
    net, tgt = _nets()
    fast = dqn_loss(net, tgt, *_batch(0.99), no_grad=True)
    slow = dqn_loss(net, tgt, *_batch(0.99), no_grad=False)
    assert fast.item() == slow.item()
    assert fast.requires_grad and slow.requires_grad


def test_make_target_keeps_requires_grad():
    net, _ = _nets()
    tgt = make_target(net)
    assert tgt is not net
    assert all(p.requires_grad for p in tgt.parameters())
    torch.testing.assert_close(tgt.weight, net.weight)
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not torch.equal(tgt.weight, net.weight)  # a copy, not shared


# --- stop rules -------------------------------------------------------------------------------

def test_mean100_needs_a_full_window():
    t = RewardTracker(17.0)
    for i in range(1, 100):
        t.add(21.0, step=i * 10, wall=i * 0.5, episode=i)
    assert t.mean100 == 21.0
    assert t.solved_mean100 is None           # 99 episodes are not a window of 100
    t.add(21.0, step=1000, wall=50.0, episode=100)
    assert t.solved_mean100 == {"seconds": 50.0, "steps": 1000, "episodes": 100}
    # later episodes never move the first hit
    t.add(21.0, step=1010, wall=51.0, episode=101)
    t.add(-21.0, step=1020, wall=52.0, episode=102)
    assert t.solved_mean100 == {"seconds": 50.0, "steps": 1000, "episodes": 100}
    # the EMA, seeded with 21, was at the bound from the first episode on, and stays recorded there
    assert t.solved_ema == {"seconds": 0.5, "steps": 10, "episodes": 1}


def test_mean100_is_a_sliding_window():
    # 100 episodes of -21, then 21s: the window holds k 21s and 100-k -21s,
    # mean (42k - 2100)/100 >= 17 first at k = 91 (k = 90 gives 16.8, k = 91 gives 17.22)
    t = RewardTracker(17.0)
    for i in range(1, 101):
        t.add(-21.0, step=i, wall=float(i), episode=i)
    assert t.mean100 == -21.0 and t.solved_mean100 is None
    for k in range(1, 91):
        t.add(21.0, step=100 + k, wall=float(100 + k), episode=100 + k)
    assert t.mean100 == pytest.approx(16.8)
    assert t.solved_mean100 is None
    t.add(21.0, step=191, wall=191.0, episode=191)
    assert t.mean100 == pytest.approx(17.22)
    assert t.solved_mean100 == {"seconds": 191.0, "steps": 191, "episodes": 191}


def test_ema_seeded_with_first_reward():
    t = RewardTracker(17.0)
    t.add(-21.0, step=1, wall=1.0, episode=1)
    assert t.ema == -21.0                       # seeded, not decayed from 0
    t.add(21.0, step=2, wall=2.0, episode=2)
    assert t.ema == pytest.approx(-21.0 * 0.98 + 21.0 * 0.02)  # -20.16
    assert t.ema == pytest.approx(-20.16)


def test_ema_reaches_bound_at_hand_computed_episode():
    # after the seed -21 and n episodes of 21: ema = 21 - 42 * 0.98**n
    # >= 17  <=>  0.98**n <= 4/42  <=>  n >= ln(4/42)/ln(0.98) = 116.39  ->  n = 117, episode 118
    t = RewardTracker(17.0)
    t.add(-21.0, step=0, wall=0.0, episode=1)
    for ep in range(2, 118):
        t.add(21.0, step=ep * 100, wall=ep * 2.0, episode=ep)
    assert t.solved_ema is None
    assert t.ema == pytest.approx(16.969, abs=1e-3)  # 21 - 42 * 0.98**116
    t.add(21.0, step=11_800, wall=236.0, episode=118)
    assert t.solved_ema == {"seconds": 236.0, "steps": 11_800, "episodes": 118}
    assert t.ema == pytest.approx(17.0495, abs=1e-3)  # 21 - 42 * 0.98**117
    t.add(21.0, step=11_900, wall=238.0, episode=119)
    assert t.solved_ema == {"seconds": 236.0, "steps": 11_800, "episodes": 118}  # first hit only
    # the mean rule fired earlier, at the first full window: (-21 + 99 * 21) / 100 = 20.58
    assert t.solved_mean100 == {"seconds": 200.0, "steps": 10_000, "episodes": 100}


def test_bound_never_reached_leaves_none():
    t = RewardTracker(17.0)
    for i in range(1, 301):
        t.add(16.0 if i % 2 else 17.5, step=i, wall=float(i), episode=i)
    assert t.mean100 == pytest.approx(16.75)
    assert t.solved_mean100 is None and t.solved_ema is None
    assert t.ema < 17.0


def test_first_episode_can_solve_ema_but_not_mean100():
    t = RewardTracker(17.0)
    t.add(21.0, step=5, wall=0.25, episode=1)
    assert t.solved_ema == {"seconds": 0.25, "steps": 5, "episodes": 1}
    assert t.solved_mean100 is None


# --- result file ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cartpole_result(tmp_path_factory):
    """One tiny real run (CartPole, 300 steps). stop_reward 1000 is out of CartPole's reach (max
    500), so neither stop rule can fire and both must carry a reason."""
    tmp = tmp_path_factory.mktemp("run")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(["train", "--env", "CartPole-v1", "--max-steps", "300", "--replay-initial", "100",
                   "--batch-size", "16", "--progress", "false", "--device", "cpu", "--stop-reward", "1000",
                   "--fps-every", "100", "--out", str(tmp / "r.json")])
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    return tmp / "r.json"


def test_result_round_trip(cartpole_result):
    with open(cartpole_result) as fh:
        raw = json.load(fh)
    loaded = load_result(cartpole_result)
    assert loaded == raw
    assert loaded["schema_version"] == SCHEMA_VERSION
    assert loaded["status"] == "budget"
    assert loaded["steps"] == 300
    assert 200 <= loaded["updates"] <= 201   # one SGD step per agent step once the replay holds 100
    assert loaded["episodes"] == len(loaded["reward_curve"]) > 0
    cfg = loaded["config"]
    assert {"hyperparams", "flags", "run"} <= set(cfg)
    assert cfg["hyperparams"]["env"] == "CartPole-v1" and cfg["hyperparams"]["batch_size"] == 16
    assert cfg["flags"]["no_grad"] is True
    assert cfg["run"]["out"] == str(cartpole_result)
    assert {"python", "torch", "gymnasium", "ale_py", "cuda"} <= set(loaded["versions"])
    assert loaded["versions"]["python"] and loaded["versions"]["torch"] == torch.__version__
    assert {"cpu", "cores", "gpu"} <= set(loaded["hardware"])
    assert isinstance(loaded["hardware"]["cores"], int)
    for rule in ("mean100", "ema"):
        solved = loaded["solved"][rule]
        assert solved["seconds"] is None and solved["steps"] is None
        assert isinstance(solved["reason"], str) and solved["reason"].strip()
    assert loaded["fps"] is not None and loaded["fps"] > 0
    assert len(loaded["fps_series"]) >= 2


def test_result_has_tensorboard_events(cartpole_result):
    tb = cartpole_result.parent / "r_tb"
    assert tb.is_dir()
    events = list(tb.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"episodes/reward", "episodes/avg_reward", "train/loss", "train/avg_loss", "train/epsilon",
            "train/avg_fps", "train/profile_learn"} <= tags
    # every fps_every (100) agent steps; loss and FPS from the first update (step 100) on
    assert [e.step for e in acc.Scalars("train/epsilon")] == [100, 200, 300]
    assert [e.step for e in acc.Scalars("train/loss")] == [100, 200, 300]


def test_result_writes_no_temp_files(cartpole_result):
    names = {p.name for p in cartpole_result.parent.iterdir()}
    assert names == {"r.json", "r.pt", "r_tb"}  # the result, its checkpoint, its TensorBoard


def _corrupt(tmp_path: Path, raw: dict, how: str) -> Path:
    path = tmp_path / f"{how}.json"
    text = json.dumps(raw)
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
    elif how == "non_object":
        path.write_text(json.dumps([raw]))
    elif how == "wrong_schema":
        path.write_text(json.dumps({**raw, "schema_version": SCHEMA_VERSION + 1}))
    elif how == "missing_key":
        path.write_text(json.dumps({k: v for k, v in raw.items() if k != "steps"}))
    elif how == "wrong_type":
        path.write_text(json.dumps({**raw, "steps": "300"}))
    elif how == "bool_for_int":
        path.write_text(json.dumps({**raw, "episodes": True}))
    elif how == "bad_status":
        path.write_text(json.dumps({**raw, "status": "great"}))
    elif how == "missing_solved_rule":
        path.write_text(json.dumps({**raw, "solved": {"mean100": raw["solved"]["mean100"]}}))
    elif how == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif how == "empty":
        path.write_text("")
    return path


@pytest.mark.parametrize("how,names", [
    ("truncated", "JSON"), ("non_object", "object"), ("wrong_schema", "schema_version"),
    ("missing_key", "steps"), ("wrong_type", "steps"), ("bool_for_int", "episodes"),
    ("bad_status", "great"), ("missing_solved_rule", "ema"), ("binary", "JSON"), ("empty", "JSON"),
])
def test_load_result_rejects(cartpole_result, tmp_path, how, names):
    raw = json.loads(cartpole_result.read_text())
    path = _corrupt(tmp_path, raw, how)
    with pytest.raises(UsageError) as exc:
        load_result(path)
    message = str(exc.value)
    assert str(path) in message
    assert names in message
    assert "\n" not in message


def test_load_result_missing_file(tmp_path):
    path = tmp_path / "none.json"
    with pytest.raises(UsageError, match="none.json"):
        load_result(path)


def test_load_result_accepts_int_for_float(cartpole_result, tmp_path):
    raw = json.loads(cartpole_result.read_text())
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({**raw, "wall_seconds": 14}))
    assert load_result(path)["wall_seconds"] == 14


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json_atomic(path, {"a": 1, "b": [1.5, None]})
    assert json.loads(path.read_text()) == {"a": 1, "b": [1.5, None]}
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_write_json_atomic_file_mode(tmp_path):
    """The result gets the mode of a plain open(), not mkstemp's owner-only 0600."""
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    path = tmp_path / "atomic.json"
    write_json_atomic(path, {})
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_write_json_atomic_refuses_nan(tmp_path, bad):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"keep": True})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"fps": bad})
    assert json.loads(path.read_text()) == {"keep": True}  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left


@pytest.mark.parametrize("seconds", ["1.5", "2"])
def test_time_budget_stops_the_run(run_train, seconds):
    """A wall-clock budget, fractional or whole, ends the run with status budget and its reason,
    on the run's own clock, well before a step budget would."""
    result = run_train("--env", "CartPole-v1", "--max-seconds", seconds, "--replay-initial", "200",
                       "--max-steps", "10000000")
    assert result["status"] == "budget" and result["stop_reason"].startswith("time budget")
    assert float(seconds) <= result["wall_seconds"] < float(seconds) + 5


def test_threads_setting_holds_during_the_run_only(run_train, monkeypatch):
    """`--threads N` sets torch's intra-op threads for the run's loop and restores the caller's
    count afterwards (train() also runs inside tests and the check gate)."""
    import fastdqn.train as train_mod
    seen, real = [], train_mod.run_loop
    monkeypatch.setattr(train_mod, "run_loop", lambda *a: (seen.append(torch.get_num_threads()), real(*a)))
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    result = run_train("--env", "CartPole-v1", "--max-steps", "300", "--replay-initial", "100",
                       "--threads", str(want))
    assert seen == [want] and torch.get_num_threads() == before
    assert result["config"]["run"]["threads"] == want


def test_stop_rule_takes_the_setting_then_the_env_spec_then_pongs_17():
    from fastdqn.train import stop_rule
    assert stop_rule(build_config(None, None, {"env": "CartPole-v1"})) == (
        475.0, "the reward_threshold of CartPole-v1's gymnasium spec")
    assert stop_rule(build_config(None, None, {"env": "CartPole-v1", "stop_reward": 17})) == (17.0, "set")
    for env in ("PongNoFrameskip-v4", "torch_pong"):  # ALE specs carry no threshold
        assert stop_rule(build_config(None, None, {"env": env})) == (17.0, "the default: 17, Pong's rule (the chapter's)")
