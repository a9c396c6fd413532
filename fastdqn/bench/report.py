"""`fastdqn report`: markdown tables from committed result files (results/README.md), one section
per machine and matrix. Result files are read as validated JSON; a corrupt one is named and
skipped, never fatal."""
from __future__ import annotations

import csv
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from ..errors import UsageError
from ..results import atomic_path, load_result
from .ladder import fmt, ladder_rows, ladder_section

BASELINE_CELL = "baseline"


def collect(root: Path) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """{(machine, matrix): {cell: [result, ...]}} from root/<machine>/<matrix>/<cell>/<seed>.json."""
    if not root.is_dir():
        raise UsageError(f"results directory {str(root)!r} not found")
    found: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.glob("*/*/*/*.json")):
        if path.name.endswith(".eval.json"):  # a checkpoint's games (fastdqn eval), in its result too
            continue
        machine, matrix, cell = path.parts[-4], path.parts[-3], path.parts[-2]
        try:
            result = load_result(path)
        except UsageError as e:
            print(f"fastdqn: skipping {e}", file=sys.stderr)
            continue
        found[(machine, matrix)][cell].append(result)
    return found


def cell_order(folder: Path, cells: dict) -> list[str]:
    """Matrix order as the runner's summary.csv recorded it; unknown cells last, sorted."""
    order: list[str] = []
    summary = folder / "summary.csv"
    if summary.exists():
        with open(summary, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("cell") in cells and row["cell"] not in order:
                    order.append(row["cell"])
    return order + sorted(c for c in cells if c not in order)


def _mean_compute(results: list[dict], key: str) -> float | None:
    """Mean over the seeds that recorded it (results before the compute block have none)."""
    values = [(r.get("compute") or {}).get(key) for r in results]
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _gflops(value, share) -> str:
    return "-" if value is None else fmt(value) + ("" if share is None else f" ({share:.0%})")


def cell_stats(results: list[dict]) -> dict:
    fps = [r["fps"] for r in results if r["fps"] is not None]
    solve = [r["solved"]["mean100"]["seconds"] for r in results if r["solved"]["mean100"]["seconds"] is not None]
    steps = [r["solved"]["mean100"]["steps"] for r in results if r["solved"]["mean100"]["steps"] is not None]
    return {
        "seeds": len(results),
        "fps": statistics.mean(fps) if fps else None,
        "fps_min": min(fps) if fps else None, "fps_max": max(fps) if fps else None,
        "frames": statistics.mean(r["frames_per_second"] for r in results if r["fps"] is not None) if fps else None,
        "solved": len(solve),
        "solve_median": statistics.median(solve) if solve else None,
        "solve_min": min(solve) if solve else None, "solve_max": max(solve) if solve else None,
        "steps_median": statistics.median(steps) if steps else None,
        "steps": statistics.mean(r["steps"] for r in results),
        "statuses": sorted({r["status"] for r in results}),
        "resumed": sum(1 for r in results if r.get("resumed")),
        "eval": statistics.mean(r["eval"]["mean"] for r in evals) if (evals := [
            r for r in results if (r.get("eval") or {}).get("mean") is not None]) else None,
        **{k: _mean_compute(results, k) for k in ("loop_gflops", "loop_share_of_peak", "learn_gflops",
                                                    "learn_share_of_peak", "act_gflops", "act_share_of_peak")},
    }


def matrix_table(cells: dict[str, list[dict]], order: list[str]) -> str:
    stats = {c: cell_stats(cells[c]) for c in order}
    base = stats.get(BASELINE_CELL, {}).get("fps")
    lines = ["| cell | seeds | FPS (agent steps/s) | spread | frames/s | vs baseline | GFLOP/s (of peak) | "
             "steps run | time to solve, median [min, max] | solved | steps to solve | greedy eval | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in order:
        s = stats[c]
        spread = "-" if s["fps"] is None else f"{fmt(s['fps_min'])}-{fmt(s['fps_max'])}"
        ratio = "-" if not base or s["fps"] is None else f"{s['fps'] / base:.2f}x"
        solve = "-" if s["solve_median"] is None else (
            f"{fmt(s['solve_median'] / 60)} min [{fmt(s['solve_min'] / 60)}, {fmt(s['solve_max'] / 60)}]")
        if s["resumed"]:  # its times add up parts run apart (resume.py): never one run's wall clock
            solve += f" ({s['resumed']} resumed)"
        lines.append(f"| {c} | {s['seeds']} | {fmt(s['fps'])} | {spread} | {fmt(s['frames'])} | {ratio} | "
                     f"{_gflops(s['loop_gflops'], s['loop_share_of_peak'])} | {fmt(s['steps'], 0)} | {solve} | "
                     f"{s['solved']}/{s['seeds']} | {fmt(s['steps_median'], 0)} | {fmt(s['eval'])} | "
                     f"{', '.join(s['statuses'])} |")
    return "\n".join(lines)


def phase_table(cells: dict[str, list[dict]], order: list[str]) -> str:
    """Share of the trainer's wall time per phase, mean over seeds; players' shares when parallel."""
    from ..profile import PHASES
    names = list(PHASES) + ["other"]
    lines = ["| cell | " + " | ".join(names) + " | players: env / act / queue_wait | learn GFLOP/s | act GFLOP/s |",
             "|---|" + "---|" * (len(names) + 3)]
    for c in order:
        shares = [r.get("phase_profile", {}).get("trainer", {}).get("share", {}) for r in cells[c]]
        row = [statistics.mean(s.get(p, 0.0) for s in shares) for p in names]
        players = [p["share"] for r in cells[c] for p in r.get("phase_profile", {}).get("players", [])
                   if isinstance(p, dict) and "share" in p]
        play = "-" if not players else " / ".join(
            f"{statistics.mean(p.get(k, 0.0) for p in players):.0%}" for k in ("env", "act", "queue_wait"))
        s = cell_stats(cells[c])
        lines.append(f"| {c} | " + " | ".join(f"{v:.0%}" for v in row) + f" | {play} | "
                     f"{_gflops(s['learn_gflops'], s['learn_share_of_peak'])} | "
                     f"{_gflops(s['act_gflops'], s['act_share_of_peak'])} |")
    return "\n".join(lines)


def clock_note(cells: dict[str, list[dict]]) -> str:
    """Where a run used CUDA, the phases' host clock charges GPU work to the phase that waits."""
    clocks = {r.get("phase_profile", {}).get("clock", "host") for rs in cells.values() for r in rs}
    return "; host clock: on CUDA, GPU work is charged to the phase that waits for it" if clocks - {"host"} else ""


def matrix_reference(folder: Path) -> str | None:
    """The matrix's `reference` cell, as the runner's summary.csv in `folder` names it (None: none)."""
    summary = folder / "summary.csv"
    if summary.exists():
        with open(summary, newline="") as fh:
            for row in csv.DictReader(fh):
                return row.get("reference") or None  # every row names it
    return None


def settings_line(results: list[dict]) -> str:
    cfg = results[0]["config"]
    hp, run = cfg["hyperparams"], cfg["run"]
    budget = f"budget: {run['max_steps']:,} steps" + (f", {run['max_seconds']} s" if run["max_seconds"] else "")
    if "peer" in cfg:  # a peer trainer's cell (fastdqn/peers): its library's hyperparameters, not fastdqn's
        p = cfg["peer"]
        return f"env {hp['env']}, {p['name']} {p['version']} {p['algorithm']}, hyperparameters of {p['hyperparams_source']}; {budget}"
    return (f"env {hp['env']}, replay {hp['replay_size']:,} (warm-up {hp['replay_initial']:,}), batch "
            f"{hp['batch_size']}, target sync every {hp['target_sync_steps']:,} steps, epsilon "
            f"{hp['epsilon_start']}->{hp['epsilon_final']} over {hp['epsilon_steps']:,} steps, lr {hp['lr']}; {budget}")


HEADER = ["# Results", "",
          "Generated by `fastdqn report` from the result files below this folder; do not edit by hand.",
          "FPS = agent steps per wall-clock second after the replay warm-up (frames/s = 4x for Atari).",
          "Time to solve = wall clock from the start of the run until the mean reward of the last 100",
          "episodes reaches the stop reward; unsolved seeds are counted in the `solved` column. A run",
          "marked `resumed` went on from a saved state: its time is the sum of its parts' training time.",
          "Greedy eval = the mean score of the games its checkpoint played at the end (`--eval-episodes`),",
          "mean over the seeds that ran them.", ""]
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def agent_lines(folder: Path, order: list[str], link_base: Path) -> list[str]:
    """A line per GIF that `fastdqn play` wrote beside a cell's results (<seed>.gif): its link,
    and its strip of frames shown inline where play wrote one."""
    from ..play import strip_path

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p.resolve(), link_base.resolve())).as_posix()

    lines = []
    for cell in order:
        for gif in sorted((folder / cell).glob("*.gif")):
            strip = strip_path(gif)
            shown = f"<br>![{cell} {gif.stem}: frames of the game]({rel(strip)})" if strip.exists() else ""
            lines.append(f"- `{cell}`, {gif.stem}: [one game of its agent (GIF)]({rel(gif)}){shown}")
    return ["The agents playing (`fastdqn play`):", ""] + lines + [""] if lines else []


