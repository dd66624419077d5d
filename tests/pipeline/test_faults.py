"""Bad rows, bad files and a dying engine actor, end to end through a local Ray on the tiny model."""
from __future__ import annotations

import json
import math
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import run_job
from workers.actor import GenerateActor


def job(tiny_model, inputs, out, **sections):
    cfg = {"name": "faults", "input": {"path": str(inputs), "prompt_column": "prompt", "id_column": "key"},
           "model": {"path": str(tiny_model)}, "sampling": {"max_new_tokens": 4}, "prompt": {"chat_template": False},
           "resources": {"batch_size": 3, "num_workers": 1}, "output": {"path": str(out)},
           "progress_interval_s": 0.5}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def outputs(out) -> dict[str, dict]:
    """Output rows by id; ids must be unique."""
    rows = pq.read_table(out / "outputs").to_pylist()
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows)
    return by_id


def outputs_by_prompt(out) -> dict[str, dict]:
    rows = pq.read_table(out / "outputs").to_pylist()
    by_prompt = {r["prompt"]: r for r in rows}
    assert len(by_prompt) == len(rows)
    return by_prompt


@pytest.mark.timeout(180)
def test_bad_rows_and_bad_files_never_stop_the_job(ray_session, tiny_model, write_shards, tmp_path):
    long_prompt = "the end of a long prompt: " * 8  # 208 tokens (byte-level), max_model_len 64
    inputs = write_shards({
        "a.parquet": pa.table({
            "key": ["a0", "a1", "a2", "a3", "a4", "dup", "dup", None],
            "prompt": ["ok", long_prompt, "nan temp", "inf top_p", "neg top_k", "first dup", "same shard dup", "x"],
            "temp": [0.0, 0.0, math.nan, 0.0, 0.0, 0.0, 0.0, 0.0],
            "top_p": [1.0, 1.0, 1.0, math.inf, 1.0, 1.0, 1.0, 1.0],
            "top_k": [0, 0, 0, 0, -3, 0, 0, 0]}),
        "b.parquet": {"key": ["b0", "dup"], "prompt": ["fine", "other shard dup"], "temp": [0.0, 0.0],
                      "top_p": [1.0, 1.0], "top_k": [0, 0]},
        "c_missing_column.parquet": {"key": ["c0"], "text": ["no prompt column"]},
        # Other writers: integer ids and integer sampling cells (read as text / as numbers), an integer prompt.
        "f_int_ids.parquet": {"key": [7, 8], "prompt": ["int id", "int id 2"], "temp": [0, 0], "top_p": [1, 1],
                              "top_k": [0, 0]},
        "g_int_prompt.parquet": {"key": ["g0"], "prompt": [5], "temp": [0.0], "top_p": [1.0], "top_k": [0]},
    })
    (inputs / "d_corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    (inputs / "e_empty.parquet").write_bytes(b"")
    lines: list[str] = []
    cfg = job(tiny_model, inputs, tmp_path / "out", engine={"max_model_len": 64}, prompt={"too_long": "truncate"},
              input={"on_bad_file": "skip",
                     "sampling_columns": {"temperature": "temp", "top_p": "top_p", "top_k": "top_k"}})
    summary = run_job(cfg, echo=lines.append)
    rows = outputs_by_prompt(tmp_path / "out")  # one output row per input row (ids repeat: "dup")
    first = f"row 5 of {inputs}/a.parquet has it first"
    assert {p: (r["id"], r["error"]) for p, r in rows.items()} == {
        "ok": ("a0", None), long_prompt: ("a1", None), "nan temp": ("a2", "sampling temperature is NaN"),
        "inf top_p": ("a3", "sampling top_p is infinite"), "neg top_k": ("a4", "sampling top_k must be >= 0, got -3"),
        "first dup": ("dup", None), "same shard dup": ("dup", f"duplicate id 'dup': {first}"),
        "x": (rows["x"]["id"], "id is null"), "fine": ("b0", None),
        "other shard dup": ("dup", f"duplicate id 'dup': {first}"), "int id": ("7", None), "int id 2": ("8", None)}
    assert rows["x"]["id"].startswith("a.parquet:")
    # Left-truncated: the last max_model_len - max_new_tokens = 60 tokens of the prompt are kept.
    assert rows[long_prompt]["num_prompt_tokens"] == 60 and rows[long_prompt]["num_completion_tokens"] == 4
    skipped = {f"{inputs}/c_missing_column.parquet": "no column 'prompt' (columns: key, text)",
               f"{inputs}/e_empty.parquet": "empty file (0 bytes)",
               f"{inputs}/g_int_prompt.parquet": "column 'prompt' is int64, not text"}
    got = {s["file"]: s["reason"] for s in summary["skipped_files"]}
    assert got.pop(f"{inputs}/d_corrupt.parquet").startswith("not a readable Parquet file (")
    assert got == skipped
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["skipped_files"] == summary["skipped_files"]
    assert summary["totals"]["rows"] == 12 and summary["totals"]["errors"] == 6
    text = "\n".join(lines)
    assert f"skipping bad input file {inputs}/e_empty.parquet: empty file (0 bytes)" in text
    assert "  skipped    4 bad input file(s) (input.on_bad_file=skip):" in text
    assert f"               {inputs}/e_empty.parquet: empty file (0 bytes)" in text


def crashing_actor(marker: str) -> type:
    """A GenerateActor that kills its own process (os._exit, no cleanup) the first time it sees the
    prompt CRASH: a worker dying mid-batch. Defined in a function so Ray pickles it by value."""

    class CrashOnce(GenerateActor):
        def __call__(self, batch: pa.Table) -> pa.Table:
            if "CRASH" in batch.column("prompt").to_pylist() and not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                os._exit(1)
            return super().__call__(batch)

    return CrashOnce


@pytest.mark.timeout(180)
def test_killed_actor_is_replaced_and_every_row_runs_once(ray_session, tiny_model, write_shards, tmp_path):
    keys = [f"k{i}" for i in range(9)]
    prompts = [f"p{i}" for i in range(9)]
    prompts[4] = "CRASH"
    inputs = write_shards({"a.parquet": {"key": keys[:5], "prompt": prompts[:5]},
                           "b.parquet": {"key": keys[5:], "prompt": prompts[5:]}})
    marker = tmp_path / "crashed.pid"
    summary = run_job(job(tiny_model, inputs, tmp_path / "out"), echo=lambda _: None,
                      actor_cls=crashing_actor(str(marker)))
    dead_pid = marker.read_text()
    rows = outputs(tmp_path / "out")
    assert sorted(rows) == keys and all(r["error"] is None for r in rows.values())
    assert rows["k4"]["prompt"] == "CRASH" and rows["k4"]["num_completion_tokens"] == 4
    assert not rows["k4"]["worker"].endswith(f":{dead_pid}")  # rerun by the replacement actor
    assert summary["totals"]["rows"] == 9 and summary["totals"]["shards_complete"] == 2
