"""RunSummary: what a run did, as one typed value that writes and reads `summary.json`.

`run_job` builds it when the run ends (pipeline/job.py), prints `format_summary` of it and returns
its JSON form; compare (jobs/compare.py) and a resumed run read an earlier one back. The JSON keys
are the field names below; `totals` and `this_run` are StatsAccumulator.totals / this_run (their
figures are defined in pipeline/stats.py), `engine_state` is pipeline/engine_state.EngineState.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipeline.outputs import SUMMARY_FILE, write_json
from pipeline.storage import Location


@dataclass
class RunSummary:
    name: str  # the job's name
    started_at: str  # ISO time (UTC) the run started
    finished_at: str
    config: dict[str, Any]  # the job config, as validated (defaults filled in)
    versions: dict[str, str | None]  # installed package versions
    model: dict[str, Any]  # path, dtype
    mode: str  # orthrus | ar
    device_types: list[str]  # cpu, cuda
    engines: list[dict[str, Any]]  # distinct `_engine` facts (device, model_dir, pass costs, ...), pid dropped
    actors: int  # distinct `_engine` values seen: one per actor process
    resources: dict[str, Any]  # num_workers, gpus_per_worker, cpus_per_worker, cluster_gpus
    totals: dict[str, Any]  # every shard's figures, earlier runs' included (output.resume)
    this_run: dict[str, Any]  # this run's rows only
    skipped_files: list[dict[str, str]]  # {file, reason} per bad input file skipped
    resumed: dict[str, int]  # shards and rows an earlier run completed
    paths: dict[str, str]  # outputs, shard_stats, summary
    engine_state: dict[str, Any] = field(default_factory=dict)  # the engines as their latest batches ended

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "RunSummary":
        """From summary.json; keys this version does not know are ignored, ones it adds get defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def write(self, loc: Location) -> str:
        """summary.json under the output folder `loc`; returns its URI."""
        target = loc.child(SUMMARY_FILE)
        write_json(target, self.to_json())
        return target.uri

    @classmethod
    def read(cls, loc: Location) -> "RunSummary | None":
        """The summary.json under `loc`, or None (no run finished there, or the file was cut short)."""
        target = loc.child(SUMMARY_FILE)
        try:
            with target.filesystem.open_input_stream(target.fs_path) as f:
                return cls.from_json(json.loads(f.read()))
        except (FileNotFoundError, ValueError, TypeError):
            return None
