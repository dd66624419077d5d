"""Run one job file: `orthrus-batch run JOB.yaml [--set key=value ...]`.

Also runnable as `python -m jobs.run JOB.yaml [--set key=value ...]`. Exit status: 0 done,
2 the job, its input or its output path is invalid (nothing ran), 1 the run failed, 130
interrupted (Ctrl-C: the output folder is left resumable and the resume command is printed).

Ray's own log lines go to a log file (pipeline/ray_logs.py) whose path is printed first; an
error prints one line here and its traceback in that file. A local Ray that the run started is
stopped before the command returns, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from typing import Any, Callable, Sequence, TextIO

from pipeline.config import ConfigError, JobConfig, load_config
from pipeline.lease import LeaseError
from pipeline.ray_logs import log_path, ray_output_to

from pipeline.exit_status import FAILED, INTERRUPTED, USAGE_ERRORS, module_main, usage_error


def run(job: str, overrides: Sequence[str] = (), echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Load, override, validate and run a job file; returns the run summary."""
    from pipeline import run_job

    return run_job(load_config(job, list(overrides)), echo=echo)


def resume_command(job: str, overrides: Sequence[str], config: JobConfig | None) -> str:
    """The command that finishes an interrupted run: the same job and overrides, with output.resume=true."""
    kept = [o for o in overrides if o.partition("=")[0].strip() not in ("output.resume", "output.overwrite")]
    if config is not None and config.output.overwrite:
        kept.append("output.overwrite=false")  # resume and overwrite exclude each other
    sets = "".join(f" --set {shlex.quote(o)}" for o in kept + ["output.resume=true"])
    return f"orthrus-batch run {shlex.quote(job)}{sets}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job YAML file (see README.md for the keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job key, e.g. --set engine.mode=ar --set sampling.max_new_tokens=64 "
                             "(values are YAML; repeatable)")


def command(args: argparse.Namespace) -> int:
    """The `run` subcommand; returns the exit status."""
    try:
        config = load_config(args.job, args.overrides)
    except ConfigError as err:
        return usage_error(err)
    log = log_path(config.name)
    ray_was_up = _ray_initialized()
    def echo(line: str) -> None:
        print(line, flush=True)
        if line.startswith(f"job {config.name!r}: "):  # the run's first line, just before Ray starts
            print(f"  ray logs   {log}", flush=True)

    with ray_output_to(log) as terminal:
        try:
            run(args.job, args.overrides, echo=echo)
            return 0
        except USAGE_ERRORS as err:
            return usage_error(err, terminal)
        except KeyboardInterrupt:
            _say(terminal, f"orthrus-batch: interrupted; the output folder {config.output.path} keeps every "
                           f"finished shard. Finish the job with:\n  {resume_command(args.job, args.overrides, config)}")
            return INTERRUPTED
        except Exception as err:  # noqa: BLE001 - one line here, the traceback in the log
            traceback.print_exc()  # sys.stderr: the log file
            first = (str(err).strip().splitlines() or [""])[0]
            what = "lost its output folder" if isinstance(err, LeaseError) else "failed"
            _say(terminal, f"orthrus-batch: the job {what}: {type(err).__name__}: {first} (details: {log})")
            return FAILED
        finally:
            if not ray_was_up:
                _stop_ray()
            if log.exists() and log.stat().st_size == 0:
                log.unlink()  # nothing was logged (e.g. refused before Ray started)


def _say(stream: TextIO, text: str) -> None:
    print(text, file=stream, flush=True)


def _ray_initialized() -> bool:
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized()


def _stop_ray() -> None:
    """Disconnect, and stop the local Ray this run started (ray.shutdown does both)."""
    if _ray_initialized():
        import ray

        ray.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("jobs.run", __doc__, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
