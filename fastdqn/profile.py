"""Phase profile: where the wall time of a loop goes.

Each loop wraps its phases in `with profile("env"): ...`. The shares are of the loop's wall
time; what no phase covers (Python glue, ignite handlers, logging) is `other`. On CUDA the
timers measure host time: kernels run asynchronously until something waits for them (the
loss.item() at the end of the learner step does), so GPU work shows up where the host waits.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

PHASES = ("env", "act", "copy", "replay_insert", "replay_sample", "learn", "queue_wait")


class PhaseTimer:
    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def shares(self, wall: float) -> dict[str, float]:
        """Share of `wall` per phase, plus `other` (the rest)."""
        if wall <= 0:
            return {}
        out = {p: s / wall for p, s in self.seconds.items()}
        out["other"] = max(0.0, 1.0 - sum(out.values()))
        return out

    def report(self, wall: float) -> dict:
        return {"seconds": {p: round(s, 4) for p, s in self.seconds.items()},
                "wall_seconds": round(wall, 4),
                "share": {p: round(s, 4) for p, s in self.shares(wall).items()}}
