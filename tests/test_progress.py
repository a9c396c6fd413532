"""What `fastdqn train` shows while it runs, read from its real output: on a terminal (a pty) one
line redrawn in place, in a log (a pipe) plain lines; in agent steps with the total, warm-up then
learning, the reward once it exists, never nan, and one final line that says how the run ended
(budget, solved, Ctrl-C). Plus the display's cost at the CPU baseline's step rate."""
from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from fastdqn.progress import RunProgress
from fastdqn.telemetry import RewardTracker

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-m", "fastdqn", "train", "--env", "CartPole-v1", "--replay-initial", "300",
         "--batch-size", "16", "--device", "cpu", "--threads", "1"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell may hand SIGINT down ignored


def run_in_pty(args, tmp_path, interrupt_after: float | None = None) -> str:
    """Run train with its stderr (where the progress goes) on a pseudo-terminal; with
    interrupt_after, Ctrl-C that many seconds after its first progress line."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(TRAIN + args + ["--out", str(tmp_path / "r.json")], stdout=slave, stderr=slave,
                            env=ENV, preexec_fn=_sigint_default)
    os.close(slave)
    out, shown, sent = b"", None, False
    while True:
        if shown is None and b"steps " in out:
            shown = time.monotonic()  # the run has started
        if interrupt_after is not None and not sent and shown and time.monotonic() - shown > interrupt_after:
            proc.send_signal(signal.SIGINT)
            sent = True
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    return out.decode()


def progress_lines(text: str) -> list[str]:
    # a terminal line is padded with spaces over the longer one it replaces
    return [s.rstrip() for s in re.split(r"[\r\n]+", text) if s.startswith("steps ")]


def test_terminal_shows_one_line_in_agent_steps_and_a_final_line_once(tmp_path):
    out = run_in_pty(["--max-steps", "1500", "--stop-reward", "1000"], tmp_path)
    lines = progress_lines(out)
    assert lines, out
    assert "nan" not in out
    assert "\r" in out  # redrawn in place
    assert all(re.match(r"steps [\d,]+/1,500 \d+%", s) for s in lines), lines
    assert "warm-up" in lines[0] and re.search(r"warm-up [\d,]+/300", lines[0])
    final = lines[-1]
    assert final.startswith("steps 1,500/1,500 100% | budget | FPS "), final
    assert re.search(r"reward -?[\d.]+ \(\d+ ep, best -?[\d.]+\) \| episodes \d+ \| eps 0\.\d\d \| 0:\d\d$", final)
    assert "ETA" not in final
    # the final line is printed once, ends its line, and the result line follows on its own
    assert out.count(final) == 1
    after = out[out.index(final) + len(final):].lstrip(" ")
    assert after.startswith("\r\n") or after.startswith("\n")
    assert "result: " in after


def test_log_file_gets_plain_lines_and_the_solve(tmp_path):
    # a pipe: no carriage returns; CartPole's random play "solves" a stop reward of 15 at 100 episodes
    proc = subprocess.run(TRAIN + ["--max-steps", "20000", "--stop-reward", "15", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "nan" not in proc.stderr
    lines = progress_lines(proc.stderr)
    assert len(lines) >= 2  # the first line at once, the final one at the end
    assert lines[-1].split(" | ")[1] == "solved"
    assert "ETA" not in lines[-1]


def test_ctrl_c_ends_with_an_interrupted_line(tmp_path):
    out = run_in_pty(["--max-steps", "10000000", "--stop-reward", "1000"], tmp_path, interrupt_after=3)
    lines = progress_lines(out)
    assert lines and lines[-1].split(" | ")[1] == "interrupted", lines[-3:]
    assert "nan" not in out


def test_time_budget_eta_is_the_nearer_budget():
    t = SimpleNamespace(steps=1000, max_steps=100_000, max_seconds=60.0, learn_start=(500, 1.0),
                        rewards=RewardTracker(17), curve=[], epsilon=0.5,
                        now=lambda: 10.0, fps=lambda: 100.0)
    p = RunProgress(t, 500, stream=open(os.devnull, "w"))
    assert p.eta(1000, 10.0, 100.0) == 50.0          # time budget: 50 s left; steps: 990 s
    t.max_seconds = 0
    assert p.eta(1000, 10.0, 100.0) == 990.0
    line = p.line("learning")
    assert "ETA 16:30" in line and "reward" not in line  # no episode yet: no reward shown


def test_cost_is_under_1_percent_at_the_baseline_step_rate():
    """The CPU baseline does ~29 iterations a second (results/amd-epyc-2c): per second of a run
    the display costs 29 update() calls plus one drawn line into a log."""
    t = SimpleNamespace(steps=12345, max_steps=100_000, max_seconds=0.0, learn_start=(500, 1.0),
                        rewards=RewardTracker(17), curve=[[1, 1, 1.0, -21.0]] * 50, epsilon=0.5,
                        now=lambda: 10.0, fps=lambda: 29.0)
    for r in range(50):
        t.rewards.add(-21.0 + r % 3, 1, 1.0, r)
    with open(os.devnull, "w") as sink:
        p = RunProgress(t, 500, stream=sink, log_every=1e9)
        p.update()  # the first call draws; the rest wait for their time
        n = 20_000
        start = time.perf_counter()
        for _ in range(n):
            p.update()
        per_update = (time.perf_counter() - start) / n
        start = time.perf_counter()
        for _ in range(200):
            p._write(p.line("learning"), final=False)
        per_draw = (time.perf_counter() - start) / 200
    share = 29 * per_update + per_draw  # seconds of display per second of run
    assert share < 0.01, (per_update, per_draw)


def test_bench_shows_the_matrix_and_the_running_cell(tmp_path):
    matrix = tmp_path / "m.toml"
    matrix.write_text('seeds = [1]\n[defaults]\nenv = "CartPole-v1"\nmax_steps = 4000\nreplay_initial = 300\n'
                      'batch_size = 16\nstop_reward = 1000\ndevice = "cpu"\nthreads = 1\n'
                      '[[cell]]\nname = "a"\n[[cell]]\nname = "b"\n')
    proc = subprocess.run([sys.executable, "-m", "fastdqn", "bench", str(matrix), "--results", str(tmp_path / "res")],
                          capture_output=True, text=True, env=ENV, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "\r" not in err and "nan" not in err
    # the running cell's own line, from its log, under the matrix count
    assert re.search(r"^bench m 0/2 \| a/1: steps [\d,]+/4,000 ", err, re.M), err
    assert re.search(r"^bench m 1/2(, ETA \d+:\d\d)? \| b/1: steps [\d,]+/4,000 ", err, re.M), err
    assert re.search(r"^a/1: exit 0$", err, re.M) and re.search(r"^b/1: exit 0$", err, re.M)


def test_bench_display_on_a_terminal_redraws_and_prints_outcomes_above():
    import io

    from fastdqn.bench.matrix import Cell
    from fastdqn.progress import BenchProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    jobs = [(Cell("a", "baseline", {"max_seconds": 60}), 1), (Cell("b", "baseline", {"max_seconds": 90}), 1)]
    p = BenchProgress("m", jobs, stream=out)
    p.watch("a/1", None)
    assert out.getvalue().startswith("\rbench m 0/2, ETA 2:30")  # a's 60 s budget + b's 90 s
    p.watch("a/1", "steps 10/100 10% | learning | FPS 5.0 | episodes 0 | eps 1.00 | 0:02, ETA 0:18")
    assert out.getvalue().endswith("\rbench m 0/2, ETA 1:48 | a/1: steps 10/100 10% | learning | FPS 5.0 | "
                                   "episodes 0 | eps 1.00 | 0:02, ETA 0:18")  # a's own ETA + b's budget
    p.outcome("a/1: exit 0", ran=True)
    text = out.getvalue()
    assert "a/1: exit 0\n" in text and text.endswith("\rbench m 1/2, ETA 1:30")
    p.close()
    assert out.getvalue().endswith("\n")
