"""Measure the resident memory of a full 100k-transition Pong replay (RSS delta of this process).

    python benchmarks/replay_memory.py [--transitions N] [--write]

Fills fastdqn's FrameReplay with N transitions of (4, 84, 84) uint8 observations in episodes of
1,000 steps (every page touched), prints a JSON line, and with --write stores it in
results/<machine-id>/replay_memory.json. A naive buffer of stacked obs + next obs would hold
N x 2 x 4 x 84 x 84 bytes (5.6 GB for 100k).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(transitions: int) -> dict:
    from fastdqn.replay import FrameReplay
    frames = np.random.default_rng(0).integers(0, 255, (64, 4, 84, 84), dtype=np.uint8)
    before = rss_bytes()
    replay = FrameReplay(transitions, (4, 84, 84), np.uint8)
    replay.start([0], frames[:1])
    for i in range(transitions):
        obs = frames[i % 64][None]
        replay.add([i % 6], [0.0], [i % 1000 == 999], obs)
        if i % 1000 == 999:
            replay.start([0], obs)
    after = rss_bytes()
    return {"transitions": transitions, "obs_shape": [4, 84, 84], "rss_delta_bytes": after - before,
            "rss_delta_gib": round((after - before) / 2**30, 3), "nbytes": replay.nbytes(),
            "naive_stacked_obs_next_obs_bytes": transitions * 2 * 4 * 84 * 84, "stored": len(replay)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--write", action="store_true", help="store in results/<machine-id>/")
    args = parser.parse_args()
    result = measure(args.transitions)
    print(json.dumps(result))
    if args.write:
        from fastdqn.results import hardware, machine_id, write_json_atomic
        path = Path("results") / machine_id() / "replay_memory.json"
        write_json_atomic(path, {**result, "hardware": hardware()})
        print(f"written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
