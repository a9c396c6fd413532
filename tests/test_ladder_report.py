"""The leave-one-out ladder: the committed matrix, the `reference` key, and the report's ladder
table and bar chart, on synthetic results whose ratios are worked out by hand."""
import csv
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from fastdqn.bench.ladder import ladder_rows, solve_bounds
from fastdqn.bench.matrix import Cell, load_matrix
from fastdqn.bench.report import write_report
from fastdqn.bench.runner import SUMMARY_COLUMNS, summary_row
from fastdqn.cli import main
from fastdqn.config import build_config
from fastdqn.errors import UsageError
from fastdqn.results import SCHEMA_VERSION, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
LADDER = {  # rung -> what it changes in the recipe (the ladder's TOML comments say why)
    "full": {}, "slow_grads": {"no_grad": False}, "one_env": {"envs": 1}, "parallel": {"parallel": True},
    "gym_preprocessing": {"backend": "sequential"}, "no_bf16": {"bf16": False}, "no_compile": {"compile": False},
    "ale_async": {"backend": "ale_async", "async_batch": 4}, "threads_1": {"threads": 1},
    "book_replay_ratio": {"updates_per_step": 0.0}, "n_step_1": {"n_step": 1}, "no_double": {"double": False},
}
RECIPE = {"backend": "ale_sync", "async_batch": 0, "updates_per_step": 0.0625, "epsilon_steps": 250_000,
          "bf16": True, "threads": 2, "max_seconds": 9000}


def flat(cell) -> dict:
    d = build_config(cell.preset, None, cell.settings).to_dict()
    return {k: v for g in ("hyperparams", "flags", "run") for k, v in d[g].items()}


def test_the_committed_ladder_removes_one_optimization_per_rung():
    m = load_matrix(ROOT / "benchmarks" / "ladder_solve.toml")
    assert m.reference == "full" and [c.name for c in m.cells] == list(LADDER)
    cells = {c.name: flat(c) for c in m.cells}
    full = cells["full"]
    assert {k: full[k] for k in RECIPE} == RECIPE and full["n_step"] == 3 and full["double"] and full["compile"]
    for name, changes in LADDER.items():
        assert {k: v for k, v in cells[name].items() if full[k] != v} == changes, name
        assert 0 < cells[name]["max_seconds"] <= 9000 and cells[name]["max_steps"] == 0  # run to 17 or the cap


