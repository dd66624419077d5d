"""Input rows -> requests with a fake engine: bad cells get `error` and never reach the engine."""
from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest

from fake_engine import FakeEngine, batch, make_spec, run  # tests/workers is on sys.path (rootdir-relative imports)
from workers.params import SamplingParams
from workers.input_rows import default_id, row_seed


@pytest.fixture
def engine(tokenizer):
    return FakeEngine(tokenizer.encode("x", add_special_tokens=False)[0])


def test_bad_rows_get_errors_and_never_reach_the_engine(tokenizer, engine):
    spec = make_spec(max_new_tokens=2)
    rows = run(batch([None, "", "   \n", "ok", "y" * 80]), spec, tokenizer, engine)
    assert [r["error"] for r in rows] == [
        "prompt is null", "prompt is empty", "prompt is empty", None,
        "prompt has 105 tokens; max_model_len 64 leaves room for at most 63"]
    assert len(engine.calls) == 1 and len(engine.calls[0][0]) == 1
    bad = rows[0]
    assert all(bad[k] is None for k in ("completion", "num_prompt_tokens", "num_completion_tokens", "finish_reason",
                                        "iterations", "forward_passes", "acceptance_histogram", "engine_seconds"))
    assert rows[1]["prompt"] == "" and rows[4]["prompt"] == "y" * 80


def test_non_text_prompt_column(tokenizer, engine):
    table = pa.table({"prompt": [1, 2], "path": ["/d/a.parquet"] * 2, "row_hash": pa.array([5, 6], pa.uint64())})
    rows = run(table, make_spec(), tokenizer, engine)
    assert [(r["prompt"], r["error"]) for r in rows] == [("1", "prompt must be text, got int"),
                                                        ("2", "prompt must be text, got int")]
    assert engine.calls == []


def test_sampling_columns_and_seeds(tokenizer, engine):
    spec = make_spec(seed=3, sampling_columns=(("temperature", "t"), ("max_new_tokens", "n"),
                                                               ("seed", "s")))
    table = batch(["a", "b", "c", "d", "e", "f"], t=[0.5, None, float("nan"), -1.0, 0.0, 0.0],
                  n=[3.0, None, 1.0, 1.0, 2.5, 1.0], s=[None, 11, None, None, None, -4])
    rows = run(table, spec, tokenizer, engine)
    assert [r["error"] for r in rows] == [
        None, None, "sampling temperature is NaN", "sampling temperature must be >= 0, got -1.0",
        "sampling max_new_tokens must be an integer, got 2.5", "sampling seed must be in [0, 2**63 - 1], got -4"]
    params = engine.calls[0][1]
    assert params == [
        SamplingParams(max_new_tokens=3, temperature=0.5, seed=row_seed(3, rows[0]["id"])),
        SamplingParams(max_new_tokens=256, temperature=0.0, seed=11)]
    assert row_seed(3, "a") != row_seed(3, "b") and row_seed(3, "a") == row_seed(3, "a")


def test_id_column_and_raw_prompts(tokenizer, engine):
    spec = make_spec(id_column="key", chat_template=False, max_new_tokens=1)
    rows = run(batch(["abc", "d"], key=[7, None]), spec, tokenizer, engine)
    assert [(r["id"], r["error"]) for r in rows] == [("7", None), (default_id("/data/a.parquet", 2), "id is null")]
    assert engine.calls[0][0] == [tokenizer("abc")["input_ids"]]


def test_messages_column(tokenizer, engine):
    spec = make_spec(prompt_column=None, messages_column="messages", enable_thinking=True,
                      max_new_tokens=1)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    cells = [json.dumps(msgs), None, "{not json", "[]", json.dumps([{"role": "user"}]), json.dumps([3]),
             json.dumps([{"role": "user", "content": "  "}])]
    n = len(cells)
    table = pa.table({"messages": cells, "path": ["s3bucket/k.parquet"] * n,
                      "row_hash": pa.array(range(n), pa.uint64())})
    rows = run(table, spec, tokenizer, engine)
    assert [r["error"] for r in rows] == [
        None, "messages is null", "messages is not valid JSON (Expecting property name enclosed in double quotes)",
        "messages must be a non-empty list of {role, content}", "messages[0].content must be text",
        "messages[0] must be a {role, content} mapping, got int", "messages have no content"]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert engine.calls[0][0] == [tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert rows[0]["prompt"] == json.dumps(msgs)


def test_struct_messages_and_s3_shards(tokenizer, engine):
    spec = make_spec(prompt_column=None, messages_column="messages", s3_input=True,
                      max_new_tokens=1)
    msgs = [{"role": "user", "content": "hi"}]
    table = pa.table({"messages": [msgs], "path": ["bucket/p/a.parquet"], "row_hash": pa.array([9], pa.uint64())})
    rows = run(table, spec, tokenizer, engine)
    assert rows[0]["shard"] == "s3://bucket/p/a.parquet" and rows[0]["error"] is None
    assert rows[0]["id"] == "a.parquet:0000000000000009"
    assert rows[0]["prompt"] == json.dumps(msgs)


def test_too_long_prompts_error_or_keep_their_end(tokenizer, engine):
    prompt = "abcdefghij" * 10  # 100 tokens (byte-level, no BOS); max_model_len 64
    spec = make_spec(max_new_tokens=4, chat_template=False, too_long="truncate")
    rows = run(batch([prompt, "short"]), spec, tokenizer, engine)
    assert [r["error"] for r in rows] == [None, None]
    assert rows[0]["num_prompt_tokens"] == 60  # 64 - max_new_tokens
    sent = engine.calls[0][0][0]
    assert sent == tokenizer(prompt)["input_ids"][-60:]  # the end of the prompt is kept
    assert rows[0]["prompt"] == prompt  # the output shows the prompt as given
    rows = run(batch([prompt]), make_spec(chat_template=False), tokenizer, engine)
    assert rows[0]["error"] == "prompt has 100 tokens; max_model_len 64 leaves room for at most 63"


def test_out_of_range_sampling_values(tokenizer, engine):
    table = batch(["a"] * 6, temp=[math.inf, -0.5, 0.0, 0.0, 0.0, 0.0], top_p=[1.0, 1.0, 1.5, 0.0, 1.0, 1.0],
                  seed=pa.array([None, None, None, None, float(2**63), -1.0], pa.float64()))
    spec = make_spec(sampling_columns=(("temperature", "temp"), ("top_p", "top_p"),
                                                        ("seed", "seed")))
    rows = run(table, spec, tokenizer, engine)
    assert [r["error"] for r in rows] == [
        "sampling temperature is infinite", "sampling temperature must be >= 0, got -0.5",
        "sampling top_p must be in (0, 1], got 1.5", "sampling top_p must be in (0, 1], got 0.0",
        "sampling seed must be in [0, 2**63 - 1], got 9223372036854775808",
        "sampling seed must be in [0, 2**63 - 1], got -1"]
    assert engine.calls == []


def test_duplicate_rows_from_the_driver_get_errors(tokenizer, engine):
    spec = make_spec(id_column="key",
                      duplicate_rows={2: "duplicate id 'k': row 0 of /d/a has it first"})
    rows = run(batch(["a", "b"], key=["k", "k"]), spec, tokenizer, engine)
    assert [r["error"] for r in rows] == [None, "duplicate id 'k': row 0 of /d/a has it first"]
