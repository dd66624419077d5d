"""End to end through a local Ray on the tiny model: outputs, per-shard stats, summary.

Every test here starts engine actors (about 10 s each for imports), so each has a timeout.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import run_job
from pipeline.stats import SHARDS_SCHEMA
from workers.schema import OUTPUT_SCHEMA

SUMMED = {"num_prompt_tokens": "prompt_tokens", "num_completion_tokens": "completion_tokens",
          "iterations": "iterations", "diffusion_passes": "diffusion_passes", "forward_passes": "forward_passes",
          "drafted_tokens": "drafted_tokens", "accepted_tokens": "accepted_tokens", "engine_seconds": "engine_seconds"}


def job(tiny_model, inputs, out, **sections):
    cfg = {"name": "t", "input": {"path": str(inputs), "prompt_column": "prompt", "id_column": "key"},
           "model": {"path": str(tiny_model)}, "sampling": {"max_new_tokens": 6},
           "resources": {"batch_size": 4, "num_workers": 1}, "output": {"path": str(out)},
           "progress_interval_s": 0.5}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def nulls_as_none(col: pd.Series) -> pd.Series:
    """pandas 3 reads null strings as NaN; compare them as None."""
    return col.astype(object).where(col.notna(), None)


def read_outputs(out) -> pd.DataFrame:
    table = pq.read_table(out / "outputs")
    assert table.schema.remove_metadata() == OUTPUT_SCHEMA
    return table.to_pandas()


def check_stats_are_row_sums(out, df) -> pd.DataFrame:
    """stats/shards.parquet == per-shard sums of outputs/ (the issue's consistency requirement)."""
    shards = pq.read_table(out / "stats" / "shards.parquet")
    assert shards.schema.remove_metadata() == SHARDS_SCHEMA
    stats = shards.to_pandas().set_index("shard")
    ok = df[df["error"].isna()]
    for shard, row in stats.iterrows():
        mine, good = df[df["shard"] == shard], ok[ok["shard"] == shard]
        assert row["rows"] == len(mine) == row["input_rows"]
        assert row["errors"] == mine["error"].notna().sum()
        for col, stat in SUMMED.items():
            assert row[stat] == pytest.approx(good[col].sum()), (shard, col)
        hist = [0] * max([len(h) for h in good["acceptance_histogram"]] + [0])
        for h in good["acceptance_histogram"]:
            for i, n in enumerate(h):
                hist[i] += n
        assert list(row["acceptance_histogram"]) == hist
        if row["iterations"]:
            assert row["mean_acceptance_length"] == pytest.approx(row["completion_tokens"] / row["iterations"])
            assert row["tokens_per_s"] == pytest.approx(row["completion_tokens"] / row["engine_seconds"])
    return stats


@pytest.mark.timeout(180)
def test_orthrus_job_matches_the_bare_engine(ray_session, tiny_model, tokenizer, write_shards, tmp_path):
    inputs = write_shards({
        "s0.parquet": {"key": ["a0", "a1", "a2", "a3", "a4"], "prompt": ["hello", None, "def f(x):", "", "hi"]},
        "s1.parquet": {"key": ["b0", "b1", "b2"], "prompt": ["one", "two", "   "]},
        "s2.parquet": pa.table({"key": pa.array([], pa.string()), "prompt": pa.array([], pa.string())}),
    })
    lines: list[str] = []
    summary = run_job(job(tiny_model, inputs, tmp_path / "out"), echo=lines.append)
    out = tmp_path / "out"
    df = read_outputs(out).set_index("id").sort_index()
    assert list(df.index) == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    assert nulls_as_none(df["error"]).to_dict() == {
        "a0": None, "a1": "prompt is null", "a2": None, "a3": "prompt is empty", "a4": None, "b0": None, "b1": None,
        "b2": "prompt is empty"}
    assert df.loc["a0", "shard"] == f"{inputs}/s0.parquet" and df.loc["b1", "shard"] == f"{inputs}/s1.parquet"

    # Same prompts through the bare engine: identical tokens and figures.
    from workers.engine import Engine, SamplingParams

    engine = Engine.from_pretrained(str(tiny_model))
    good = [k for k in df.index if pd.isna(df.loc[k, "error"])]
    prompts = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": df.loc[k, "prompt"]}],
                                                       tokenize=False, add_generation_prompt=True,
                                                       enable_thinking=False), add_special_tokens=False)["input_ids"]
               for k in good]
    results = engine.generate(prompts, SamplingParams(max_new_tokens=6), mode="orthrus")
    for k, p, r in zip(good, prompts, results):
        assert df.loc[k, "completion"] == tokenizer.decode(r.token_ids, skip_special_tokens=True)
        assert df.loc[k, "num_prompt_tokens"] == len(p)
        assert df.loc[k, "num_completion_tokens"] == len(r.token_ids)
        assert df.loc[k, "finish_reason"] == r.finish_reason
        assert df.loc[k, "iterations"] == r.stats.iterations
        assert df.loc[k, "accepted_tokens"] == r.stats.accepted_tokens
        assert df.loc[k, "forward_passes"] == r.stats.iterations + r.stats.diffusion_passes
        assert df.loc[k, "mean_acceptance_length"] == pytest.approx(r.stats.mean_acceptance_length)

    ok_tokens, ok_iterations = df["num_completion_tokens"].sum(), df["iterations"].sum()
    stats = check_stats_are_row_sums(out, df.reset_index())
    assert list(stats.index) == [f"{inputs}/s0.parquet", f"{inputs}/s1.parquet", f"{inputs}/s2.parquet"]
    assert stats.loc[f"{inputs}/s2.parquet", "rows"] == 0

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    t = summary["totals"]
    assert (t["rows"], t["errors"], t["shards"], t["shards_complete"]) == (8, 3, 3, 3)
    assert t["completion_tokens"] == int(df["num_completion_tokens"].sum())
    assert summary["mode"] == "orthrus" and summary["device_types"] == ["cpu"] and summary["actors"] == 1
    assert summary["engines"][0]["is_orthrus"] is True and summary["engines"][0]["dtype"] == "float32"
    assert summary["config"]["input"]["path"] == str(inputs)
    assert summary["versions"]["ray"].startswith("2.60") and summary["versions"]["torch"]
    assert lines[0] == f"job 't': 3 shard(s), 8 rows -> {out}"
    # The final progress line, exactly once: figures from outputs/, only the clock-driven ones as patterns.
    acceptance = ok_tokens / ok_iterations
    final = [line for line in lines if "rows 8/8" in line]
    assert len(final) == 1 and final[0] == lines[-2], lines
    assert re.fullmatch(r"\[\d+s\] rows 8/8 \(100\.0%\) \| errors 3 \| shards 3/3 \| [\d,]+\.\d tok/s \| "
                        rf"acceptance {acceptance:.2f} tok/iter \| K 8\.00 \(AR 0%\) \| kv \d+% of [\d,]+ pages",
                        final[0]), final[0]
    # K in use and the KV pool as the last batch ended (issue 15); no GPU memory on CPU
    assert summary["totals"]["mean_block_size"] == 8.0 and summary["totals"]["ar_share"] == 0.0
    state = summary["engine_state"]
    assert state["actors"] == 1 and state["kv_pages"] > 0 and state["gpu_memory_total"] is None
    assert state["k_choice"] and any(line == f"  K choice: {state['k_choice']}" for line in lines)
    assert lines[-1].startswith("job 't' done in ") and f"outputs    {out}/outputs" in lines[-1]


