"""Progress lines and the printed summary: exact text, and the last line printed once (issue 13: it
was printed twice); K, the KV pool and GPU memory from the batches' `_batch` facts (issue 15)."""
from __future__ import annotations

import json

import pyarrow as pa

from pipeline import progress
from pipeline.engine_state import EngineState
from pipeline.stats import PARTIAL_SCHEMA, StatsAccumulator
from pipeline.summary import RunSummary


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def partial(shard: str, rows: int, completion: int, iterations: int, engine: str = "{}", batch: str = "{}",
            finished_at: float = 1.0, **sums: int) -> pa.Table:
    row = {name: 0 for name in PARTIAL_SCHEMA.names}
    row.update(shard=shard, rows=rows, errors=1, completion_tokens=completion, iterations=iterations,
               forward_passes=2 * iterations, acceptance_histogram=[iterations], engine_seconds=1.0,
               started_at=0.0, finished_at=finished_at, files=1, engine=engine, batch=batch, **sums)
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
                     "| K 1 (AR 100%) | eta 15s"]
    clock.now += 65
    acc.add(partial("/in/b.parquet", 6, 1230, 400))
    p.update()  # the interval has passed: the 100% line
    p.update(force=True)  # the end of the job: same rows, not printed again
    assert lines[1:] == ["[1m15s] rows 10/10 (100.0%) | errors 2 | shards 2/2 | 16.8 tok/s | acceptance 3.06 tok/iter "
                         "| K 1 (AR 100%)"]


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
    assert lines == ["[2s] rows 4/4 (100.0%) | errors 1 | shards 1/1 | 4.0 tok/s | acceptance 1.00 tok/iter "
                     "| K 1 (AR 100%)"]


GIB = 2**30


def facts(used: int, pages: int, allocated_gib: float, choice: str) -> str:
    return json.dumps({"running": 3, "waiting": 1, "kv_pages_used": used, "kv_pages": pages, "kv_tokens": 16 * pages,
                       "k_choice": choice, "gpu_memory_allocated": int(allocated_gib * GIB),
                       "gpu_memory_total": 140 * GIB})


def test_lines_show_k_the_kv_pool_and_gpu_memory_of_each_actors_latest_batch(monkeypatch):
    """Two actors: each one's latest batch counts (an older batch of actor A is superseded); K and
    the AR share come from the sums (30 iterations, 20 of them Orthrus drafting 3 tokens each)."""
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    acc = StatsAccumulator([("/in/a.parquet", 8), ("/in/b.parquet", 8)])
    lines: list[str] = []
    p = progress.Progress(acc, interval_s=10.0, echo=lines.append)
    a, b = json.dumps({"pid": 1}), json.dumps({"pid": 2})
    acc.add(partial("/in/a.parquet", 4, 40, 10, engine=a, batch=facts(100, 1000, 30.0, "K=8: old"), finished_at=5.0,
                    diffusion_passes=10, drafted_tokens=30))
    acc.add(partial("/in/a.parquet", 4, 40, 10, engine=a, batch=facts(500, 1000, 40.0, "K=4: newer"), finished_at=9.0,
                    diffusion_passes=10, drafted_tokens=30))
    acc.add(partial("/in/b.parquet", 4, 20, 10, engine=b, batch=facts(250, 1000, 20.5, "K=1: AR wins"),
                    finished_at=7.0))
    clock.now += 10
    p.update()
    p.update(force=True)  # same rows: nothing new, and the K choice is not repeated
    assert lines == [
        "  K choice: K=4: newer",
        "[10s] rows 12/16 (75.0%) | errors 3 | shards 1/2 | 10.0 tok/s | acceptance 3.33 tok/iter | K 4.00 (AR 33%) "
        "| kv 38% of 2,000 pages | gpu 60.5/280.0 GiB | eta 3s",
    ]
    state = acc.engine_state()
    assert state == EngineState(actors=2, running=6, waiting=2, kv_pages_used=750, kv_pages=2000, kv_tokens=32000,
                                gpu_memory_allocated=int(60.5 * GIB), gpu_memory_total=280 * GIB, k_choice="K=4: newer")
    assert state.to_json()["kv_occupancy"] == 0.375


def summary(totals: dict, engine_state: dict) -> RunSummary:
    return RunSummary(
        name="demo", started_at="t0", finished_at="t1", config={}, versions={}, model={"path": "m", "dtype": "auto"},
        mode="orthrus", device_types=["cuda"], engines=[{"device": "cuda", "device_name": "H200"}], actors=1,
        resources={}, totals=totals, this_run=totals, skipped_files=[], resumed={"shards": 0, "rows": 0},
        paths={"outputs": "o/outputs", "shard_stats": "o/stats/shards.parquet", "summary": "o/summary.json"},
        engine_state=engine_state)


def test_the_summary_shows_k_and_memory_and_reads_back(tmp_path):
    acc = StatsAccumulator([("/in/a.parquet", 4)])
    acc.add(partial("/in/a.parquet", 4, 40, 10, batch=facts(500, 1000, 40.0, "K=4: cheapest"),
                    diffusion_passes=8, drafted_tokens=24))
    totals = acc.totals(job_seconds=10.0)
    assert (totals["mean_block_size"], totals["ar_share"]) == (4.0, 0.2)
    s = summary(totals, acc.engine_state().to_json())
    text = progress.format_summary(s)
    assert ("  block size K 4.00 (AR 20%); last choice: K=4: cheapest\n"
            "  memory     kv 50% of 1,000 pages, gpu 40.0/140.0 GiB as each actor's last batch ended\n") in text
    from pipeline.storage import locate

    loc = locate(str(tmp_path))
    s.write(loc)
    again = RunSummary.read(loc)
    assert again == s and json.loads((tmp_path / "summary.json").read_text())["engine_state"]["kv_pages_used"] == 500
    cpu = progress.format_summary(summary(totals, {}))
    assert "  memory" not in cpu and "  block size K 4.00 (AR 20%)\n" in cpu
