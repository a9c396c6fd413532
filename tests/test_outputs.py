"""Output locations: checked before any work (one line, exit 2, no env made, no cell run), and a
result write that fails at the end says where and gives the key numbers (exit 1)."""
import errno

import pytest

import fastdqn.bench.launchers as launchers
import fastdqn.loops.serial as serial
import fastdqn.train as train_module
from fastdqn.cli import main

TINY = ["--env", "CartPole-v1", "--replay-initial", "50", "--batch-size", "8", "--progress", "false",
        "--device", "cpu", "--threads", "1"]
MATRIX = 'seeds = [1]\n[defaults]\nenv = "CartPole-v1"\nmax_steps = 100\n[[cell]]\nname = "a"\n'


def no_work(*_args, **_kwargs):
    raise AssertionError("work started despite an unwritable output")


@pytest.mark.parametrize("where", ["train --out", "train --logdir", "bench --results"])
def test_unwritable_output_fails_before_any_work(where, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(serial, "make_vec_env", no_work)
    monkeypatch.setattr(launchers, "run_child", no_work)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text(MATRIX)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = str(blocker / "sub")
    argv = {"train --out": ["train", *TINY, "--out", f"{bad}/r.json", "--logdir", "tb"],
            "train --logdir": ["train", *TINY, "--out", "r.json", "--logdir", bad],
            "bench --results": ["bench", "m.toml", "--no-progress", "--results", bad]}[where]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fastdqn: error: {where.split()[1]}") and bad in err[0], err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "runs").exists()


def test_failed_final_write_prints_where_and_the_numbers(tmp_path, capsys, monkeypatch):
    def disk_full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(train_module, "write_json_atomic", disk_full)
    out = tmp_path / "r.json"
    assert main(["train", *TINY, "--max-steps", "120", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"fastdqn: error: could not write the result to {out} (No space left on device); "
                              "budget (step budget: 120 agent steps): 120 agent steps, "), err
    assert " episodes, " in err[-1] and "FPS " in err[-1] and "last 100-episode mean " in err[-1]
    assert "Traceback" not in "\n".join(err) and not out.exists()


def test_result_names_the_code_at_the_start_of_the_run(run_train, monkeypatch):
    """A commit made while a run trains is not the code it ran: git info is read at the start."""
    import fastdqn.results as results_module
    monkeypatch.setattr(train_module, "git_info", lambda: {"commit": "at-start", "dirty": False})
    monkeypatch.setattr(results_module, "git_info", lambda: {"commit": "at-write", "dirty": True})
    result = run_train("--env", "CartPole-v1", "--replay-initial", "100", "--batch-size", "16", "--max-steps", "150")
    assert result["git"] == {"commit": "at-start", "dirty": False}
