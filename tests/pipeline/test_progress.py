"""Progress lines: exact text, and the last one printed once (issue 13: it was printed twice)."""
from __future__ import annotations

import pyarrow as pa

from pipeline import progress
from pipeline.stats import PARTIAL_SCHEMA, StatsAccumulator


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def partial(shard: str, rows: int, completion: int, iterations: int) -> pa.Table:
    row = {name: 0 for name in PARTIAL_SCHEMA.names}
    row.update(shard=shard, rows=rows, errors=1, completion_tokens=completion, iterations=iterations,
               forward_passes=2 * iterations, acceptance_histogram=[iterations], engine_seconds=1.0,
               started_at=0.0, finished_at=1.0, files=1, engine="{}")
    return pa.Table.from_pylist([row], schema=PARTIAL_SCHEMA)


def test_lines_are_exact_and_the_last_is_printed_once(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    acc = StatsAccumulator([("/in/a.parquet", 4), ("/in/b.parquet", 6)])
    lines: list[str] = []
    p = progress.Progress(acc, interval_s=10.0, echo=lines.append)
    clock.now += 4
    acc.add(partial("/in/a.parquet", 4, 30, 12))
    p.update()  # within the interval: nothing
    assert lines == []
    clock.now += 6
    p.update()
    assert lines == ["[10s] rows 4/10 (40.0%) | errors 1 | shards 1/2 | 3.0 tok/s | acceptance 2.50 tok/iter "
                     "| eta 15s"]
    clock.now += 65
    acc.add(partial("/in/b.parquet", 6, 1230, 400))
    p.update()  # the interval has passed: the 100% line
    p.update(force=True)  # the end of the job: same rows, not printed again
    assert lines[1:] == ["[1m15s] rows 10/10 (100.0%) | errors 2 | shards 2/2 | 16.8 tok/s | acceptance 3.06 tok/iter"]


def test_the_end_forces_a_line_when_the_last_one_is_stale(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    acc = StatsAccumulator([("/in/a.parquet", 4)])
    lines: list[str] = []
    p = progress.Progress(acc, interval_s=10.0, echo=lines.append)
    clock.now += 2
    acc.add(partial("/in/a.parquet", 4, 8, 8))
    p.update(force=True)
    p.update(force=True)
    assert lines == ["[2s] rows 4/4 (100.0%) | errors 1 | shards 1/1 | 4.0 tok/s | acceptance 1.00 tok/iter"]
