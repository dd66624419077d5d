"""Resume after the driver is killed: every input row exactly once, completed shards not redone.

The unit of resume is the shard (pipeline/outputs.py): done/<shard>.json marks a complete shard;
a rerun with output.resume=true keeps those and reruns the rest after deleting their files.
"""
from __future__ import annotations

import json
import warnings

import pyarrow.parquet as pq
import pytest

from cli_run import finish, keyed_shards, kill, start, wait_until, write_job
from pipeline.config import build_config, resume_key
from pipeline.outputs import OutputError, drop_partial, load_done, mark_done, prepare_output, shard_prefix
from pipeline.stats import ShardStats


def test_resume_keeps_done_shards_and_deletes_partial_files(tmp_path):
    loc = prepare_output(str(tmp_path), overwrite=False, job={"model": "m"})
    outputs = tmp_path / "outputs"
    a, b = "/in/a.parquet", "/in/b.parquet"
    for name in (f"{shard_prefix(a)}-{'1' * 16}.parquet", f"{shard_prefix(b)}-{'2' * 16}.parquet",
                 f".{shard_prefix(b)}-{'3' * 16}.parquet.0badf00d.tmp"):
        (outputs / name).write_bytes(b"x")
    mark_done(loc, ShardStats(a, input_rows=2, rows=2, completion_tokens=7))
    mark_done(loc, ShardStats(b, input_rows=5, rows=5))  # the input has changed since: not kept
    (tmp_path / "done" / "c-cut-short.json").write_text('{"shard": "/in/c.parquet", "input_rows"')  # Ctrl-C mid-write
    done = load_done(loc, {a: 2, b: 4, "/in/c.parquet": 3})
    assert list(done) == [a] and done[a].completion_tokens == 7
    assert drop_partial(loc, set(done)) == 2
    assert [p.name for p in outputs.iterdir()] == [f"{shard_prefix(a)}-{'1' * 16}.parquet"]


def test_resume_refuses_a_different_job(tmp_path):
    base = {"input": {"path": "in", "prompt_column": "p"}, "model": {"path": "m"}, "output": {"path": "o"}}
    first = build_config(base)
    prepare_output(str(tmp_path), overwrite=False, job=resume_key(first))
    (tmp_path / "outputs" / "x.parquet").write_bytes(b"x")
    moved = build_config({**base, "resources": {"num_workers": 3}, "output": {"path": "o", "resume": True}})
    prepare_output(str(tmp_path), overwrite=False, resume=True, job=resume_key(moved))  # same rows: fine
    other = build_config({**base, "sampling": {"max_new_tokens": 9}, "engine": {"mode": "ar"}})
    with pytest.raises(OutputError) as err:
        prepare_output(str(tmp_path), overwrite=False, resume=True, job=resume_key(other))
    assert str(err.value) == (f"output.path {tmp_path}: output.resume continues the same job, but engine.mode "
                              f"('orthrus' then, 'ar' now); sampling.max_new_tokens (256 then, 9 now) differ from "
                              f"the earlier run's job.json; set output.overwrite=true or choose another path")


def test_a_local_output_path_that_is_a_file_is_named_without_an_aws_hint(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    for path, where in ((tmp_path / "results", "is a file"),
                        (tmp_path / "results" / "run1", f"is inside {tmp_path}/results, which is a file")):
        with pytest.raises(OutputError) as err:
            prepare_output(str(path), overwrite=False)
        assert str(err.value) == f"output.path {path} {where}, not a folder; choose a folder for the job's results"


@pytest.mark.timeout(150)
def test_driver_killed_mid_run_then_resumed(tiny_model, write_shards, tmp_path):
    keys, inputs = keyed_shards(write_shards, 6)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", tiny_model, str(inputs), str(out), sampling={"max_new_tokens": 32})
    proc = start(job, log=tmp_path / "run1.txt")
    wait_until(proc, lambda: (out / "done").is_dir() and any((out / "done").iterdir()), timeout=90)
    kill(proc)
    done = sorted(p.stem for p in (out / "done").iterdir())
    assert 1 <= len(done) < 6, "the kill should land mid-run"
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "outputs").iterdir()
            if any(p.name.startswith(d + "-") for d in done)}
    assert kept and not (out / "summary.json").exists()

    # A rerun without resume is refused; with it, the job finishes the rest.
    proc = start(job, log=tmp_path / "refused.txt")
    assert finish(proc, 60) == 2
    assert "output.resume=true finishes that run" in (tmp_path / "refused.txt").read_text()
    proc = start(job, "output.resume=true", log=tmp_path / "run2.txt")
    assert finish(proc, 120) == 0, (tmp_path / "run2.txt").read_text()

    ids = pq.read_table(out / "outputs", columns=["id", "error"]).to_pandas()
    assert sorted(ids["id"]) == sorted(keys) and ids["error"].isna().all()  # each row exactly once
    now = {p.name: p.stat().st_mtime_ns for p in (out / "outputs").iterdir()}
    assert {name: now.get(name) for name in kept} == kept  # completed shards: same files, untouched
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] == {"shards": len(done), "rows": 4 * len(done)}
    assert summary["this_run"]["rows"] == 24 - 4 * len(done)  # only the rest ran
    assert summary["totals"]["rows"] == 24 and summary["totals"]["shards_complete"] == 6
    stats = pq.read_table(out / "stats" / "shards.parquet").to_pandas()
    assert stats["rows"].tolist() == [4] * 6 and stats["completion_tokens"].gt(0).all()
    assert "resumed    " in (tmp_path / "run2.txt").read_text()


