"""Exit statuses and one-line errors of every `orthrus-batch` subcommand (jobs/cli.py, run.py,
compare.py, submit.py): 0 done, 2 a usage error (the job, its input or an output folder is
invalid, or the cluster refused: nothing ran), 1 the run failed, 130 interrupted. One home, so the
entry points import it and never each other.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence, TextIO

from pipeline.config import ConfigError
from pipeline.outputs import OutputError
from pipeline.shards import InputError

USAGE_ERRORS = (ConfigError, InputError, OutputError)  # raised before anything runs
USAGE, FAILED = 2, 1
INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def usage_error(err: Any, stream: TextIO | None = None) -> int:
    """One line `orthrus-batch: error: ...` (stderr by default); returns the usage exit status."""
    print(f"orthrus-batch: error: {err}", file=stream or sys.stderr, flush=True)
    return USAGE


def module_main(module: str, doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                command: Callable[[argparse.Namespace], int], argv: Sequence[str] | None) -> int:
    """`python -m jobs.<name> ...`: the subcommand on its own, with the same arguments and statuses."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    add_arguments(parser)
    return command(parser.parse_args(argv))
