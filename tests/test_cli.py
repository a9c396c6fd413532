"""CLI contract: bad user input -> exit 2, one `fastdqn: error:` line naming the bad value, no
traceback; --help works; config precedence defaults < preset < TOML < CLI.

Every error case here is raised before any environment is created, so nothing trains.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdqn.cli import main
from fastdqn.config import Config, build_config
from fastdqn.errors import UsageError

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


# (argv after `train`, a string the error line must contain: the bad value), id
# `{tmp}` in an argument is replaced by the test's tmp dir; files are made by _make_files.
BAD_INPUT = [
    pytest.param(["--preset", "nope"], "nope", id="unknown-preset"),
    pytest.param(["--bogus", "1"], "--bogus", id="unknown-option"),
    pytest.param(["--replay-size", "-5"], "-5", id="negative-size"),
    pytest.param(["--batch-size", "0"], "batch_size", id="zero-batch"),
    pytest.param(["--device", "tpu"], "tpu", id="unknown-device"),
    pytest.param(["--no-grad", "maybe"], "maybe", id="bad-bool"),
    pytest.param(["--loss", "l3"], "l3", id="bad-choice"),
    pytest.param(["--lr", "fast"], "fast", id="non-numeric"),
    pytest.param(["--lr", "nan"], "nan", id="nan"),
    pytest.param(["--stop-reward", "inf"], "inf", id="inf"),  # would crash the result write
    pytest.param(["--max-seconds=-inf"], "-inf", id="minus-inf"),
    pytest.param(["--replay-size", "1.5"], "1.5", id="int-not-float"),
    pytest.param(["--gamma", "1.5"], "1.5", id="gamma-above-max"),
    pytest.param(["--lr"], "--lr", id="missing-value"),
    pytest.param(["--config", "{tmp}/nowhere.toml"], "nowhere.toml", id="missing-config"),
    pytest.param(["--config", "{tmp}/bad.toml"], "bad.toml", id="malformed-toml"),
    pytest.param(["--config", "{tmp}/unknown_key.toml"], "bogus", id="unknown-toml-key"),
    pytest.param(["--config", "{tmp}/wrong_table.toml"], "no_grad", id="toml-key-wrong-table"),
    pytest.param(["--config", "{tmp}/bad_type.toml"], "big", id="toml-bad-type"),
    pytest.param(["--config", "{tmp}/bad_preset.toml"], "nope", id="toml-unknown-preset"),
    pytest.param(["--replay-size", "100", "--replay-initial", "200"], "200", id="initial-exceeds-size"),
    pytest.param(["--replay-initial", "10", "--batch-size", "64"], "64", id="batch-exceeds-initial"),
    pytest.param(["--device", "cuda"], "cuda", id="cuda-absent",
                 marks=pytest.mark.skipif(_cuda_available(), reason="CUDA is present here")),
    pytest.param(["--device", "cpu", "--pinned", "true"], "pinned", id="pinned-on-cpu"),
    pytest.param(["--device", "cpu", "--cuda-graph", "true"], "cuda_graph", id="cuda-graph-on-cpu"),
    pytest.param(["--compile", "true", "--cuda-graph", "true"], "compile", id="compile-and-cuda-graph"),
    pytest.param(["--loop", "device"], "PongNoFrameskip-v4", id="device-loop-needs-torch-pong"),
    pytest.param(["--env", "torch_pong", "--backend", "ale_sync"], "ale_sync", id="torch-pong-backend"),
    pytest.param(["--loop", "ptan", "--replay", "device"], "ptan", id="ptan-with-fast-flags"),
    pytest.param(["--compile-env", "true"], "compile_env", id="compile-env-needs-torch-pong"),
    pytest.param(["--adam", "sgd"], "sgd", id="unknown-adam"),
    pytest.param(["--updates-per-step", "-1"], "-1", id="negative-replay-ratio"),
    pytest.param(["--pong-size", "8"], "8", id="pong-size-too-small"),
]


def _make_files(tmp: Path) -> None:
    _write(tmp / "bad.toml", "[hyperparams\nlr = = 3\n")
    _write(tmp / "unknown_key.toml", "[hyperparams]\nbogus = 1\n")
    _write(tmp / "wrong_table.toml", "[hyperparams]\nno_grad = false\n")  # belongs to [flags]
    _write(tmp / "bad_type.toml", '[hyperparams]\nreplay_size = "big"\n')
    _write(tmp / "bad_preset.toml", 'preset = "nope"\n')


def _argv(args: list[str], tmp: Path) -> list[str]:
    return ["train"] + [a.replace("{tmp}", str(tmp)) for a in args]


def _check_error_output(err: str, must_name: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line, got {err!r}"
    assert lines[0].startswith("fastdqn: error: "), lines[0]
    assert must_name in lines[0], f"{must_name!r} not named in {lines[0]!r}"
    assert "Traceback" not in err


@pytest.mark.parametrize("args,must_name", BAD_INPUT)
def test_bad_input_exits_2_with_one_line(args, must_name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if it were, it lands here
    _make_files(tmp_path)
    rc = main(_argv(args, tmp_path))
    out, err = capsys.readouterr()
    assert rc == 2
    _check_error_output(err, must_name)
    assert out == ""
    assert not (tmp_path / "runs").exists(), "an error case started a run"


def test_bad_input_ids_are_unique():
    ids = [p.id for p in BAD_INPUT]
    assert len(ids) == len(set(ids)) >= 10


@pytest.mark.parametrize("args,must_name", [
    (["--device", "tpu"], "tpu"),
    (["--loss", "l3"], "l3"),
])
def test_bad_input_real_process(args, must_name, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "fastdqn", "train", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    _check_error_output(proc.stderr, must_name)
    assert proc.stdout == ""


def test_no_command_is_usage_error(capsys):
    assert main([]) == 2
    _check_error_output(capsys.readouterr().err, "command")


def _option_help(out: str, option: str) -> str:
    """The help text of one option in the (whitespace-joined) help, not the usage line."""
    return out.split("flags:", 1)[1].split(option + " ", 1)[1].split(" --", 1)[0]


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out


def test_train_help_shows_preset_settings(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--preset", "slow_grads", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "preset 'slow_grads' sets: no_grad=False" in out
    # the per-option default shown is the preset's, not the dataclass default
    no_grad_help = _option_help(out, "--no-grad")
    assert "[default: False]" in no_grad_help
    for name in ("baseline", "slow_grads", "ptan_reference"):
        assert name in out


def test_train_help_baseline_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "[default: True]" in _option_help(out, "--no-grad")
    assert "--replay-size" in out and "[default: 100000]" in out


# --- precedence: defaults < preset < TOML < CLI -----------------------------------------

def test_defaults_are_the_books():
    cfg = build_config()
    assert cfg.preset == "baseline"
    assert (cfg.hp.replay_size, cfg.hp.replay_initial, cfg.hp.batch_size) == (100_000, 10_000, 32)
    assert (cfg.hp.lr, cfg.hp.gamma, cfg.hp.target_sync_steps) == (1e-4, 0.99, 1000)
    assert cfg.flags.no_grad is True and cfg.flags.loop == "serial"


def test_preset_over_defaults():
    cfg = build_config("slow_grads")
    assert cfg.flags.no_grad is False
    assert cfg.preset == "slow_grads"
    assert build_config("ptan_reference").flags.loop == "ptan"


def test_toml_sets_values_and_preset(tmp_path):
    path = _write(tmp_path / "c.toml", """
