"""The leave-one-out ladder in `fastdqn report`: a matrix that names a `reference` cell (matrix.py;
the runner marks it in summary.csv) gets a table of each rung against it on both numbers, FPS and
time to solve, and the rows plots.plot_ladder draws."""
from __future__ import annotations

import math
import statistics

from .matrix import RESERVED

NATIVE_BF16_ISAS = {"amxbf16", "avx512bf16"}  # results.cpu_isa's tags of the CPUs with bf16 in hardware
MATCH = {"faster": "sooner", "slower": "later", "same": "same"}  # FPS and time to solve agree


def fmt(x, digits=1) -> str:
    """A number with thousands separators, "-" for none (report's tables use it too)."""
    return "-" if x is None else f"{x:,.{digits}f}"


def best_mean(reward_curve: list, window: int) -> float | None:
    """The highest mean of `window` consecutive episode rewards (None with fewer episodes)."""
    rewards = [row[3] for row in reward_curve]
    if len(rewards) < window:
        return None
    total = best = sum(rewards[:window])
    for i in range(window, len(rewards)):
        total += rewards[i] - rewards[i - window]
        best = max(best, total)
    return best / window


def solve_bounds(results: list[dict], key: str) -> tuple[float, float] | None:
    """Median over seeds of the seconds or agent steps (`key`) to solve, as (low, high): an unsolved
    seed takes longer than it ran (low: its wall seconds or steps run, high: infinite), and the
    median is monotone in each seed, so low == high where the unsolved seeds cannot move it."""
    if not results:
        return None
    ran = {"seconds": "wall_seconds", "steps": "steps"}[key]
    hit = [r["solved"]["mean100"][key] for r in results]
    low = statistics.median(float(r[ran]) if h is None else float(h) for r, h in zip(results, hit))
    high = statistics.median(math.inf if h is None else float(h) for h in hit)
    return low, high


def _ratio(num: tuple[float, float], den: tuple[float, float]) -> tuple[float, float] | None:
    if not den[0] > 0:
        return None
    return num[0] / den[1], num[1] / den[0]  # x / inf = 0, inf / x = inf: the interval stays true


def _direction(ratio, band: tuple[float, float], above: str, below: str) -> str | None:
    """Where a ratio interval lies against the reference seeds' own spread (band): outside it on one
    side, inside it ('same'), or None where the interval reaches both in and out."""
    if ratio is None:
        return None
    if ratio[0] > band[1]:
        return above
    if ratio[1] < band[0]:
        return below
    return "same" if band[0] <= ratio[0] and ratio[1] <= band[1] else None


def _band(values: list[float], center: float) -> tuple[float, float]:
    return (min(values) / center, max(values) / center) if values and center else (1.0, 1.0)


def _flat_settings(result: dict) -> dict:
    cfg = result["config"]  # without the runner's per-seed keys (RESERVED): never a rung's difference
    return {k: v for g in ("hyperparams", "flags", "run") for k, v in cfg.get(g, {}).items() if k not in RESERVED}


def _precision(results: list[dict]) -> str:
    """bf16 or fp32, and whether the bf16 ran emulated (a CPU run on a CPU without native bf16)."""
    r = results[0]
    if not r["config"].get("flags", {}).get("bf16"):  # a peer's flags are empty
        return "fp32"
    device = r.get("device") or r["config"].get("run", {}).get("device", "auto")
    on_cpu = device.startswith("cpu") or (device == "auto" and not r["hardware"].get("gpu"))
    isa = r["hardware"].get("cpu_isa")  # absent in results recorded before it was
    return "bf16, emulated" if on_cpu and isa is not None and isa not in NATIVE_BF16_ISAS else "bf16"


def ladder_rows(cells: dict[str, list[dict]], order: list[str], reference: str) -> list[dict]:
    """Per rung: FPS, time and agent steps to solve as (low, high) medians, both ratios to the
    reference as intervals, their directions against the reference seeds' spread, and for the
    unsolved seeds the best 100- and 20-episode means they reached. The reference comes first."""
    ref = cells.get(reference, [])
    ref_fps_seeds = [r["fps"] for r in ref if r["fps"] is not None]
    ref_fps = statistics.mean(ref_fps_seeds) if ref_fps_seeds else None
    ref_time = solve_bounds(ref, "seconds")
    ref_solved = [r["solved"]["mean100"]["seconds"] for r in ref]
    fps_band = _band(ref_fps_seeds, ref_fps)
    time_band = _band(ref_solved, ref_time[0]) if ref and None not in ref_solved else (1.0, 1.0)
    ref_settings = _flat_settings(ref[0]) if ref else None
    rows = []
    for c in sorted(order, key=lambda c: c != reference):  # stable: the others keep the matrix order
        results = cells[c]
        fps_seeds = [r["fps"] for r in results if r["fps"] is not None]
        fps = statistics.mean(fps_seeds) if fps_seeds else None
        time = solve_bounds(results, "seconds")
        fps_ratio = fps / ref_fps if fps is not None and ref_fps else None
        time_ratio = _ratio(time, ref_time) if time and ref_time else None
        settings = _flat_settings(results[0])
        row = {"cell": c, "reference": c == reference, "seeds": len(results),
               "solved": sum(1 for r in results if r["solved"]["mean100"]["seconds"] is not None),
               "fps": fps, "fps_ratio": fps_ratio, "time": time, "time_ratio": time_ratio,
               "time_ratio_text": _fmt_ratio(time_ratio),
               "steps": solve_bounds(results, "steps"), "precision": _precision(results),
               "differs": None if ref_settings is None else {
                   k: v for k, v in settings.items() if ref_settings.get(k) != v},
               "unsolved": [{"status": r["status"], "minutes": r["wall_seconds"] / 60,
                             "best100": best_mean(r["reward_curve"], 100), "best20": best_mean(r["reward_curve"], 20)}
                            for r in results if r["solved"]["mean100"]["seconds"] is None],
               "fps_dir": _direction(None if fps_ratio is None else (fps_ratio, fps_ratio), fps_band,
                                     "faster", "slower"),
               "time_dir": _direction(time_ratio, time_band, "later", "sooner")}
        rows.append(row)
    return rows


