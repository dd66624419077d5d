"""Ctrl-C: exit 130, the folder stays resumable, the resume command is printed, the local Ray the
job started is stopped, and Ray's own log lines stay out of the terminal (issue 13, items 5 and 6).

The job runs as a child process whose stderr is a pseudo-terminal (what a user's shell gives it),
and gets SIGINT on its whole process group, as a terminal's Ctrl-C does.
"""
from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cli_run import ROOT, keyed_shards, write_job
from jobs.cli import main
from pipeline.lease import LEASE_FILE


def session_pids(leader: int) -> list[int]:
    """Live (non-zombie) processes in the session the child leads: its Ray included."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == leader and fields[0] != "Z":
            out.append(int(d))
    return out


@pytest.mark.timeout(240)
def test_ctrl_c_exits_130_resumable_with_the_command_and_no_ray_noise(ray_session, tiny_model, write_shards,
                                                                      tmp_path, capsys):
    keys, inputs = keyed_shards(write_shards, 6)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", tiny_model, str(inputs), str(out), sampling={"max_new_tokens": 32})
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(HOME=str(tmp_path / "home"), ORTHRUS_BATCH_LOG_DIR=str(tmp_path / "logs"))  # token auth on, as for a user
    master, slave = pty.openpty()
    stdout = tmp_path / "stdout.txt"
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", str(job), "--set", "sampling.seed=3"], cwd=ROOT,
                            env=env, stdout=open(stdout, "wb"), stderr=slave, start_new_session=True)
    os.close(slave)
    terminal = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            terminal.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not ((out / "done").is_dir() and any((out / "done").iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, stdout.read_text()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=90) == 130, stdout.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.5)
    text = bytes(terminal).decode().replace("\r\n", "\n")
    assert text == (f"orthrus-batch: interrupted; the output folder {out} keeps every finished shard. Finish the "
                    f"job with:\n  orthrus-batch run {job} --set sampling.seed=3 --set output.resume=true\n")
    printed = stdout.read_text()
    log = Path(printed.split("  ray logs   ", 1)[1].split("\n", 1)[0])
    assert log.parent == tmp_path / "logs"
    logged = log.read_text()
    assert "Token authentication is enabled" in logged and "Started a local Ray instance" in logged
    assert not (out / LEASE_FILE).exists() and not (out / "summary.json").exists()
    deadline = time.monotonic() + 15
    while session_pids(proc.pid) and time.monotonic() < deadline:  # the local Ray it started is stopped with it
        time.sleep(0.5)
    assert session_pids(proc.pid) == []

    capsys.readouterr()
    assert main(["run", str(job), "--set", "sampling.seed=3", "--set", "output.resume=true"]) == 0
    ids = pq.read_table(out / "outputs", columns=["id", "error"]).to_pandas()
    assert sorted(ids["id"]) == sorted(keys) and ids["error"].isna().all()  # every row exactly once