preset = "slow_grads"
[hyperparams]
lr = 0.001
batch_size = 8
loss = "huber"
replay_size = 5_000
replay_initial = 500
[run]
device = "cpu"
progress = false
max_seconds = 12
""")
    cfg = build_config(None, path, {})
    assert cfg.preset == "slow_grads"
    assert cfg.flags.no_grad is False          # from the preset named in the file
    assert cfg.hp.lr == 0.001 and cfg.hp.batch_size == 8 and cfg.hp.loss == "huber"
    assert cfg.hp.replay_size == 5000 and cfg.hp.replay_initial == 500
    assert cfg.run.device == "cpu" and cfg.run.progress is False
    assert cfg.run.max_seconds == 12.0 and isinstance(cfg.run.max_seconds, float)
    assert cfg.hp.gamma == 0.99                 # untouched default


def test_precedence_defaults_preset_toml_cli(tmp_path):
    path = _write(tmp_path / "c.toml", """
[hyperparams]
lr = 0.001
batch_size = 8
gamma = 0.9
[flags]
no_grad = true
""")
    cfg = build_config("slow_grads", path, {"lr": "0.002", "gamma": "0.5"})
    assert cfg.flags.no_grad is True    # TOML over preset (slow_grads sets False)
    assert cfg.hp.batch_size == 8       # TOML over default
    assert cfg.hp.lr == 0.002           # CLI over TOML
    assert cfg.hp.gamma == 0.5          # CLI over TOML
    assert cfg.hp.replay_size == 100_000  # default where nobody sets it

    cfg = build_config("baseline", path, {"no_grad": "false"})
    assert cfg.flags.no_grad is False   # CLI over TOML


def test_preset_argument_over_toml_preset(tmp_path):
    path = _write(tmp_path / "c.toml", 'preset = "slow_grads"\n')
    assert build_config(None, path, {}).flags.no_grad is False
    cfg = build_config("baseline", path, {})
    assert cfg.preset == "baseline" and cfg.flags.no_grad is True


def test_cli_over_preset():
    cfg = build_config("slow_grads", None, {"no_grad": "yes"})
    assert cfg.flags.no_grad is True
    assert cfg.preset == "slow_grads"


def test_cli_value_parsing():
    cfg = build_config(None, None, {"replay_size": "50_000", "replay_initial": "1000", "lr": "3e-4",
                                    "progress": "off", "device": "cuda:1", "seed": "0"})
    assert cfg.hp.replay_size == 50_000 and cfg.hp.replay_initial == 1000
    assert cfg.hp.lr == pytest.approx(3e-4)
    assert cfg.run.progress is False and cfg.run.device == "cuda:1" and cfg.hp.seed == 0


def test_build_config_errors_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown setting 'bogus'"):
        build_config(None, None, {"bogus": "1"})
    path = _write(tmp_path / "c.toml", "[hyperparams]\nreplay_size = 1.5\n")
    with pytest.raises(UsageError, match="replay_size"):
        build_config(None, path, {})
    path = _write(tmp_path / "d.toml", "[flags]\nno_grad = 1\n")  # TOML int is not a bool
    with pytest.raises(UsageError, match="no_grad"):
        build_config(None, path, {})
    path = _write(tmp_path / "e.toml", "extra = 1\n")
    with pytest.raises(UsageError, match="extra"):
        build_config(None, path, {})


def test_to_dict_groups():
    d = build_config("slow_grads").to_dict()
    assert set(d) == {"hyperparams", "flags", "run", "preset"}
    assert d["flags"]["no_grad"] is False and d["preset"] == "slow_grads"
    assert isinstance(Config().to_dict()["hyperparams"]["lr"], float)
