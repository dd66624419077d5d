"""`orthrus-batch submit` against a real Ray head that this module starts (`ray start --head --block`).

The head is a cluster of its own: its own ports and its own --temp-dir (so it never becomes the
"latest cluster" that a plain `ray.init()` elsewhere on this machine would join), separate from
the session-wide `ray_session`. The client side needs no `ray.init`: JobSubmissionClient speaks
HTTP to the dashboard. Teardown ends exactly the processes this module started (the `ray start`
process, its descendants and its session), never `ray stop`, which would stop every Ray here.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from jobs.cli import main
from jobs.submit import JOB_FILE, entrypoint, stage

ROOT = Path(__file__).resolve().parents[2]

BIN = Path(sys.executable).parent
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
              "--node-manager-port", "--object-manager-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state, ppid, pgrp, session, ...), or None once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) from /proc, or None once the process is gone."""
    fields = _fields(pid)
    return None if fields is None else (int(fields[1]), int(fields[3]))


def _ours(root: int) -> list[int]:
    """The `ray start` process, its descendants, and anything else in the session it leads."""
    stats = {int(d): st for d in os.listdir("/proc") if d.isdigit() and (st := _stat(int(d)))}
    mine = {root} | {pid for pid, (_, sid) in stats.items() if sid == root}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return sorted(mine)


