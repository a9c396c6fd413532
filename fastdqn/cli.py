"""Command line: `fastdqn train | eval | play | bench | report | check` (also `python -m fastdqn`).

User errors print one line `fastdqn: error: ...` and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .config import PRESET_DOCS, PRESETS, all_fields, build_config, parse_value, preset_config
from .errors import ProcessFailed, RunFailed, UsageError, WriteFailed
from .lifecycle import describe, exit_code, stop_requests
from .results import MACHINE_ENV, check_machine_name


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we want one line
        raise UsageError(message)


def _preset_from_argv(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return "baseline"


def add_train_parser(sub, argv: list[str]) -> None:
    preset = _preset_from_argv(argv)
    shown = preset_config(preset if preset in PRESETS else "baseline")
    what = ", ".join(f"{k}={v}" for k, v in PRESETS[preset].items()) if preset in PRESETS else ""
    width = max(map(len, PRESETS))
    epilog = "presets:\n" + "\n".join(f"  {name:<{width}}  {PRESET_DOCS[name]}" for name in PRESETS)
    if preset in PRESETS:
        epilog += f"\n\npreset {preset!r} sets: {what or '(the defaults)'}; defaults above include it"
    p = sub.add_parser("train", help="one training run", epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help=f"named flag set (default baseline): {', '.join(PRESETS)}")
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="TOML with optional `preset` and tables [hyperparams], [flags], [run]")
    groups = {name: p.add_argument_group(name) for name in ("hyperparams", "flags", "run")}
    for name, (group, f) in all_fields().items():
        default = getattr(shown.groups()[group], name)
        meta = f.metadata
        choices = f" ({'|'.join(meta['choices'])})" if meta.get("choices") else ""
        groups[group].add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                                   metavar=type(f.default).__name__.upper(),
                                   help=f"{meta['help']}{choices} [default: {default}]")


def cmd_train(args) -> int:
    cli_values = {name: getattr(args, name) for name in all_fields() if getattr(args, name) is not None}
    if cli_values.get("resume"):  # the saved run's settings, these run settings on top
        if args.preset or args.config:
            raise UsageError("--resume goes on with the run's own settings: no --preset or --config with it")
        from .resume import load_state, resumed_values
        doc = load_state(cli_values["resume"])
        groups = {name: group for name, (group, _f) in all_fields().items()}
        given = {name: parse_value(name, v, all_fields()[name][1]) for name, v in cli_values.items()}
        cfg = build_config(doc["config"]["preset"], None, resumed_values(doc, given, groups))
    else:
        cfg = build_config(args.preset, args.config, cli_values)
    from .results import machine_name
    machine_name()  # a bad $FASTDQN_MACHINE or machine file fails here, before the run
    from .train import train
    result = train(cfg)
    fps = result["fps"]
    print(f"{cfg.run.name}: {result['steps']} steps, {result['episodes']} episodes, "
          f"FPS {fps:.1f} ({result['frames_per_second']:.1f} frames/s)" if fps is not None else
          f"{cfg.run.name}: {result['steps']} steps, {result['episodes']} episodes, no learning step yet")
    return 0


def default_matrix() -> str:
    """benchmarks/quick.toml of the working directory, else of the source checkout."""
    here = Path("benchmarks/quick.toml")
    return str(here if here.exists() else Path(__file__).resolve().parent.parent / here)


def cmd_bench(args) -> int:
    from .bench.launchers import make_launcher
    from .bench.matrix import load_matrix
    from .bench.report import cell_order, collect, matrix_table, write_report
    from .bench.runner import run_matrix
    matrix = load_matrix(args.matrix or default_matrix())  # validated whole before any run
    unknown = [c for c in args.cell or [] if c not in {cell.name for cell in matrix.cells}]
    if unknown:
        raise UsageError(f"--cell {unknown[0]!r}: no such cell in {matrix.path}: expected one of "
                         f"{', '.join(c.name for c in matrix.cells)}")
    if args.machine is not None:  # the runs (child processes) inherit it
        os.environ[MACHINE_ENV] = check_machine_name(args.machine, "--machine")
    if args.cell_cap is not None and not 0 <= args.cell_cap < math.inf:  # NaN fails too
        raise UsageError(f"invalid value {args.cell_cap:g} for --cell-cap: expected seconds >= 0 (0 = no cap)")
    launcher = make_launcher(args.launcher, args.address, args.cell_cap)
    results = Path(args.results)
    rc, machines = run_matrix(matrix, results, progress=not args.no_progress, launcher=launcher, only=args.cell)
    found = collect(results) if machines else {}
    ran = [(m, found[(m, matrix.name)]) for m in machines if (m, matrix.name) in found]
    for machine, cells in ran:  # Ray: one table per machine that ran cells
        print(matrix_table(cells, cell_order(results / machine / matrix.name, cells)))
    if ran:
        try:
            print(f"report: {write_report(results, readme_for(results))}", file=sys.stderr)
        except OSError as e:  # the results themselves are written; only the tables are not
            print(f"fastdqn: error: could not write the report: {e}", file=sys.stderr)
            return rc or 1
    return rc


def readme_for(results: Path) -> Path:
    """The project README beside the results folder; its results block is regenerated too."""
    return results.resolve().parent / "README.md"


def cmd_report(args) -> int:
    from .bench.report import write_report
    if args.from_tensorboard:
        from .bench.plots import curves_from_tensorboard, plot_reward
        logdir = Path(args.from_tensorboard)
        cells = {d.name: curves_from_tensorboard(d) for d in sorted(logdir.iterdir()) if d.is_dir()}
        cells = {name: curves for name, curves in cells.items() if curves}
        if not cells:
            raise UsageError(f"no TensorBoard runs with episodes/avg_reward below {str(logdir)!r}")
        plot_reward(cells, logdir / "reward.png", logdir.name, args.stop_reward)
        print(f"plot: {logdir / 'reward.png'}", file=sys.stderr)
        return 0
    results = Path(args.results_dir)
    print(f"report: {write_report(results, readme_for(results))}", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate
    result = evaluate(args.checkpoint, args.episodes, args.epsilon, args.envs, args.backend, args.seed, args.out,
                      progress=not args.no_progress)
    print(f"{result['episodes']} games: mean {result['mean']:.2f}, min {result['min']:g}, max {result['max']:g}")
    return 0


def cmd_play(args) -> int:
    from .play import record
    played = record(args.checkpoint, args.out, args.epsilon, args.seed, args.max_steps, args.every,
                    progress=not args.no_progress)
    game = "the whole game" if played["whole_game"] else f"its first {played['agent_steps']:,} agent steps"
    print(f"play: {played['gif']} ({game}, score {played['score']:g}, {played['frames']:,} frames at "
          f"{played['fps']:.1f}/s); a strip of its frames: {played['strip']}")
    return 0


def cmd_check(args) -> int:
    from .bench.check import REFERENCE, run_check
    if args.rounds < 1:
        raise UsageError(f"invalid value {args.rounds} for --rounds: expected >= 1")
    return run_check(Path(args.reference) if args.reference else REFERENCE, args.rounds, args.update)


def build_parser(argv: list[str]) -> Parser:
    parser = Parser(prog="fastdqn", description="DQN throughput toolkit and benchmark harness")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train_parser(sub, argv)
    b = sub.add_parser("bench", help="run a matrix of cells x seeds, one process each, resumable")
    b.add_argument("matrix", nargs="?", default=None, help="matrix TOML (default: benchmarks/quick.toml)")
    b.add_argument("--results", default="results", help="results root (default: results)")
    b.add_argument("--cell", action="append", metavar="NAME",
                   help="run only this cell (repeatable; default: every cell); the others stay as they are")
    b.add_argument("--no-progress", action="store_true", help="no progress display")
    b.add_argument("--machine", default=None, metavar="NAME",
                   help="this machine's name for the runs: finished results are reused only when made "
                        "under the same name (default: $FASTDQN_MACHINE, else the name made on first use)")
    b.add_argument("--cell-cap", type=float, default=None, metavar="SECONDS",
                   help="wall-clock cap per (cell, seed): past it the run is stopped and written as failed, "
                        "and the matrix goes on (default: the cell's max_seconds, else its max_steps at "
                        "1 step/s, plus 300 s; no budget: no cap; 0 = no cap)")
    b.add_argument("--launcher", choices=("local", "ray"), default="local",
                   help="local: one cell at a time here (default); ray: each cell a Ray task (extra `ray`)")
    b.add_argument("--address", default=None, metavar="ADDR",
                   help="--launcher ray: the Ray cluster to use (default: a new local instance, loopback only)")
    c = sub.add_parser("check", help="speed regression gate: exit 1 when a speed ratio or absolute speed regressed")
    c.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per gate (default 5)")
    c.add_argument("--reference", default=None, help="reference JSON (default benchmarks/check_reference.json)")
    c.add_argument("--update", action="store_true",
                   help="write this machine's ratios and pytest-benchmark baseline as its reference")
    e = sub.add_parser("eval", help="play whole games with a checkpoint's policy and write their scores")
    e.add_argument("checkpoint", help="a checkpoint train wrote (result.pt beside result.json)")
    e.add_argument("--episodes", type=int, default=10, help="games to play (default 10)")
    e.add_argument("--epsilon", type=float, default=0.0,
                   help="exploration while playing (default 0: greedy; 0.05 is a common test value)")
    e.add_argument("--envs", type=int, default=None, help="env copies playing at once (default: the run's)")
    e.add_argument("--backend", default=None, choices=("sequential", "gym_async", "ale_sync", "ale_async"),
                   help="how the copies step (default: the run's; ale_async plays as ale_sync)")
    e.add_argument("--seed", type=int, default=None, help="first env seed (default: the run's seed + 10000)")
    e.add_argument("--out", default=None, help="the JSON (default: beside the checkpoint, <name>.eval.json)")
    e.add_argument("--no-progress", action="store_true", help="no line per game")
    p = sub.add_parser("play", help="record one game of a checkpoint's policy as a GIF of the emulator's screen")
    p.add_argument("checkpoint", help="a checkpoint train wrote (result.pt beside result.json)")
    p.add_argument("--out", required=True, help="the GIF to write")
    p.add_argument("--epsilon", type=float, default=0.0, help="exploration while playing (default 0: greedy)")
    p.add_argument("--seed", type=int, default=None, help="env seed (default: the run's seed + 10000)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many agent steps (default 0: the whole game)")
    p.add_argument("--every", type=int, default=1, help="keep every N-th agent step's screen (default 1: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    r = sub.add_parser("report", help="write results/README.md tables from result files")
    r.add_argument("results_dir", nargs="?", default="results", help="results root (default: results)")
    r.add_argument("--from-tensorboard", metavar="LOGDIR", default=None,
                   help="instead: plot reward curves from TensorBoard event files, one cell per "
                        "subfolder of LOGDIR (e.g. runs/bench/<machine>/<matrix>), into LOGDIR/reward.png")
    r.add_argument("--stop-reward", type=float, default=17.0, help="reference line for --from-tensorboard")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with stop_requests():  # SIGTERM stops a run as Ctrl-C does
            args = build_parser(argv).parse_args(argv)
            command = {"train": cmd_train, "bench": cmd_bench, "report": cmd_report, "check": cmd_check,
                       "eval": cmd_eval, "play": cmd_play}
            return command[args.command](args)
    except UsageError as e:
        print(f"fastdqn: error: {e}", file=sys.stderr)
        return 2
    except (ProcessFailed, RunFailed, WriteFailed) as e:  # the first two: train() wrote the result (failed)
        print(f"fastdqn: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the result of the run is written as interrupted
        print(f"fastdqn: interrupted ({describe(e)}); finished results are kept", file=sys.stderr)
        return exit_code(e)
