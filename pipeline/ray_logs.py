"""Keep Ray's own log lines out of the user's terminal: they go to a log file whose path we print.

A healthy job used to print Ray's token-auth WARNING, INFO lines about the local instance and the
Dataset plan, and an `E ... core_worker.cc ... constructor arguments in the object store and
max_restarts > 0` line (Ray Data always puts its actor's constructor in the object store): noise
that makes a good run look broken (issue 13). Ray writes some of it from C++ straight to file
descriptor 2, so the CLI points fd 2 at the log file for the run and writes its own lines (progress
on stdout, errors and hints on the terminal's stderr) itself. Errors about the job still reach the
terminal: the CLI prints one line per failure, with the log file for the details.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

LOG_DIR_ENV = "ORTHRUS_BATCH_LOG_DIR"


def log_path(job_name: str) -> Path:
    """A fresh log file: $ORTHRUS_BATCH_LOG_DIR, else <tmp>/orthrus-batch/, named by job, time and pid."""
    folder = Path(os.environ.get(LOG_DIR_ENV) or Path(tempfile.gettempdir()) / "orthrus-batch")
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_name) or "job"
    return folder / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def _redirectable() -> bool:
    """Only a real process stderr is redirected (not one that a test harness has replaced)."""
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def ray_output_to(path: Path) -> Iterator[TextIO]:
    """While inside: fd 2 (Python's sys.stderr included) appends to `path`.

    Yields the stream for our own error lines: the original stderr (a dup of it), or sys.stderr
    unchanged when it is not fd 2 (then nothing is redirected).
    """
    if not _redirectable():
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    os.close(log)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield terminal
    finally:
        sys.stderr.flush()
        terminal.flush()
        os.dup2(saved, 2)
        os.close(saved)
        terminal.close()
