"""Run a job on a Ray cluster: `orthrus-batch submit JOB.yaml --address http://HEAD:8265 [--wait]`.

    orthrus-batch submit job.yaml --address http://HEAD:8265 --wait --set sampling.max_new_tokens=64
    python -m jobs.submit job.yaml --address http://HEAD:8265 [--wait] [--python PYTHON] [--set k=v ...]

Submits through the Ray Jobs API (`ray.job_submission.JobSubmissionClient`; no `ray.init` here).
The job's working_dir is a staged copy of this project's code (pipeline/, workers/, jobs/: never
.venv, .git, runs/ or build/) with the job file beside it as `job.yaml`, so the cluster runs the
code you have, and Ray Data's actors receive it too. On the head the entrypoint is
`python -m jobs.cli run job.yaml [--set ...]`; the nodes need the dependencies (cluster.yaml's
setup commands install the package). The job is validated here first: an invalid job exits 2 and
is not submitted. Paths in it are read on the cluster: use s3:// (or paths that exist on every
node); a relative local path resolves inside the job's working directory there.

Prints the submission id. With --wait it streams the job's logs until the job ends and exits 0 on
SUCCEEDED, 1 on FAILED or STOPPED (printing Ray's status message).

Token authentication (Ray 2.60's default for `ray start --head`): Ray's client sends the token
only when RAY_AUTH_MODE=token is set, so a user with the token in ~/.ray/auth_token got a raw
AuthenticationError (issue 13). Here, with RAY_AUTH_MODE unset, a token found in RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token turns token mode on for this client. A refused or
unreachable cluster is one line naming the address and the fix, exit status 2.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeline.config import JobConfig, load_config
from pipeline.storage import is_s3

from pipeline.exit_status import FAILED, USAGE_ERRORS, module_main, usage_error

PACKAGES = ("pipeline", "workers", "jobs")
JOB_FILE = "job.yaml"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
_POLL_S = 1.0


def package_dirs() -> list[Path]:
    """The folders of this project's packages, wherever they are installed from."""
    import importlib

    return [Path(importlib.import_module(name).__file__).resolve().parent for name in PACKAGES]


def stage(job: str | Path, dest: Path) -> Path:
    """Copy the packages and the job file into `dest` (the working_dir Ray uploads); returns dest."""
    for src in package_dirs():
        shutil.copytree(src, dest / src.name, ignore=_IGNORE)
    shutil.copyfile(job, dest / JOB_FILE)
    return dest


def entrypoint(overrides: Sequence[str], python: str = "python") -> str:
    """The shell command the cluster runs (from the working_dir, so the shipped code is imported)."""
    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
    return f"{shlex.quote(python)} -m jobs.cli run {JOB_FILE}{sets}"


def local_path_warnings(config: JobConfig) -> list[str]:
    """Relative local paths: on the cluster they resolve inside the job's working directory."""
    out = []
    for key, value in (("input.path", config.input.path), ("model.path", config.model.path),
                       ("output.path", config.output.path)):
        looks_like_hub_id = key == "model.path" and value.count("/") == 1 and not value.startswith(".")
        if not is_s3(value) and not os.path.isabs(value) and not looks_like_hub_id:
            out.append(f"warning: {key} {value!r} is a relative local path; on the cluster it resolves inside the "
                       f"job's working directory (use s3:// or an absolute path that every node has)")
    return out


TOKEN_HINT = ("put the cluster's token in ~/.ray/auth_token, or set RAY_AUTH_TOKEN (the token) or "
              "RAY_AUTH_TOKEN_PATH (its file); `ray get-auth-token` on the head node prints it")


class ClusterError(RuntimeError):
    """The cluster cannot be reached or refused this client (a usage error: exit status 2)."""


def use_token_if_available() -> bool:
    """Turn Ray's token mode on for this process when RAY_AUTH_MODE is unset and a token exists."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return os.environ["RAY_AUTH_MODE"].lower() == "token"
    from ray._raylet import AuthenticationTokenLoader, Config

    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")  # Ray caches its config: refresh it so the client sends the token
    return True


def connect(address: str) -> Any:
    """A JobSubmissionClient for `address`, or ClusterError naming the address and the fix."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    token = use_token_if_available()
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as err:
        given = (err.message.strip().splitlines() or ["refused"])[0]
        why = given if token else "it has token authentication on and no token was found here"
        raise ClusterError(f"Ray at {address} refused this client ({why}); {TOKEN_HINT}") from None
    except ConnectionError as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise ClusterError(f"cannot reach the Ray Jobs API at {address} ({first}); check the address (the head's "
                           f"dashboard port, 8265 by default) and that the cluster is up") from None


def submit(job: str, address: str, overrides: Sequence[str] = (), python: str = "python",
           echo: Callable[[str], None] = print) -> tuple[Any, str]:
    """Validate, stage and submit; returns (client, submission id).

    Raises:
        ConfigError: the job (with overrides) does not validate; nothing is submitted.
        ClusterError: the cluster is unreachable or refuses this client (token authentication).
    """
    config = load_config(job, list(overrides))
    for line in local_path_warnings(config):
        echo(line)
    client = connect(address)
    with tempfile.TemporaryDirectory(prefix="orthrus-submit-") as tmp:
        staged = stage(job, Path(tmp))
        job_id = client.submit_job(entrypoint=entrypoint(overrides, python),
                                   runtime_env={"working_dir": str(staged)},
                                   metadata={"name": config.name, "job_file": os.path.basename(job)})
    return client, job_id


async def _tail(client: Any, job_id: str, echo: Callable[[str], None]) -> None:
    async for chunk in client.tail_job_logs(job_id):
        echo(chunk.rstrip("\n"))


def wait(client: Any, job_id: str, echo: Callable[[str], None] = print) -> Any:
    """Stream the job's logs until it ends; returns its final JobStatus.

    If the log stream breaks (a proxy that drops websockets), polls the status and prints the
    whole log once at the end instead.
    """
    try:
        asyncio.run(_tail(client, job_id, echo))
        streamed = True
    except Exception as err:  # noqa: BLE001 - any stream failure falls back to polling
        echo(f"(log stream unavailable: {type(err).__name__}: {err}; polling)")
        streamed = False
    while not (status := client.get_job_status(job_id)).is_terminal():
        time.sleep(_POLL_S)
    if not streamed:
        echo(client.get_job_logs(job_id).rstrip("\n"))
    return status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job YAML file (see README.md for the keys)")
    parser.add_argument("--address", required=True,
                        help="the cluster's dashboard / Jobs API address, e.g. http://HEAD:8265")
    parser.add_argument("--wait", action="store_true", help="stream the logs and exit with the job's outcome")
    parser.add_argument("--python", default="python",
                        help="Python on the cluster's PATH that has the dependencies (default: python)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job key (checked here, applied on the cluster)")


def command(args: argparse.Namespace) -> int:
    """The `submit` subcommand; returns the exit status."""
    try:
        client, job_id = submit(args.job, args.address, args.overrides, args.python)
    except USAGE_ERRORS + (ClusterError,) as err:
        return usage_error(err)
    print(f"submitted {job_id} to {args.address}", flush=True)
    if not args.wait:
        print(f"follow it with: ray job logs --follow --address {args.address} {job_id}")
        return 0
    status = wait(client, job_id, echo=lambda line: print(line, flush=True))
    info = client.get_job_info(job_id)
    print(f"job {job_id}: {status}", flush=True)
    if str(status) != "SUCCEEDED":
        print(f"orthrus-batch: job {job_id} {status}: {info.message}", file=sys.stderr)
        return FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("jobs.submit", __doc__, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
