"""Checkpoints: the round trip bit for bit, what train writes beside its result, and one-line
errors for files that are not checkpoints or were made for another env."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from fastdqn.checkpoint import build_net, checkpoint_path, load_checkpoint, save_checkpoint
from fastdqn.cli import main
from fastdqn.config import build_config
from fastdqn.errors import UsageError
from fastdqn.model import make_net


@pytest.mark.parametrize("shape, dueling", [((4,), False), ((4, 84, 84), False), ((4, 84, 84), True)])
def test_round_trip_is_bit_for_bit(tmp_path, shape, dueling):
    torch.manual_seed(0)
    net = make_net(shape, 6, 16, dueling)
    cfg = build_config("baseline", None, {"dueling": dueling, "mlp_hidden": 16}).to_dict()
    path = tmp_path / "n.pt"
    save_checkpoint(path, net, cfg, shape, 6, 1234)
    doc = load_checkpoint(path)
    assert doc["step"] == 1234 and doc["obs_shape"] == list(shape) and doc["config"] == cfg
    loaded = build_net(doc, shape, 6)
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randint(0, 256, (2, *shape), dtype=torch.uint8) if len(shape) == 3 else torch.randn(2, *shape)
    assert torch.equal(net(x), loaded(x))


def test_train_writes_the_net_beside_its_result(tmp_path):
    out = tmp_path / "r.json"
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "120", "--replay-initial", "40", "--batch-size", "8",
                 "--progress", "false", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint"] == str(checkpoint_path(out)) == str(tmp_path / "r.pt")
    doc = load_checkpoint(result["checkpoint"])
    assert doc["step"] == result["steps"] and doc["config"] == result["config"]
    assert type(build_net(doc, (4,), 2)).__name__ == "MLP"


def test_files_that_are_not_checkpoints_are_one_line_errors(tmp_path):
    def error(path) -> str:
        with pytest.raises(UsageError) as e:
            load_checkpoint(path)
        assert "\n" not in str(e.value)
        return str(e.value)
    assert "no such file" in error(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    assert "not a fastdqn checkpoint" in error(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    assert "no 'fastdqn-checkpoint' tag" in error(tmp_path / "other.pt")
    # weights_only: an arbitrary pickled object is refused, never run
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Exception("not weights")))
    assert "not a fastdqn checkpoint" in error(tmp_path / "evil.pt")
    net = make_net((4,), 2, 8)
    save_checkpoint(tmp_path / "ok.pt", net, build_config("baseline", None, {"mlp_hidden": 8}).to_dict(), (4,), 2, 0)
    doc = torch.load(tmp_path / "ok.pt", weights_only=True)
    torch.save({**doc, "version": 99}, tmp_path / "future.pt")
    assert "version 99, expected 1" in error(tmp_path / "future.pt")


def test_a_checkpoint_for_another_env_or_network_is_refused(tmp_path):
    net = make_net((4,), 2, 8)
    save_checkpoint(tmp_path / "c.pt", net, build_config("baseline", None, {"mlp_hidden": 8, "env": "CartPole-v1"}).to_dict(),
                    (4,), 2, 0)
    doc = load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(UsageError, match=r"made for observations \(4,\) and 2 actions \(env CartPole-v1\)"):
        build_net(doc, (4, 84, 84), 6)
    doc["config"]["hyperparams"]["mlp_hidden"] = 16  # weights of an 8-wide net into a 16-wide one
    with pytest.raises(UsageError, match="do not fit its network"):
        build_net(doc)


def test_checkpoint_every_writes_the_net_at_each_multiple_of_agent_steps(tmp_path):
    out = tmp_path / "r.json"
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "300", "--replay-initial", "50", "--batch-size", "8",
                 "--checkpoint-every", "100", "--progress", "false", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["r.pt", "r.step100.pt", "r.step200.pt", "r.step300.pt"]
    docs = {n: load_checkpoint(tmp_path / f"r.step{n}.pt") for n in (100, 200, 300)}
    assert [d["step"] for d in docs.values()] == [100, 200, 300]
    final = load_checkpoint(tmp_path / "r.pt")
    assert any(not torch.equal(docs[100]["state_dict"][k], v) for k, v in docs[200]["state_dict"].items())  # learned
    assert all(torch.equal(final["state_dict"][k], v) for k, v in docs[300]["state_dict"].items())  # the last one
