"""Comparison plots (matplotlib, PNG), one set per machine and matrix:

(a) reward.png   100-episode mean reward vs wall-clock minutes (left) and vs agent steps (right),
                 one line per cell (median over seeds) with the seed spread (min-max) as a band
(b) fps.png      FPS per cell, bars at the mean with min-max whiskers over seeds
(c) solve.png    time to solve per cell (median, min-max whiskers); unsolved seeds annotated
(d) phases.png   where the wall time goes per cell (trainer phase shares, mean over seeds)
(e) ladder.png   a ladder matrix only (one with a reference cell): time to solve per rung, its
                 ratio to the reference, unsolved rungs hatched with the levels they reached

Curves come from the result files' reward curves, or from TensorBoard event files
(`episodes/avg_reward`) with `curves_from_tensorboard`.
"""
from __future__ import annotations

import statistics
from collections import deque
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..profile import PHASES  # noqa: E402

WINDOW = 100


def mean100_curve(reward_curve: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wall seconds, agent steps, running mean of the last <=100 episode rewards)."""
    window: deque = deque(maxlen=WINDOW)
    walls, steps, means = [], [], []
    for _episode, step, wall, reward in reward_curve:
        window.append(reward)
        walls.append(wall)
        steps.append(step)
        means.append(sum(window) / len(window))
    return np.asarray(walls, float), np.asarray(steps, float), np.asarray(means, float)


def curves_from_tensorboard(logdir: str | Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One (wall seconds from the first event, agent steps, avg_reward) per run below `logdir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    runs = sorted({p.parent for p in Path(logdir).rglob("events.out.tfevents.*")})
    curves = []
    for run in runs:
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        if "episodes/avg_reward" not in acc.Tags()["scalars"]:
            continue
        events = acc.Scalars("episodes/avg_reward")
        t0 = events[0].wall_time
        curves.append((np.array([e.wall_time - t0 for e in events]), np.array([e.step for e in events], float),
                       np.array([e.value for e in events])))
    return curves


def _band(ax, curves, xindex: int, label: str, color, style: str):
    """Median line and min-max band of several seeds' curves on a common x grid."""
    scale = 60.0 if xindex == 0 else 1.0
    if curves and all(len(c[0]) == 1 for c in curves):  # one episode each: points, not lines
        ax.scatter([c[xindex][0] / scale for c in curves], [c[2][0] for c in curves], label=label, color=color)
        return
    curves = [c for c in curves if len(c[0]) > 1]
    if not curves:
        return
    xmax = min(c[xindex][-1] for c in curves)
    grid = np.linspace(max(c[xindex][0] for c in curves), xmax, 200)
    ys = np.array([np.interp(grid, c[xindex], c[2]) for c in curves])
    ax.plot(grid / scale, np.median(ys, axis=0), label=label, color=color, linestyle=style)
    if len(curves) > 1:
        ax.fill_between(grid / scale, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.2)


