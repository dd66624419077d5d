"""The `orthrus-batch` command.

    orthrus-batch run JOB.yaml [--set key=value ...]
    orthrus-batch compare JOB.yaml [--sample N] [--gpu-hour-price USD] [--set key=value ...]
    orthrus-batch submit JOB.yaml --address http://HOST:8265 [--wait] [--set key=value ...]

`main(argv=None)` returns the exit status, so tests call it directly. Exit statuses, the same for
every subcommand: 0 done, 2 a usage error (the job, its input or an output folder is invalid, or
the cluster refused: nothing ran), 1 the run failed, 130 interrupted. The subcommands' modules
(jobs/run.py, compare.py, submit.py) share pipeline/exit_status.py and are imported by `build_parser`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.exit_status import FAILED, INTERRUPTED, USAGE, USAGE_ERRORS, module_main, usage_error  # noqa: F401

def build_parser() -> argparse.ArgumentParser:
    from jobs import compare as compare_cmd
    from jobs import run as run_cmd
    from jobs import submit as submit_cmd

    parser = argparse.ArgumentParser(prog="orthrus-batch",
                                     description="Offline batch generation with Qwen3/Orthrus on Ray Data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = sub.add_parser("run", help="run a generation job", description=run_cmd.__doc__.splitlines()[0])
    run_cmd.add_arguments(run_parser)
    run_parser.set_defaults(handler=run_cmd.command)
    for name, module, help_text in (("compare", compare_cmd, "run AR and Orthrus on the same rows and report"),
                                    ("submit", submit_cmd, "submit a job to a Ray cluster (Ray Jobs API)")):
        p = sub.add_parser(name, help=help_text, description=module.__doc__.splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(handler=module.command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
