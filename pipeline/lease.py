"""One job owns its output folder while it runs: a lease file, `job.lock`, with a heartbeat.

Two jobs writing into one folder both used to finish, leaving every row twice in outputs/
(issue 13). Now the first job writes `<output.path>/job.lock` (who: host, pid, job name; when:
start and last heartbeat) and rewrites its heartbeat every HEARTBEAT_S seconds; a second job
that finds a live lease stops before Ray starts, naming the folder and the holder.

A job that crashed (SIGKILL, a lost machine) leaves its lease behind. It is stale when its
heartbeat is older than STALE_AFTER_S, or at once when it was taken on this host by a process
that no longer exists. A stale lease is taken over only by a run that says what to do with the
earlier results (output.resume=true or output.overwrite=true); otherwise the message says so.

Creating the file is atomic locally (a hard link to a complete temporary file fails when the
lock exists). S3 has no create-if-absent in pyarrow, so there a job writes its lease, waits
SETTLE_S and reads it back: of two jobs that start together the last writer keeps it and the
other is refused. The heartbeat also reads the lease back, so a job whose lease another took
stops at its next batch (Lease.check) instead of writing on.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from pipeline.storage import Location

LEASE_FILE = "job.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
SETTLE_S = 1.0  # S3 only: wait before reading a written lease back


class LeaseError(RuntimeError):
    """Raised by Lease.check when another job took this job's output folder."""


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The lease on one output folder. Use `acquire`, then `check` per batch, then `release`."""

    def __init__(self, folder: Location, job_name: str = "job", heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self.folder, self.target = folder, folder.child(LEASE_FILE)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.me = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "job": job_name,
                   "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading and writing the file ------------------------------------------------------------
    def _read(self) -> dict[str, Any] | None:
        fs = self.folder.filesystem
        try:
            with fs.open_input_stream(self.target.fs_path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except ValueError:  # half-written by a crash: as old as the file
            info = fs.get_file_info(self.target.fs_path)
            mtime = info.mtime.timestamp() if info.mtime else 0.0
            return {"owner": "?", "host": "?", "pid": -1, "job": "?", "started_at": "?", "heartbeat_at": mtime}

    def _payload(self) -> bytes:
        return json.dumps({**self.me, "heartbeat_at": time.time(), "heartbeat_s": self.heartbeat_s}).encode()

    def _write(self, exclusive: bool) -> bool:
        """Write our lease; with `exclusive`, only if none exists (atomic locally). False if one exists."""
        fs = self.folder.filesystem
        if self.folder.is_s3:
            with fs.open_output_stream(self.target.fs_path) as f:
                f.write(self._payload())
            return True
        fs.create_dir(self.folder.fs_path, recursive=True)
        tmp = f"{self.target.fs_path}.{self.me['owner'][:8]}.tmp"
        with open(tmp, "wb") as f:
            f.write(self._payload())
        try:
            if exclusive:
                os.link(tmp, self.target.fs_path)  # fails if the lock exists: the atomic create
            else:
                os.replace(tmp, self.target.fs_path)
        except FileExistsError:
            return False
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return True

    # -- the protocol ------------------------------------------------------------------------------
    def stale_reason(self, held: dict[str, Any]) -> str | None:
        """Why `held` is stale (its job is gone), or None while its job may still be running."""
        age = time.time() - float(held.get("heartbeat_at", 0.0))
        if held.get("host") == self.me["host"] and isinstance(held.get("pid"), int) and held["pid"] > 0 \
                and not _pid_alive(held["pid"]):
            return f"its process {held['pid']} on this host is gone"
        if age > self.stale_after_s:
            return f"no heartbeat for {_age(age)}"
        return None

    def _refuse(self, held: dict[str, Any]) -> RuntimeError:
        from pipeline.outputs import OutputError

        who = f"job {held.get('job')!r} (pid {held.get('pid')} on {held.get('host')}, started {held.get('started_at')})"
        age = _age(max(0.0, time.time() - float(held.get("heartbeat_at", 0.0))))
        return OutputError(f"output.path {self.folder.uri}: another job is writing there: {who}, last heartbeat "
                           f"{age} ago; wait for it to finish or choose another output.path (a lease with no "
                           f"heartbeat for {_age(self.stale_after_s)} is stale and output.resume=true takes it over)")

    def acquire(self, take_over: bool) -> str | None:
        """Own the folder or raise OutputError; returns a note when a stale lease was taken over.

        Args:
            take_over: the run says what to do with an earlier run's results (output.resume or
                output.overwrite), so a stale lease may be taken over.
        """
        from pipeline.outputs import OutputError

        note = None
        for _ in range(3):
            held = self._read()
            if held is None:
                if not self._write(exclusive=True):
                    continue  # another job created it between our read and our write: look again
            else:
                stale = self.stale_reason(held)
                if stale is None:
                    raise self._refuse(held)
                if not take_over:
                    raise OutputError(f"output.path {self.folder.uri}: a job that stopped without finishing left "
                                      f"its lease {LEASE_FILE} (job {held.get('job')!r}, pid {held.get('pid')} on "
                                      f"{held.get('host')}: {stale}); output.resume=true finishes that run, "
                                      f"output.overwrite=true starts over")
                self._write(exclusive=False)
                note = f"taking over the output folder from a job that stopped ({stale})"
            if self.folder.is_s3 or note:
                time.sleep(SETTLE_S if self.folder.is_s3 else 0.1)
                now = self._read()
                if now is None or now.get("owner") != self.me["owner"]:
                    raise self._refuse(now or held or {})
            self._start_heartbeat()
            return note
        raise self._refuse(self._read() or {})

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    held = self._read()
                    if held is None or held.get("owner") != self.me["owner"]:
                        self.lost = (f"output.path {self.folder.uri}: another job took this folder's lease "
                                     f"({LEASE_FILE}); stopping so that rows are not written twice")
                        return
                    self._write(exclusive=False)
                except OSError:
                    pass  # a store hiccup: the next beat tries again (stale only after STALE_AFTER_S)

        self._thread = threading.Thread(target=beat, name="orthrus-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise LeaseError if another job took the folder (called per batch by the driver)."""
        if self.lost:
            raise LeaseError(self.lost)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            held = self._read()
            if held is not None and held.get("owner") == self.me["owner"]:
                self.folder.filesystem.delete_file(self.target.fs_path)
        except OSError:
            pass  # best effort: a lease left behind goes stale
