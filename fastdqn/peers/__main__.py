"""`python -m fastdqn.peers PEER [--setting VALUE ...]`: one peer run, as `fastdqn train` is one
fastdqn run (bench starts its peer cells this way). Bad input: one line, exit 2; Ctrl-C or
SIGTERM: the result written as interrupted, exit 130 or 143."""
from __future__ import annotations

import sys

from ..cli import Parser
from ..config import all_fields
from ..errors import RunFailed, UsageError, WriteFailed
from ..lifecycle import describe, exit_code, stop_requests
from . import OWN, PEERS, RUNNER, SHARED, peer_config

ENV_HELP = ("gymnasium env id the peer has published hyperparameters for (SB3 peers: Atari NoFrameskip ids "
            "and CartPole-v1, evotorch_pgpe: CartPole-v1)")


def build_parser() -> Parser:
    parser = Parser(prog="python -m fastdqn.peers",
                    description="one run of a peer trainer, measured by fastdqn's definitions")
    parser.add_argument("peer", help=f"one of {', '.join(PEERS)}")
    fields = all_fields()
    helps = {**{key: fields[key][1].metadata["help"] for key in SHARED + RUNNER},
             **{key: f.metadata["help"] for own in OWN.values() for key, f in own.items()}, "env": ENV_HELP}
    for key, text in helps.items():
        parser.add_argument("--" + key.replace("_", "-"), dest=key, default=None, help=text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with stop_requests():  # SIGTERM stops a run as Ctrl-C does
            args = build_parser().parse_args(argv)
            given = {k: v for k, v in vars(args).items() if k != "peer" and v is not None}
            cfg = peer_config(args.peer, given)
            from .common import run_peer
            result = run_peer(cfg)
            fps = result["fps"]
            print(f"{cfg.run.name}: {result['steps']} steps, {result['episodes']} episodes, "
                  + (f"FPS {fps:.1f}" if fps is not None else "no update yet"))
            return 0
    except UsageError as e:
        print(f"fastdqn: error: {e}", file=sys.stderr)
        return 2
    except (RunFailed, WriteFailed) as e:
        print(f"fastdqn: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # the result is written as interrupted
        print(f"fastdqn: interrupted ({describe(e)}); the result is written", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    raise SystemExit(main())
