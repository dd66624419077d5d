"""The Ray Data side of orthrus-batch: job config, input shards, the Dataset, outputs and stats.

Imported as `pipeline` (not the unrelated PyPI package of that name): install this project
(`pip install -e .`) or run from its root. The driver-side code here never imports torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import JobConfig


def run_job(config: "JobConfig | dict[str, Any] | str", **kwargs: Any) -> dict[str, Any]:
    """Run one generation job; see `pipeline.job.run_job` (imported lazily so that
    `import pipeline` stays cheap and never starts Ray)."""
    from pipeline.job import run_job as _run_job

    return _run_job(config, **kwargs)


__all__ = ["run_job"]
