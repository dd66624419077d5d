"""Partial stats per batch and shard, their fold in the driver, and the commit of output files."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.outputs import OutputError, commit_batch, prepare_output, shard_prefix
from pipeline.stats import StatsAccumulator
from workers.schema import BATCH_SCHEMA, OUTPUT_SCHEMA

ENGINE = json.dumps({"device": "cpu", "pid": 1})


def row(shard, rh, error=None, prompt=4, completion=5, iterations=3, hist=(1, 2), engine_s=0.5, t0=10.0, t1=12.0,
        loops=0):
    ok = error is None
    return {"id": f"{shard}:{rh}", "shard": shard, "prompt": "p", "completion": "c" if ok else None,
            "num_prompt_tokens": prompt if ok else None, "num_completion_tokens": completion if ok else None,
            "finish_reason": "length" if ok else None, "error": error,
            "iterations": iterations if ok else None, "diffusion_passes": iterations if ok else None,
            "forward_passes": 2 * iterations if ok else None, "drafted_tokens": 7 * iterations if ok else None,
            "accepted_tokens": completion - iterations if ok else None,
            "mean_acceptance_length": completion / iterations if ok else None,
            "acceptance_histogram": list(hist) if ok else None, "engine_seconds": engine_s if ok else None,
            "loops": loops if ok else None, "_row_hash": rh, "_engine": ENGINE, "_started_at": t0, "_finished_at": t1}


def test_partials_fold_into_shard_figures(tmp_path):
    b1 = pa.Table.from_pylist([row("A", 1), row("A", 2, error="prompt is null"), row("B", 3, hist=(0, 0, 1),
                                                                                   completion=3, iterations=1, loops=1)],
                              schema=BATCH_SCHEMA)
    b2 = pa.Table.from_pylist([row("A", 4, t0=20.0, t1=25.0, engine_s=1.5)], schema=BATCH_SCHEMA)
    acc = StatsAccumulator([("A", 3), ("B", 1), ("C", 0)])
    acc.add(commit_batch(b1, str(tmp_path)))
    assert acc.shards_done == 2  # B and the empty C
    acc.add(commit_batch(b2, str(tmp_path)))
    figs = {r["shard"]: r for r in acc.table().to_pylist()}
    assert figs["A"] == {
        "shard": "A", "input_rows": 3, "rows": 3, "errors": 1, "prompt_tokens": 8, "completion_tokens": 10,
        "iterations": 6, "diffusion_passes": 6, "forward_passes": 12, "drafted_tokens": 42, "accepted_tokens": 4,
        "tokens_per_forward": 10 / 12, "mean_acceptance_length": 10 / 6, "acceptance_histogram": [2, 4],
        "wall_seconds": 15.0, "engine_seconds": 2.0, "tokens_per_s": 5.0, "output_files": 2, "loops": 0}
    assert figs["B"]["acceptance_histogram"] == [0, 0, 1] and figs["B"]["mean_acceptance_length"] == 3.0
    assert figs["B"]["loops"] == 1
    assert figs["C"]["rows"] == 0 and figs["C"]["tokens_per_s"] == 0.0 and figs["C"]["wall_seconds"] == 0.0
    totals = acc.totals(job_seconds=5.0)
    assert (totals["rows"], totals["errors"], totals["completion_tokens"], totals["shards_complete"]) == (4, 1, 13, 3)
    assert totals["loops"] == 1
    assert totals["tokens_per_s"] == 13 / 5.0 and totals["acceptance_histogram"] == [2, 4, 1]
    assert acc.engine_facts() == [{"device": "cpu"}] and acc.actors == 1
    with pytest.raises(RuntimeError, match="rows arrived for shard 'Z', which is not an input shard"):
        acc.add(commit_batch(pa.Table.from_pylist([row("Z", 9)], schema=BATCH_SCHEMA), str(tmp_path)))


def test_commit_writes_one_file_per_shard_named_by_its_rows(tmp_path):
    b = pa.Table.from_pylist([row("/in/a.parquet", 1), row("/in/b.parquet", 2), row("/in/a.parquet", 3)],
                             schema=BATCH_SCHEMA)
    commit_batch(b, str(tmp_path))
    commit_batch(b, str(tmp_path))  # a retried task rewrites the same files
    files = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert len(files) == 2 and files[0].startswith(shard_prefix("/in/a.parquet") + "-")
    assert shard_prefix("/in/a.parquet").startswith("a-")
    table = pq.read_table(tmp_path / "outputs" / files[0])
    assert table.schema == OUTPUT_SCHEMA and table.column("id").to_pylist() == ["/in/a.parquet:1", "/in/a.parquet:3"]


def test_prepare_output_refuses_or_clears_earlier_results(tmp_path):
    prepare_output(str(tmp_path), overwrite=False)
    (tmp_path / "outputs" / "old.parquet").write_bytes(b"x")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(OutputError) as err:
        prepare_output(str(tmp_path), overwrite=False)
    assert str(err.value) == (f"output.path {tmp_path}: outputs/ already holds 1 files from an earlier run; "
                              f"set output.overwrite=true or choose another path (output.resume=true finishes "
                              f"that run)")
    prepare_output(str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done", "keep.txt", "outputs", "stats"]
    assert list((tmp_path / "outputs").iterdir()) == []