def test_a_reference_that_names_no_cell_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "benchmarks" / "lad.toml"
    path.parent.mkdir()
    path.write_text('reference = "fulll"\n[[cell]]\nname = "full"\n[[cell]]\nname = "slow"\npreset = "slow_grads"\n')
    with pytest.raises(UsageError, match="reference 'fulll' names no cell: expected one of full, slow"):
        load_matrix(path)
    assert main(["bench", str(path), "--results", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line


def curve(rewards: list[float], steps: int, seconds: float) -> list[list]:
    n = len(rewards)
    return [[i + 1, steps * (i + 1) // n, seconds * (i + 1) / n, float(r)] for i, r in enumerate(rewards)]


def result(changes: dict, seed: int, fps: float, seconds: float, steps: int, solved: bool = True,
           rewards: list[float] | None = None, isa: str = "avx512bf16") -> dict:
    """A result as `train` writes it, for the recipe with `changes`: solved at `seconds` and `steps`,
    or (solved False) stopped there by its budget without reaching 17."""
    cfg = build_config("solve_recipe", None, {**RECIPE, **changes, "seed": seed}).to_dict()
    rewards = rewards if rewards is not None else [-21.0 + 38 * i / 299 for i in range(300)]
    hit = {"seconds": seconds, "steps": steps, "episodes": len(rewards)} if solved else {
        "seconds": None, "steps": None, "episodes": None}
    return {"schema_version": SCHEMA_VERSION, "status": "solved" if solved else "budget",
            "stop_reason": "solved" if solved else "max_seconds", "config": cfg,
            "git": {"commit": "0" * 40, "dirty": False},
            "versions": {"torch": "t", "gymnasium": "g", "ale_py": "a"},
            "hardware": {"cpu": "AMD EPYC", "cpu_isa": isa, "cores": 2, "gpu": None}, "device": "cpu",
            "steps": steps, "episodes": len(rewards), "updates": steps // 16, "frames_per_step": 4,
            "fps": fps, "fps_total": fps, "frames_per_second": 4 * fps, "fps_series": [],
            "wall_seconds": seconds, "stop_rule": {"reward": 17.0, "source": "default"},
            "solved": {"mean100": {"rule": "r", **hit}, "ema": {"rule": "r", **hit}},
            "reward_curve": curve(rewards, steps, seconds),
            "phase_profile": {"trainer": {"share": {"env": 0.2, "act": 0.1, "learn": 0.6, "other": 0.1}}}}


def write(path: Path, res: dict) -> None:
    write_json_atomic(path, res)


def ladder_folder(tmp_path: Path, rungs: dict[str, list[dict]], matrix: str = "lad") -> Path:
    """results/m1/<matrix>/<rung>/<seed>.json, and the runner's summary.csv marking `full` as the
    matrix's reference."""
    folder = tmp_path / "results" / "m1" / matrix
    rows = []
    for name, results in rungs.items():
        for seed, res in enumerate(results, 1):
            write(folder / name / f"{seed}.json", res)
            rows.append(summary_row(Cell(name, "solve_recipe"), seed, res, reference="full"))
    with open(folder / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / "results"


# 100 games at 0 then 20 at +10: the best 20-game mean is +10.0, the best 100-game one +2.0 (80 x 0, 20 x 10)
PLATEAU = [0.0] * 100 + [10.0] * 20
RUNGS = {
    # the reference, 3 seeds: FPS 200/220/240 (mean 220, spread 0.909-1.091), time 3,000/3,600/4,200 s
    # (median 3,600 = 60 min, spread 0.833-1.167), steps 1.2M/1.4M/1.5M (median 1.4M)
    "full": [result({}, 1, 200.0, 3000.0, 1_200_000), result({}, 2, 220.0, 3600.0, 1_400_000),
             result({}, 3, 240.0, 4200.0, 1_500_000)],
    "slow_grads": [result(LADDER["slow_grads"], 1, 110.0, 7200.0, 1_300_000)],     # 0.50x, 2.00x: agree
    "n_step_1": [result(LADDER["n_step_1"], 1, 231.0, 9000.0, 2_000_000, solved=False, rewards=PLATEAU)],
    "ale_async": [result(LADDER["ale_async"], 1, 330.0, 5400.0, 1_700_000)],        # 1.50x, 1.50x: disagree
    "threads_1": [result(LADDER["threads_1"], 1, 110.0, 2700.0, 1_100_000)],        # 0.50x, 0.75x: disagree
    "no_compile": [result(LADDER["no_compile"], 1, 176.0, 4000.0, 1_400_000)],      # 0.80x, 1.11x: time same
    "no_bf16": [result(LADDER["no_bf16"], 1, 198.0, 4320.0, 1_400_000, isa="avx2")],  # 0.90x, 1.20x: agree
}


def test_ladder_table_ratios_disagreements_reached_levels_and_bar_chart(tmp_path):
    root = ladder_folder(tmp_path, RUNGS)
    text = write_report(root).read_text()
    rows = {r["cell"]: r for r in ladder_rows(RUNGS, list(RUNGS), "full")}
    assert rows["full"]["fps"] == pytest.approx(220.0) and rows["full"]["time"] == (3600.0, 3600.0)
    expected = {  # FPS ratio, time ratio (low, high), directions
        "slow_grads": (0.5, (2.0, 2.0), "slower", "later"),
        "n_step_1": (1.05, (2.5, np.inf), "same", "later"),  # within the reference's FPS spread; ≥ 9,000 / 3,600
        "ale_async": (1.5, (1.5, 1.5), "faster", "later"),
        "threads_1": (0.5, (0.75, 0.75), "slower", "sooner"),
        "no_compile": (0.8, (4000 / 3600,) * 2, "slower", "same"),
        "no_bf16": (0.9, (1.2, 1.2), "slower", "later"),
    }
    for cell, (fps_ratio, time_ratio, fps_dir, time_dir) in expected.items():
        row = rows[cell]
        assert row["fps_ratio"] == pytest.approx(fps_ratio), cell
        assert row["time_ratio"] == pytest.approx(time_ratio), cell
        assert (row["fps_dir"], row["time_dir"]) == (fps_dir, time_dir), cell
    assert rows["n_step_1"]["unsolved"] == [{"status": "budget", "minutes": 150.0, "best100": 2.0, "best20": 10.0}]

    table = {line.split(" | ")[0][2:]: line for line in text.splitlines()
             if line.startswith("| ") and line.count(" | ") == 10}  # the ladder's 11 columns
    assert list(table)[:2] == ["rung", "full"]  # the reference first, whatever the matrix order
    assert table["full"] == ("| full | (reference) | bf16 | 3/3 | 220.0 | 1.00x | 60.0 min | 1.00x | 1,400,000 | - "
                             "| reference |")
    assert table["slow_grads"] == ("| slow_grads | no_grad false | bf16 | 1/1 | 110.0 | 0.50x | 120.0 min | 2.00x | "
                                   "1,300,000 | - | agree: slower FPS, solves later |")
    assert table["n_step_1"] == ("| n_step_1 | n_step 1 | bf16 | 0/1 | 231.0 | 1.05x | ≥ 150.0 min | ≥ 2.50x | "
                                 "≥ 2,000,000 | budget at 150.0 min: +2.0 / +10.0 | "
                                 "**disagree**: FPS within spread, solves later |")
    assert table["ale_async"].endswith("| 1.50x | 90.0 min | 1.50x | 1,700,000 | - | "
                                       "**disagree**: faster FPS, solves later |")
    assert table["threads_1"].endswith("| 0.50x | 45.0 min | 0.75x | 1,100,000 | - | "
                                       "**disagree**: slower FPS, solves sooner |")
    assert table["no_compile"].endswith("| 0.80x | 66.7 min | 1.11x | 1,400,000 | - | "
                                        "**disagree**: slower FPS, time within spread |")
    assert table["no_bf16"].startswith("| no_bf16 | bf16 false | fp32 |")
    assert "within spread: inside the range of the reference's 3 seeds." in text

    ladder_png = root / "m1" / "lad" / "plots" / "ladder.png"
    assert "[ladder](m1/lad/plots/ladder.png)" in text
    img = mpimg.imread(ladder_png)[..., :3]
    assert ladder_png.stat().st_size > 5000 and img.std() > 0.02


def test_precision_says_where_bf16_ran_emulated():
    rungs = {"full": [result({}, 1, 50.0, 600.0, 10_000, isa="avx2")],
             "no_bf16": [result(LADDER["no_bf16"], 1, 200.0, 600.0, 10_000, isa="avx2")],
             "gpu": [{**result({}, 1, 900.0, 600.0, 10_000, isa="avx2"), "device": "cuda:0"}]}
    assert [r["precision"] for r in ladder_rows(rungs, list(rungs), "full")] == ["bf16, emulated", "fp32", "bf16"]


def test_unsolved_seeds_bound_the_median_and_an_unsolved_reference_bounds_the_ratio():
    solved = [result({}, 1, 1.0, 3000.0, 100), result({}, 2, 1.0, 4000.0, 200)]
    late = result({}, 3, 1.0, 9000.0, 900, solved=False)   # ran past both solved seeds: cannot move the median
    early = result({}, 3, 1.0, 2000.0, 50, solved=False)   # stopped before them: the median is a bound
    assert solve_bounds([*solved, late], "seconds") == (4000.0, 4000.0)
    assert solve_bounds([*solved, early], "seconds") == (3000.0, 4000.0)
    assert solve_bounds([*solved, early], "steps") == (100.0, 200.0)
    rungs = {"full": [result({}, 1, 100.0, 6000.0, 1000, solved=False)],
             "fast": [result(LADDER["n_step_1"], 1, 100.0, 3000.0, 500)],
             "slow": [result(LADDER["no_double"], 1, 100.0, 9000.0, 1500, solved=False)]}
    rows = {r["cell"]: r for r in ladder_rows(rungs, list(rungs), "full")}
    assert rows["fast"]["time_ratio"] == (0.0, 0.5) and rows["fast"]["time_ratio_text"] == "≤ 0.50x"
    assert rows["fast"]["time_dir"] == "sooner"
    assert rows["slow"]["time_ratio_text"] == "-" and rows["slow"]["time_dir"] is None  # both unsolved: unknown


def test_a_ladder_without_its_reference_results_says_so_in_one_line(tmp_path):
    root = ladder_folder(tmp_path, {"slow_grads": RUNGS["slow_grads"]})
    text = write_report(root).read_text()
    notes = [line for line in text.splitlines() if line.startswith("Ladder")]
    assert notes == ["Ladder: the reference cell `full` has no result here yet: no ratios."]
    assert not (root / "m1" / "lad" / "plots" / "ladder.png").exists()