@pytest.mark.timeout(60)
def test_ray_data_checkpointing_does_not_apply_to_this_pipeline(ray_session, write_shards, tmp_path):
    """Why resume is ours: Ray Data's checkpointing (DataContext.checkpoint_config) only covers a
    Dataset that ends in a write_* sink; ours ends in the driver's iter_batches, and Ray disables it."""
    import ray.data
    from ray.data.checkpoint import CheckpointConfig

    inputs = write_shards({"a.parquet": {"key": ["a", "b"], "prompt": ["x", "y"]}})
    ctx = ray.data.DataContext.get_current()
    ctx.checkpoint_config = CheckpointConfig(id_column="key", checkpoint_path=str(tmp_path / "ckpt"))
    try:
        ds = ray.data.read_parquet(str(inputs)).map_batches(lambda b: b, batch_format="pyarrow")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            rows = [r for batch in ds.iter_batches(batch_format="pyarrow") for r in batch.to_pylist()]
    finally:
        ctx.checkpoint_config = None
    assert sorted(r["key"] for r in rows) == ["a", "b"]
    assert any("the logical plan doesn't support checkpointing. Checkpointing will be disabled." in str(w.message)
               for w in seen)


@pytest.mark.timeout(120)
def test_resuming_a_complete_run_keeps_its_totals(ray_session, tiny_model, write_shards, tmp_path):
    """Issue 13: a resume with nothing left to do rewrote summary.json with 0 rows."""
    from pipeline import run_job

    inputs = write_shards({"a.parquet": {"prompt": ["x", "y", "z"]}, "b.parquet": {"prompt": ["w"]}})
    cfg = {"name": "r", "input": {"path": str(inputs), "prompt_column": "prompt"}, "model": {"path": str(tiny_model)},
           "sampling": {"max_new_tokens": 3}, "prompt": {"chat_template": False},
           "resources": {"batch_size": 2, "num_workers": 1}, "output": {"path": str(tmp_path / "out")}}
    first = run_job(cfg, echo=lambda _: None)["totals"]
    assert (first["rows"], first["completion_tokens"], first["shards_complete"]) == (4, 12, 2)
    lines: list[str] = []
    again = run_job({**cfg, "output": {"path": str(tmp_path / "out"), "resume": True}}, echo=lines.append)
    same = ("rows", "errors", "prompt_tokens", "completion_tokens", "iterations", "forward_passes", "accepted_tokens",
            "acceptance_histogram", "engine_seconds", "shards", "shards_complete", "output_files")
    assert {k: again["totals"][k] for k in same} == {k: first[k] for k in same}
    assert again["totals"]["job_seconds"] > first["job_seconds"]  # the earlier run's time, plus this run's
    assert again["totals"]["steady_seconds"] == first["steady_seconds"]  # this run decoded nothing
    assert (again["this_run"]["rows"], again["this_run"]["completion_tokens"]) == (0, 0)
    assert again["resumed"] == {"shards": 2, "rows": 4}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["totals"]["rows"] == 4
    assert "  rows       4 in 2 shard(s), 0 with errors" in lines[-1]
