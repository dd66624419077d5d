"""The `orthrus-batch` command.

    orthrus-batch run JOB.yaml [--set key=value ...]

`main(argv=None)` returns the exit status, so tests call it directly.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from jobs import run as run_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orthrus-batch",
                                     description="Offline batch generation with Qwen3/Orthrus on Ray Data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = sub.add_parser("run", help="run a generation job", description=run_cmd.__doc__.splitlines()[0])
    run_cmd.add_arguments(run_parser)
    run_parser.set_defaults(handler=run_cmd.command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