def plot_reward(curves_by_cell: dict[str, list], path: Path, title: str, bound: float | None) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colors = plt.cm.tab10.colors
    styles = ("-", "--", ":", "-.")  # cells with identical learning per step overlap on the right
    for i, (cell, curves) in enumerate(curves_by_cell.items()):
        _band(left, curves, 0, cell, colors[i % 10], styles[i % 4])
        _band(right, curves, 1, cell, colors[i % 10], styles[i % 4])
    for ax, xlabel in ((left, "wall-clock time (minutes)"), (right, "agent steps")):
        if bound is not None:
            ax.axhline(bound, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    left.set_ylabel("mean reward of the last 100 episodes\n(of all episodes until there are 100)")
    if right.get_legend_handles_labels()[0]:  # runs that ended no episode draw no curve
        right.legend(loc="lower right", fontsize=8, ncol=1 if len(curves_by_cell) <= 8 else 2)  # a ladder has 12
    fig.suptitle(f"{title}: reward (median over seeds, band = min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(values: dict[str, list[float]], path: Path, title: str, ylabel: str, notes: dict[str, str] | None = None,
          center=statistics.median):
    cells = list(values)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cells) + 2), 4.5))
    x = np.arange(len(cells))
    centers = [center(v) if v else 0.0 for v in values.values()]
    lo = [c - min(v) if v else 0.0 for c, v in zip(centers, values.values())]
    hi = [max(v) - c if v else 0.0 for c, v in zip(centers, values.values())]
    ax.bar(x, centers, yerr=[lo, hi], capsize=4, color=plt.cm.tab10.colors[0])
    for xi, cell in zip(x, cells):
        if notes and notes.get(cell):
            ax.annotate(notes[cell], (xi, 0), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8, rotation=90)
    if not any(values.values()):
        ax.text(0.5, 0.6, "no run has a value here", transform=ax.transAxes, ha="center", color="grey")
    ax.set_ylim(bottom=0)
    ax.set_xticks(x, cells, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_fps(results_by_cell: dict[str, list[dict]], path: Path, title: str) -> None:
    values = {c: [r["fps"] for r in rs if r["fps"] is not None] for c, rs in results_by_cell.items()}
    notes = {c: "no learning step" for c, v in values.items() if not v}
    _bars(values, path, f"{title}\nFPS (mean over seeds, whiskers = min-max)",
          "agent steps per second (after the warm-up)", notes, center=statistics.mean)


def plot_solve(results_by_cell: dict[str, list[dict]], path: Path, title: str) -> None:
    values, notes = {}, {}
    for cell, rs in results_by_cell.items():
        times = [r["solved"]["mean100"]["seconds"] / 60 for r in rs if r["solved"]["mean100"]["seconds"] is not None]
        values[cell] = times
        if len(times) < len(rs):
            notes[cell] = f"unsolved {len(rs) - len(times)}/{len(rs)}"
    _bars(values, path, f"{title}\ntime to solve (100-episode mean >= stop reward), median over seeds",
          "minutes", notes)


def plot_phases(results_by_cell: dict[str, list[dict]], path: Path, title: str) -> None:
    cells = list(results_by_cell)
    names = list(PHASES) + ["other"]
    shares = {p: [] for p in names}
    for cell in cells:
        per_seed = [r.get("phase_profile", {}).get("trainer", {}).get("share", {}) for r in results_by_cell[cell]]
        for p in names:
            shares[p].append(statistics.mean(s.get(p, 0.0) for s in per_seed) if per_seed else 0.0)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cells) + 3), 4.5))
    x = np.arange(len(cells))
    bottom = np.zeros(len(cells))
    colors = plt.cm.tab10.colors
    for i, p in enumerate(names):
        ax.bar(x, shares[p], bottom=bottom, label=p, color=colors[i % 10])
        bottom += np.asarray(shares[p])
    ax.set_xticks(x, cells, rotation=30, ha="right")
    ax.set_ylabel("share of the trainer's wall time")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}\nphase profile (trainer process, mean over seeds)", fontsize=10)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ladder(rows: list[dict], path: Path, title: str, reference: str) -> Path:
    """Time to solve per rung of a ladder (ladder.ladder_rows), with its ratio to the reference
    above each bar; a rung whose median is not reached within its run (unsolved seeds) is drawn
    hatched up to the time it ran, annotated with the best 100- and 20-game means it reached."""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 5))
    x = np.arange(len(rows))
    colors = plt.cm.tab10.colors
    top = max((r["time"][0] / 60 for r in rows if r["time"]), default=1.0) or 1.0
    for xi, row in zip(x, rows):
        if row["time"] is None:
            continue
        minutes, solved = row["time"][0] / 60, row["time"][0] == row["time"][1]
        color = colors[1] if row["reference"] else colors[0]
        ax.bar(xi, minutes, color=color if solved else "white", edgecolor=color, hatch=None if solved else "//")
        ax.annotate("reference" if row["reference"] else row["time_ratio_text"], (xi, minutes), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=8)
        if not solved:
            best100 = [u["best100"] for u in row["unsolved"] if u["best100"] is not None]
            best20 = [u["best20"] for u in row["unsolved"] if u["best20"] is not None]
            reached = ", ".join(f"{max(v):+.1f} ({n}-game)" for v, n in ((best100, 100), (best20, 20)) if v)
            ax.annotate(f"not solved, reached {reached or 'no full window'}", (xi, 0.02 * top), ha="center",
                        va="bottom", rotation=90, fontsize=8, bbox={"facecolor": "white", "edgecolor": "none"})
    ref = next((r for r in rows if r["reference"]), None)
    if ref and ref["time"] and ref["time"][0] == ref["time"][1]:
        ax.axhline(ref["time"][0] / 60, color=colors[1], linestyle="--", linewidth=1, label=reference)
        ax.legend(loc="upper left", fontsize=8)
    ax.set_ylim(0, top * 1.12)
    ax.set_xticks(x, [r["cell"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("minutes to solve (median over seeds)")
    ax.set_title(f"{title}\nladder: time to solve per rung, ratio to {reference} above; hatched = not solved "
                 "(bar: the time it ran)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_all(results_by_cell: dict[str, list[dict]], folder: Path, title: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    curves = {c: [mean100_curve(r["reward_curve"]) for r in rs] for c, rs in results_by_cell.items()}
    first = next(iter(results_by_cell.values()))[0]
    paths = [folder / n for n in ("reward.png", "fps.png", "solve.png", "phases.png")]
    plot_reward(curves, paths[0], title, first.get("stop_rule", {}).get("reward",
                                                                   first["config"]["hyperparams"]["stop_reward"]))
    plot_fps(results_by_cell, paths[1], title)
    plot_solve(results_by_cell, paths[2], title)
    plot_phases(results_by_cell, paths[3], title)
    return paths
