"""Run `orthrus-batch run` in a child process (its own Ray, its own environment) for fault tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[2]


def write_job(path: Path, tiny_model: Path, inputs: str, out: str, **sections) -> Path:
    """A job YAML on the tiny model with its own local Ray; `sections` update the defaults."""
    cfg = {"name": "fault", "input": {"path": inputs, "prompt_column": "prompt", "id_column": "key"},
           "model": {"path": str(tiny_model)}, "sampling": {"max_new_tokens": 4},
           "prompt": {"chat_template": False}, "resources": {"batch_size": 2, "num_workers": 1},
           "output": {"path": out}, "ray_address": "local", "progress_interval_s": 0.5}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(cfg))
    return path


def keyed_shards(write_shards: Callable[..., Path], shards: int, rows: int = 4) -> tuple[list[str], Path]:
    """`shards` input files s0.parquet... of `rows` rows each, keyed `s<shard>-<row>` with prompts `p <key>`;
    returns (every key, the input folder)."""
    keys = [f"s{s}-{i}" for s in range(shards) for i in range(rows)]
    part = lambda s: keys[rows * s:rows * (s + 1)]  # noqa: E731
    inputs = write_shards({f"s{s}.parquet": {"key": part(s), "prompt": [f"p {k}" for k in part(s)]}
                           for s in range(shards)})
    return keys, inputs


def start(job: Path, *overrides: str, env: dict[str, str] | None = None, log: Path) -> subprocess.Popen:
    """Start the CLI in a new process group (so a test can SIGKILL the driver and its Ray at once)."""
    args = [sys.executable, "-m", "jobs.cli", "run", str(job)]
    for item in overrides:
        args += ["--set", item]
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_until(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the job ended ({proc.returncode}) before the condition held")
        time.sleep(0.1)
    kill(proc)
    raise AssertionError(f"condition not met within {timeout} s")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the job's process group (the driver and the Ray processes it started), as a crash would."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        kill(proc)  # the job's leftover Ray processes, if any