def _stop(pids: list[int], timeout: float) -> list[int]:
    """Wait for `pids` to exit; returns those still running (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        # one read per pid: a process that exits between two reads is gone, not an error (CI saw it)
        alive = [p for p in pids if (f := _fields(p)) is not None and "Z" not in f[0]]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def start_head(env_extra: dict[str, str]):
    """A throwaway `ray start --head --block` on free ports; yields its dashboard address."""
    temp = tempfile.mkdtemp(prefix="orbh", dir="/tmp")  # short: Ray's socket paths live under it
    ports = {flag: free_port() for flag in PORT_FLAGS}
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **env_extra}
    env.pop("RAY_ADDRESS", None)
    log_path = Path(temp) / "ray-start.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--temp-dir={temp}", *(f"{k}={v}" for k, v in ports.items())],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # up, and refusing us without a token: that is an answer
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray head did not come up:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield address
    finally:
        # A throwaway head: SIGTERM all of it at once, SIGKILL what is left after a short grace.
        pids = _ours(proc.pid)
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for pid in _stop(pids, timeout=0):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if not _stop(pids, timeout=grace):
                break
        proc.wait(timeout=5)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head():
    yield from start_head({"RAY_AUTH_MODE": "disabled"})


TOKEN = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def token_head():
    """A head as `ray start --head` gives it by default: token authentication on."""
    yield from start_head({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN})


def write_job(path: Path, inputs: Path, model: Path, out: Path, extra: str = "") -> str:
    path.write_text(f"name: sub\ninput: {{path: {inputs}, prompt_column: prompt}}\nmodel: {{path: {model}}}\n"
                    f"output: {{path: {out}}}\nsampling: {{max_new_tokens: 4}}\nresources: {{batch_size: 4}}\n"
                    f"progress_interval_s: 1\n{extra}")
    return str(path)


def test_stage_ships_the_packages_and_the_job(tmp_path):
    job = tmp_path / "my-job.yaml"
    job.write_text("name: x\n")
    staged = stage(job, tmp_path / "stage")
    assert sorted(p.name for p in staged.iterdir()) == sorted(["pipeline", "workers", "jobs", JOB_FILE])
    assert (staged / "jobs" / "cli.py").is_file() and (staged / JOB_FILE).read_text() == "name: x\n"
    assert not list(staged.rglob("__pycache__"))
    assert entrypoint(["engine.mode=ar", "x.y=a b"]) == "python -m jobs.cli run job.yaml --set engine.mode=ar " \
                                                         "--set 'x.y=a b'"


@pytest.mark.timeout(150)
def test_submit_runs_on_the_cluster_and_reports_the_outcome(ray_head, tiny_model, write_shards, tmp_path, capsys):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    inputs = write_shards({"a.parquet": {"prompt": ["x", "y", "z"]}})
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", inputs, tiny_model, out)

    # An invalid job is refused here, before anything reaches the cluster.
    before = len(client.list_jobs())
    assert main(["submit", job, "--address", ray_head, "--set", "engine.mode=fast"]) == 2
    assert "engine.mode: Input should be 'orthrus' or 'ar' (got 'fast')" in capsys.readouterr().err
    assert len(client.list_jobs()) == before

    # A good job: logs streamed, SUCCEEDED, outputs written by the cluster.
    t0 = time.monotonic()
    assert main(["submit", job, "--address", ray_head, "--wait", "--set", "sampling.max_new_tokens=2"]) == 0
    printed = capsys.readouterr().out
    job_id = printed.split("submitted ", 1)[1].split()[0]
    assert job_id.startswith("raysubmit_")
    assert f"job 'sub': 1 shard(s), 3 rows -> {out}" in printed  # the job's own log lines, streamed
    assert "job 'sub' done in " in printed and f"job {job_id}: SUCCEEDED" in printed
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED
    info = client.get_job_info(job_id)
    assert info.entrypoint == "python -m jobs.cli run job.yaml --set sampling.max_new_tokens=2"
    assert info.runtime_env["working_dir"].startswith("gcs://")
    assert "rows 3/3 (100.0%)" in client.get_job_logs(job_id)
    df = pd.read_parquet(out / "outputs")
    assert len(df) == 3 and (df["num_completion_tokens"] == 2).all() and df["error"].isna().all()
    print(f"submit: good job took {time.monotonic() - t0:.1f}s", file=sys.stderr)

    # A job that fails on the cluster (its input is not there): FAILED, exit 1, Ray's message.
    broken = write_job(tmp_path / "broken.yaml", tmp_path / "nowhere", tiny_model, tmp_path / "out2")
    assert main(["submit", broken, "--address", ray_head, "--wait"]) == 1
    captured = capsys.readouterr()
    failed_id = captured.out.split("submitted ", 1)[1].split()[0]
    assert f"job {failed_id}: FAILED" in captured.out
    assert f"orthrus-batch: job {failed_id} FAILED: Job entrypoint command failed with exit code 2" in captured.err
    assert f"input.path '{tmp_path / 'nowhere'}': no Parquet files match" in captured.err
    assert client.get_job_status(failed_id) == JobStatus.FAILED


def test_unreachable_address_is_a_usage_error(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("input: {path: s3://b/in, prompt_column: p}\nmodel: {path: org/m}\noutput: {path: s3://b/out}\n")
    address = f"http://127.0.0.1:{free_port()}"
    assert main(["submit", str(job), "--address", address]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"orthrus-batch: error: cannot reach the Ray Jobs API at {address} (")
    assert err.endswith("); check the address (the head's dashboard port, 8265 by default) and that the cluster "
                        "is up\n") and err.count("\n") == 1


def submit_cli(args: list[str], env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    """`orthrus-batch submit` as a user's shell runs it: RAY_AUTH_MODE unset, their own HOME."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    full.update(HOME=str(home), **env)
    return subprocess.run([sys.executable, "-m", "jobs.cli", "submit", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=150)


@pytest.mark.timeout(200)
def test_submit_finds_the_token_of_a_cluster_with_token_auth(token_head, tiny_model, write_shards, tmp_path):
    """Issue 13: with the token in ~/.ray/auth_token but RAY_AUTH_MODE unset, submit failed with a raw
    AuthenticationError. Now it uses the token; without one (or a wrong one) it is one line, exit 2."""
    inputs = write_shards({"a.parquet": {"prompt": ["x", "y", "z"]}})
    job = write_job(tmp_path / "job.yaml", inputs, tiny_model, tmp_path / "out", extra="ray_address: null\n")
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    refused = (f"orthrus-batch: error: Ray at {token_head} refused this client (it has token authentication on and "
               f"no token was found here); put the cluster's token in ~/.ray/auth_token, or set RAY_AUTH_TOKEN (the "
               f"token) or RAY_AUTH_TOKEN_PATH (its file); `ray get-auth-token` on the head node prints it\n")
    done = submit_cli([job, "--address", token_head], {}, home)
    assert (done.returncode, done.stderr) == (2, refused)
    done = submit_cli([job, "--address", token_head], {"RAY_AUTH_TOKEN": "f" * 64}, home)
    assert (done.returncode, done.stderr) == (2, refused.replace(
        "it has token authentication on and no token was found here",
        "Authentication failed: Forbidden: Invalid authentication token"))

    (home / ".ray" / "auth_token").write_text(TOKEN)
    done = submit_cli([job, "--address", token_head, "--wait", "--set", "sampling.max_new_tokens=2"], {}, home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCEEDED" in done.stdout and len(pd.read_parquet(tmp_path / "out" / "outputs")) == 3
