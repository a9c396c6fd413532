"""`fastdqn play`: one game of a checkpoint's policy as a GIF of the emulator's screen, at the
agent's real-time rate; bad input is one line."""
from __future__ import annotations

import pytest
from PIL import Image, ImageSequence

from fastdqn.cli import main


@pytest.fixture(scope="module")
def pong_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pong") / "r.json"
    assert main(["train", "--max-steps", "40", "--replay-initial", "32", "--batch-size", "8", "--replay-size", "1000",
                 "--progress", "false", "--device", "cpu", "--out", str(out)]) == 0
    return out.with_suffix(".pt")


@pytest.mark.parametrize("every", [1, 3])
def test_play_writes_a_gif_of_the_screens_it_played(pong_checkpoint, tmp_path, capsys, every):
    gif = tmp_path / "game.gif"
    assert main(["play", str(pong_checkpoint), "--out", str(gif), "--max-steps", "60", "--every", str(every),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    frames = 1 + 60 // every  # the reset screen, then every N-th agent step's
    assert f"its first 60 agent steps" in out and f"{frames} frames at {100 / round(100 * 4 * every / 60):.1f}/s" in out
    with Image.open(gif) as im:
        assert im.size == (160, 210)  # the emulator's own screen, not the 84x84 observation
        durations = [f.info["duration"] for f in ImageSequence.Iterator(im)]
    # Pillow merges identical neighbours into one longer frame: the time adds up to every frame's
    assert len(durations) <= frames and sum(durations) == frames * 10 * round(100 * 4 * every / 60)
    with Image.open(tmp_path / "game.strip.png") as strip:  # 8 screens side by side
        assert strip.size == (8 * 160, 210) and f"a strip of its frames: {tmp_path / 'game.strip.png'}" in out


def test_strip_spreads_its_frames_over_the_game():
    from fastdqn.play import strip_indices
    assert strip_indices(5) == [0, 1, 2, 3, 4]  # fewer frames than the strip: all of them
    assert strip_indices(8) == list(range(8))
    assert strip_indices(15) == [0, 2, 4, 6, 8, 10, 12, 14]
    picked = strip_indices(2001)
    assert picked[0] == 0 and picked[-1] == 2000 and len(picked) == 8 and picked == sorted(set(picked))


def test_report_shows_the_agent_beside_its_results(pong_checkpoint, tmp_path):
    """A GIF play wrote beside a matrix cell's result: results/README.md links it and shows its
    strip; the eval JSON beside the checkpoint is not taken for a result."""
    import shutil

    from fastdqn.bench.report import write_report
    cell = tmp_path / "results" / "m" / "quick" / "baseline"
    cell.mkdir(parents=True)
    shutil.copy(pong_checkpoint.with_suffix(".json"), cell / "123.json")
    (cell / "123.eval.json").write_text("{}")
    assert main(["play", str(pong_checkpoint), "--out", str(cell / "123.gif"), "--max-steps", "30", "--no-progress"]) == 0
    text = write_report(tmp_path / "results").read_text()
    assert ("- `baseline`, 123: [one game of its agent (GIF)](m/quick/baseline/123.gif)"
            "<br>![baseline 123: frames of the game](m/quick/baseline/123.strip.png)") in text


@pytest.mark.parametrize("args, message", [
    (["--out", "x.mp4"], "--out x.mp4: expected a .gif file"),
    (["--out", "x.gif", "--epsilon", "2"], "--epsilon 2.0: expected a value in [0, 1]"),
    (["--out", "x.gif", "--every", "0"], "expected every >= 1"),
])
def test_play_bad_input_is_one_line(pong_checkpoint, capsys, args, message):
    assert main(["play", str(pong_checkpoint), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_play_refuses_a_non_atari_checkpoint(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["train", "--env", "CartPole-v1", "--max-steps", "60", "--replay-initial", "30", "--batch-size", "8",
                 "--progress", "false", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["play", str(out.with_suffix(".pt")), "--out", str(tmp_path / "g.gif")]) == 2
    assert "CartPole-v1 is not one" in capsys.readouterr().err
