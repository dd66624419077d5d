"""Run one job file: `orthrus-batch run JOB.yaml [--set key=value ...]`.

Also runnable as `python -m jobs.run JOB.yaml [--set key=value ...]`. Exit status: 0 done,
2 the job, its input or its output path is invalid (nothing ran), 1 the run failed.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from pipeline.config import ConfigError, load_config
from pipeline.outputs import OutputError
from pipeline.shards import InputError

USAGE_ERRORS = (ConfigError, InputError, OutputError)


def run(job: str, overrides: Sequence[str] = (), echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Load, override, validate and run a job file; returns the run summary."""
    from pipeline import run_job

    return run_job(load_config(job, list(overrides)), echo=echo)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job YAML file (see README.md for the keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job key, e.g. --set engine.mode=ar --set sampling.max_new_tokens=64 "
                             "(values are YAML; repeatable)")


def command(args: argparse.Namespace) -> int:
    """The `run` subcommand; returns the exit status."""
    try:
        run(args.job, args.overrides)
    except USAGE_ERRORS as err:
        print(f"orthrus-batch: error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.run", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