def render_sections(root: Path, found: dict, plots: dict, link_base: Path, level: int = 2,
                    references: dict | None = None) -> str:
    """Markdown per machine and matrix; plot links relative to link_base; a ladder table where
    `references` names the matrix's reference cell."""
    out = []
    for (machine, matrix) in sorted(found):
        cells = found[(machine, matrix)]
        order = cell_order(root / machine / matrix, cells)
        first = cells[order[0]][0]
        hw, ver = first["hardware"], first["versions"]
        names = sorted({r["machine"] for rs in cells.values() for r in rs if r.get("machine")})
        made_on = f" Run on {', '.join(names)}." if names else ""
        links = " ".join(f"[{p.stem}]({Path(os.path.relpath(p.resolve(), link_base.resolve())).as_posix()})"
                         for p in plots.get((machine, matrix), []))
        reference = (references or {}).get((machine, matrix))
        ladder = ladder_section(cells, order, reference) if reference else []
        peers = [f"Settings of `{c}` (a peer trainer): {settings_line(cells[c])}." for c in order[1:]
                 if "peer" in cells[c][0]["config"]]
        out += [f"{'#' * level} {machine} / {matrix}", "",
                f"Machine: {hw['cpu']}, {hw['cores']} cores, GPU: {hw['gpu'] or 'none'}. "
                f"torch {ver['torch']}, gymnasium {ver['gymnasium']}, ale-py {ver['ale_py']}, "
                f"commit {(first['git']['commit'] or '?')[:10]}{' (dirty)' if first['git']['dirty'] else ''}.{made_on}", "",
                f"Settings of `{order[0]}`: {settings_line(cells[order[0]])}.", ""] + (peers and peers + [""]) + [
                matrix_table(cells, order), ""] + ladder + [
                "Phase profile (share of the trainer's wall time, mean over seeds" + clock_note(cells) + "):", "",
                phase_table(cells, order), ""] + ([f"Plots: {links}", ""] if links else []) + agent_lines(
                root / machine / matrix, order, link_base)
    return "\n".join(out)


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_report(root: Path, readme: Path | None = None) -> Path:
    """results/README.md, and the block between the markers of `readme` (the project README)."""
    from .plots import plot_all, plot_ladder
    found = collect(root)
    references = {key: matrix_reference(root / key[0] / key[1]) for key in found}
    plots = {}
    for key in found:
        order = cell_order(root / key[0] / key[1], found[key])
        folder, title = root / key[0] / key[1] / "plots", f"{key[1]} on {key[0]}"
        plots[key] = plot_all({c: found[key][c] for c in order}, folder, title)
        if references[key] in found[key]:
            plots[key].append(plot_ladder(ladder_rows(found[key], order, references[key]), folder / "ladder.png",
                                          title, references[key]))
    path = root / "README.md"
    extras = sorted(p for p in root.glob("*/*") if p.is_file() and p.suffix in (".md", ".json"))
    other = ["", "## Other measurements", ""] + [f"- [{p.relative_to(root).as_posix()}]({p.relative_to(root).as_posix()})"
                                            for p in extras] + [""] if extras else []
    sections = render_sections(root, found, plots, root, references=references)
    _write(path, "\n".join(HEADER) + "\n" + sections + "\n".join(other))
    if readme is not None and readme.exists():
        text = readme.read_text()
        start, end = text.find(README_START), text.find(README_END)
        if 0 <= start < end:
            block = render_sections(root, found, plots, readme.parent, level=3, references=references)
            _write(readme, text[:start + len(README_START)] + "\n" + block + text[end:])
    return path