@pytest.mark.timeout(180)
def test_ar_mode_chat_messages_and_sampling_columns(ray_session, tiny_model, write_shards, tmp_path):
    msgs = [json.dumps([{"role": "user", "content": f"q{i}"}]) for i in range(5)]
    inputs = write_shards({"m.parquet": {"messages": msgs, "n": [1, 2, 3, None, -1],
                                         "temp": [0.0, 0.7, 0.0, 0.0, 0.0]}})
    cfg = job(tiny_model, inputs, tmp_path / "out", engine={"mode": "ar"},
              input={"prompt_column": None, "messages_column": "messages", "id_column": None,
                     "sampling_columns": {"max_new_tokens": "n", "temperature": "temp"}},
              resources={"batch_size": 2})
    summary = run_job(cfg, echo=lambda _: None)
    df = read_outputs(tmp_path / "out")
    df = df.set_index(df["prompt"].map(lambda p: json.loads(p)[0]["content"])).sort_index()
    assert nulls_as_none(df["error"]).tolist() == [
        None, None, None, None, "sampling max_new_tokens must be >= 1, got -1"]
    assert df["num_completion_tokens"].tolist()[:4] == [1, 2, 3, 6]
    ok = df[df["error"].isna()]
    assert (ok["iterations"] == ok["num_completion_tokens"]).all() and (ok["diffusion_passes"] == 0).all()
    assert (ok["mean_acceptance_length"] == 1.0).all()
    assert df["id"].str.startswith("m.parquet:").all() and df["id"].nunique() == 5
    check_stats_are_row_sums(tmp_path / "out", df.reset_index(drop=True))
    assert summary["mode"] == "ar" and summary["totals"]["mean_acceptance_length"] == 1.0


@pytest.mark.timeout(240)
def test_ten_thousand_rows_each_exactly_once(ray_session, tiny_model, write_shards, tmp_path):
    files = {f"part-{s:03d}.parquet": {"key": [f"{s}-{i}" for i in range(500)],
                                       "prompt": [f"p{i}" for i in range(500)]} for s in range(20)}
    inputs = write_shards(files)
    cfg = job(tiny_model, inputs, tmp_path / "out", sampling={"max_new_tokens": 1},
              resources={"batch_size": 1000, "num_workers": 2}, prompt={"chat_template": False})
    summary = run_job(cfg, echo=lambda _: None)
    ids = pq.read_table(tmp_path / "out" / "outputs", columns=["id", "shard", "error"]).to_pandas()
    assert len(ids) == 10_000 and ids["id"].is_unique
    assert set(ids["id"]) == {f"{s}-{i}" for s in range(20) for i in range(500)}
    assert ids["error"].isna().all()
    expected_file = ids["id"].map(lambda k: f"part-{int(k.split('-')[0]):03d}.parquet")
    assert (ids["shard"] == str(inputs) + "/" + expected_file).all()
    t = summary["totals"]
    assert (t["rows"], t["completion_tokens"], t["shards_complete"]) == (10_000, 10_000, 20)
    assert summary["actors"] == 2


def test_driver_never_imports_torch():
    code = ("import sys, pipeline.job, pipeline.stats, pipeline.summary, pipeline.progress, jobs.cli, workers.actor, "
            "workers.batch, workers.input_rows, workers.schema, workers.metrics, workers.model_source; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
