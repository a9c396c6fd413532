"""Recipe screens on agent steps: when each run's 20-game mean first reached each reward level.

    python benchmarks/screen_table.py RESULT.json [RESULT.json ...] [--levels -15 0 10 15] [--window 20]

A screen asks "how many agent steps until this recipe learns", which does not depend on the load
the run shared the machine with (its time does). Per result file: the agent steps at which the
mean of the last `--window` games first reached each level ('-' if never), the 100-game mean at
the end, the steps run and the status, as one markdown table on stdout. The issue's cheaper screen
than a full solve (a level reached at fewer steps) is read from this table.
"""
from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastdqn.errors import UsageError  # noqa: E402
from fastdqn.results import load_result  # noqa: E402


def first_steps_at(reward_curve: list, levels: list[float], window: int) -> dict[float, int | None]:
    """Level -> the agent step of the first game after which the mean of the last `window` games
    (a full window only) was at least the level; None where it never was."""
    games: deque = deque(maxlen=window)
    out: dict[float, int | None] = {lv: None for lv in levels}
    for _episode, step, _wall, reward in reward_curve:
        games.append(reward)
        if len(games) < window:
            continue
        mean = sum(games) / window
        for lv in levels:
            if out[lv] is None and mean >= lv:
                out[lv] = int(step)
    return out


def table(paths: list[Path], levels: list[float], window: int) -> str:
    head = ["result", *(f"{window}-game mean >= {lv:g}" for lv in levels), "steps run", "last 100-game mean",
            "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in paths:
        r = load_result(path)
        firsts = first_steps_at(r["reward_curve"], levels, window)
        cells = [f"{firsts[lv]:,}" if firsts[lv] is not None else "-" for lv in levels]
        last = r.get("last_mean100")
        lines.append("| " + " | ".join([str(path), *cells, f"{r['steps']:,}",
                                        "-" if last is None else f"{last:+.1f}", r["status"]]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--levels", type=float, nargs="+", default=[-15.0, 0.0, 10.0, 15.0])
    parser.add_argument("--window", type=int, default=20)
    args = parser.parse_args()
    if args.window < 1:
        print(f"screen_table: --window {args.window}: expected at least 1", file=sys.stderr)
        return 2
    try:
        print(table(args.results, args.levels, args.window))
    except (UsageError, OSError) as e:
        print(f"screen_table: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