def _fmt_ratio(ratio) -> str:
    if ratio is None or (ratio[0] == 0 and ratio[1] == math.inf):
        return "-"
    if ratio[0] == ratio[1]:
        return f"{ratio[0]:.2f}x"
    return f"≥ {ratio[0]:.2f}x" if ratio[1] == math.inf else f"≤ {ratio[1]:.2f}x"


def _fmt_bound(bounds, scale: float, digits: int, unit: str = "") -> str:
    if bounds is None:
        return "-"
    value = fmt(bounds[0] / scale, digits) + unit
    return value if bounds[0] == bounds[1] else f"≥ {value}"


def _verdict(row: dict) -> str:
    if row["reference"]:
        return "reference"
    fps, time = row["fps_dir"], row["time_dir"]
    if fps is None or time is None:
        return "-"
    words = {"faster": "faster FPS", "slower": "slower FPS", "same": "FPS within spread",
             "sooner": "solves sooner", "later": "solves later"}
    time_words = "time within spread" if time == "same" else words[time]
    return f"{'agree' if MATCH[fps] == time else '**disagree**'}: {words[fps]}, {time_words}"


def _reached(row: dict) -> str:
    parts = [f"{u['status']} at {u['minutes']:,.1f} min: {_signed(u['best100'])} / {_signed(u['best20'])}"
             for u in row["unsolved"]]
    return "; ".join(parts) or "-"


def _signed(x) -> str:
    return "-" if x is None else f"{x:+.1f}"


def _differs(row: dict) -> str:
    if row["reference"]:
        return "(reference)"
    if row["differs"] is None:
        return "?"
    changes = (f"{k} {str(v).lower() if isinstance(v, bool) else v}" for k, v in row["differs"].items())
    return ", ".join(changes) or "nothing"


def ladder_table(cells: dict[str, list[dict]], order: list[str], reference: str) -> str:
    rows = ladder_rows(cells, order, reference)
    first = (cells.get(reference) or cells[order[0]])[0]
    bound = f"{first.get('stop_rule', {}).get('reward', first['config']['hyperparams']['stop_reward']):g}"
    lines = [f"| rung | differs from `{reference}` | precision | solved | FPS | FPS ratio | time to {bound}, "
             f"median | time ratio | agent steps to {bound}, median | unsolved: stop, best 100- / 20-game mean | "
             f"FPS vs time to {bound} |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        fps_ratio = "-" if row["fps_ratio"] is None else f"{row['fps_ratio']:.2f}x"
        lines.append(f"| {row['cell']} | {_differs(row)} | {row['precision']} | {row['solved']}/{row['seeds']} | "
                     f"{fmt(row['fps'])} | {fps_ratio} | "
                     f"{_fmt_bound(row['time'], 60, 1, ' min')} | {row['time_ratio_text']} | "
                     f"{_fmt_bound(row['steps'], 1, 0)} | {_reached(row)} | {_verdict(row)} |")
    return "\n".join(lines)


def ladder_section(cells: dict[str, list[dict]], order: list[str], reference: str) -> list[str]:
    """The ladder's lines for render_sections: what the table says, then the table."""
    if reference not in cells:
        return [f"Ladder: the reference cell `{reference}` has no result here yet: no ratios.", ""]
    seeds = len(cells[reference])
    spread = ("the reference has one seed, so no spread: every difference counts, read small ones as noise"
              if seeds == 1 else f"inside the range of the reference's {seeds} seeds")
    return [f"Ladder: each rung is `{reference}` with the settings its second column names. Ratios are the "
            f"rung's over `{reference}`'s: an FPS ratio below 1 says the optimization the rung removes buys FPS, "
            "a time ratio above 1 that it buys time to solve. A seed that did not solve counts as taking longer "
            "than it ran, so a median it decides, and its ratio, is a bound (≥, or ≤ against an unsolved "
            "reference); the column before the last says where such seeds stopped and the best 100- and 20-game "
            "means they reached. Last column: agree where both numbers move the same way, **disagree** where "
            f"FPS misjudges what the optimization buys; within spread: {spread}.", "",
            ladder_table(cells, order, reference), ""]
