"""Command line: `fastdqn train | bench` (also `python -m fastdqn`).

User errors print one line `fastdqn: error: ...` and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .config import PRESET_DOCS, PRESETS, all_fields, build_config, preset_config
from .errors import UsageError


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
    epilog = "presets:\n" + "\n".join(f"  {name:<16} {PRESET_DOCS[name]}" for name in PRESETS)
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
    cfg = build_config(args.preset, args.config, cli_values)
    from .train import train
    result = train(cfg)
    fps = result["fps"]
    print(f"{cfg.run.name}: {result['steps']} steps, {result['episodes']} episodes, "
          f"FPS {fps:.1f} ({result['frames_per_second']:.1f} frames/s)" if fps is not None else
          f"{cfg.run.name}: {result['steps']} steps, {result['episodes']} episodes, no learning step yet")
    return 0


def build_parser(argv: list[str]) -> Parser:
    parser = Parser(prog="fastdqn", description="DQN throughput toolkit and benchmark harness")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train_parser(sub, argv)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(argv).parse_args(argv)
        return {"train": cmd_train}[args.command](args)
    except UsageError as e:
        print(f"fastdqn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastdqn: interrupted; finished results are kept", file=sys.stderr)
        return 130
