"""What a run shows while it goes: one status line in agent steps.

    steps 41,000/100,000 41% | learning | FPS 62.3 | reward -19.9 (100 ep, best -19.5) | episodes 84
    | eps 0.18 | 11:02, ETA 15:54

Before the first update the phase reads `warm-up 5,000/10,000` and there is no FPS; before the
first episode there is no reward; nothing is ever shown as nan. The ETA is the nearer of the
step budget (at the FPS since the first update, so not during the warm-up, whose steps are far
cheaper) and the time budget. On a terminal the line is
redrawn in place at most once a second; into a file or pipe it is a plain line every
`log_every` seconds, so logs read well. `close` prints the final line once, on its own line.
"""
from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = round(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class RunProgress:
    def __init__(self, telemetry, replay_initial: int, stream=None, log_every: float = 30.0):
        self.t = telemetry
        self.replay_initial = replay_initial
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 1.0 if self.tty else log_every
        self._next = 0.0      # monotonic time of the next draw
        self._width = 0       # length of the line on screen (terminal)
        self.lines = 0        # lines written (a log file's count)

    def line(self, phase: str, final: bool = False) -> str:
        t = self.t
        steps, wall = t.steps, t.now()
        parts = [f"steps {steps:,}" + (f"/{t.max_steps:,} {min(steps / t.max_steps, 1):.0%}" if t.max_steps else "")]
        if phase == "warm-up":
            parts.append(f"warm-up {min(steps, self.replay_initial):,}/{self.replay_initial:,}")
        else:
            parts.append(phase)
        fps = t.fps()
        if fps:
            parts.append(f"FPS {fps:,.1f}")
        mean = t.rewards.mean100
        if mean is not None:
            parts.append(f"reward {mean:.1f} ({len(t.rewards.window)} ep, best {t.rewards.best_mean:.1f})")
        parts.append(f"episodes {len(t.curve):,}")
        if t.epsilon is not None:
            parts.append(f"eps {t.epsilon:.2f}")
        eta = self.eta(steps, wall, fps)
        parts.append(_clock(wall) + ("" if eta is None or final else f", ETA {_clock(eta)}"))
        return " | ".join(parts)

    def eta(self, steps: int, wall: float, fps: float | None) -> float | None:
        """Seconds left: the nearer of the step budget (at the training FPS) and the time budget."""
        left = []
        if self.t.max_steps and fps:
            left.append((self.t.max_steps - steps) / fps)
        if self.t.max_seconds:
            left.append(self.t.max_seconds - wall)
        return max(min(left), 0.0) if left else None

    def phase(self) -> str:
        if self.t.rewards.solved_mean100 is not None:
            return "solved"
        return "learning" if self.t.learn_start is not None else "warm-up"

    def update(self) -> None:
        """Each iteration: draws only when due (one clock read otherwise)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every
        self._write(self.line(self.phase()), final=False)

    def close(self, status: str) -> None:
        """The final line, once: its phase is the run's end (solved, budget, interrupted...)."""
        phase = "solved" if self.t.rewards.solved_mean100 is not None else status
        self._write(self.line(phase, final=True), final=True)

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            pad = " " * max(self._width - len(text), 0)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
            self._width = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.lines += 1
        self.stream.flush()


class BenchProgress:
    """bench's display: the matrix (runs done / total, ETA from the budgets) and the running
    cell's own progress line, read from its log (bench/jobs.py: last_progress_line). Outcome lines are
    printed above it. On a terminal one line redrawn in place; in a log, plain lines: a cell's
    first line at once, then at most one every `log_every` seconds."""

    def __init__(self, name: str, jobs: list, stream=None, log_every: float = 30.0):
        self.name, self.total = name, len(jobs)
        self.budgets = {f"{c.name}/{s}": float(c.settings.get("max_seconds") or 0) for c, s in jobs}
        self.done, self.durations = 0, []
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = log_every
        self.job, self.job_line, self.job_start = None, None, 0.0
        self._printed = 0.0
        self._width = 0

    def eta(self) -> float | None:
        """The running cell's own ETA (or what its time budget leaves), plus the cells after it
        at their time budgets; a cell without one at the mean time of the cells run so far."""
        later = list(self.budgets)[self.done + (self.job is not None):]
        mean = sum(self.durations) / len(self.durations) if self.durations else None
        total = 0.0
        for j in later:
            guess = self.budgets[j] or mean
            if guess is None:
                return None
            total += guess
        if self.job is not None:
            own = _parse_eta(self.job_line)
            if own is None:
                budget = self.budgets.get(self.job) or mean
                if budget is None:
                    return None
                own = max(budget - (time.monotonic() - self.job_start), 0.0)
            total += own
        return total

    def line(self) -> str:
        eta = self.eta()
        head = f"bench {self.name} {self.done}/{self.total}" + ("" if eta is None else f", ETA {_clock(eta)}")
        return head + (f" | {self.job}: {self.job_line}" if self.job and self.job_line else "")

    def watch(self, job: str, line: str | None) -> None:
        """The launcher's callback while a cell runs."""
        first = job != self.job
        if first:
            self.job, self.job_start = job, time.monotonic()
        if line == self.job_line and not first:
            return
        self.job_line = line
        now = time.monotonic()
        if self.tty:
            self._draw(self.line())
        elif line and (first or now - self._printed >= self.every or self._printed < self.job_start):
            self._printed = now
            self._emit(self.line())

    def outcome(self, text: str, ran: bool) -> None:
        """A run ended (ran) or was kept: its line above the display."""
        self.done += 1
        if ran and self.job is not None:
            self.durations.append(time.monotonic() - self.job_start)
        self.job, self.job_line = None, None
        self._emit(text)
        if self.tty:
            self._draw(self.line())

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
            self.stream.flush()

    def _draw(self, text: str) -> None:
        pad = " " * max(self._width - len(text), 0)
        self.stream.write("\r" + text + pad)
        self._width = len(text)
        self.stream.flush()

    def _emit(self, text: str) -> None:
        if self.tty and self._width:  # clear the redrawn line, print above it
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()


def _parse_eta(line: str | None) -> float | None:
    """The 'ETA h:mm:ss' / 'ETA m:ss' of a RunProgress line, in seconds."""
    if not line or "ETA " not in line:
        return None
    parts = line.rsplit("ETA ", 1)[1].split()[0].split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        return None
    seconds = 0
    for v in values:
        seconds = seconds * 60 + v
    return float(seconds)
