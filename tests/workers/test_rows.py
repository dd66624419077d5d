"""Row handling with a fake engine: bad rows get `error`, good rows get text and exact figures."""
from __future__ import annotations

import json
import math
import os
import socket

import pyarrow as pa
import pytest

from workers.params import RequestStats, Result, SamplingParams
from workers.rows import BATCH_SCHEMA, OUTPUT_SCHEMA, default_id, process_batch, row_seed
from workers.spec import WorkerSpec


class FakeEngine:
    """Answers every prompt with `max_new_tokens` copies of one token, two tokens per iteration."""

    def __init__(self, token: int, max_model_len: int = 64) -> None:
        self.token, self.max_model_len, self.calls = token, max_model_len, []

    def generate(self, prompts, params, mode="orthrus"):
        self.calls.append((prompts, params, mode))
        out = []
        for p in params:
            n = p.max_new_tokens
            lengths = [2] * (n // 2) + [1] * (n % 2)
            stats = RequestStats(prompt_tokens=0, iterations=len(lengths), diffusion_passes=len(lengths),
                                 drafted_tokens=7 * len(lengths), accepted_tokens=n - len(lengths),
                                 acceptance_lengths=lengths, engine_seconds=0.25 * len(lengths))
            out.append(Result([self.token] * n, "length", stats))
        return out


@pytest.fixture
def engine(tokenizer):
    return FakeEngine(tokenizer.encode("x", add_special_tokens=False)[0])


def batch(prompts, shard="/data/a.parquet", **extra) -> pa.Table:
    n = len(prompts)
    return pa.table({"prompt": prompts, "path": [shard] * n, "row_hash": pa.array(range(1, n + 1), pa.uint64()),
                     **extra})


def run(table, spec, tokenizer, engine):
    out = process_batch(table, spec, tokenizer, engine, json.dumps({"device": "cpu"}))
    assert out.schema == BATCH_SCHEMA
    return out.select(OUTPUT_SCHEMA.names).to_pylist()


def test_good_rows_get_completions_and_exact_figures(tokenizer, engine):
    spec = WorkerSpec(model_path="m", max_new_tokens=5)
    rows = run(batch(["hi", "hello"]), spec, tokenizer, engine)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False)
    prompt_ids = tokenizer(chat, add_special_tokens=False)["input_ids"]
    assert engine.calls[0][0][0] == prompt_ids
    assert chat.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    first = rows[0]
    share = first.pop("engine_seconds")
    assert first == {
        "id": default_id("/data/a.parquet", 1), "shard": "/data/a.parquet", "prompt": "hi", "completion": "xxxxx",
        "num_prompt_tokens": len(prompt_ids), "num_completion_tokens": 5, "finish_reason": "length", "error": None,
        "iterations": 3, "diffusion_passes": 3, "forward_passes": 6, "drafted_tokens": 21, "accepted_tokens": 2,
        "mean_acceptance_length": 5 / 3, "acceptance_histogram": [1, 2],
        "completion_token_ids": [engine.token] * 5, "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    assert first["id"] == "a.parquet:0000000000000001"
    assert share == 0.75 and rows[1]["engine_seconds"] == 0.75  # each row's own share, as the engine reports it


def test_bad_rows_get_errors_and_never_reach_the_engine(tokenizer, engine):
    spec = WorkerSpec(model_path="m", max_new_tokens=2)
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
    rows = run(table, WorkerSpec(model_path="m"), tokenizer, engine)
    assert [(r["prompt"], r["error"]) for r in rows] == [("1", "prompt must be text, got int"),
                                                        ("2", "prompt must be text, got int")]
    assert engine.calls == []


def test_sampling_columns_and_seeds(tokenizer, engine):
    spec = WorkerSpec(model_path="m", seed=3, sampling_columns=(("temperature", "t"), ("max_new_tokens", "n"),
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
    spec = WorkerSpec(model_path="m", id_column="key", chat_template=False, max_new_tokens=1)
    rows = run(batch(["abc", "d"], key=[7, None]), spec, tokenizer, engine)
    assert [(r["id"], r["error"]) for r in rows] == [("7", None), (default_id("/data/a.parquet", 2), "id is null")]
    assert engine.calls[0][0] == [tokenizer("abc")["input_ids"]]


def test_messages_column(tokenizer, engine):
    spec = WorkerSpec(model_path="m", prompt_column=None, messages_column="messages", enable_thinking=True,
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
    spec = WorkerSpec(model_path="m", prompt_column=None, messages_column="messages", s3_input=True,
                      max_new_tokens=1)
    msgs = [{"role": "user", "content": "hi"}]
    table = pa.table({"messages": [msgs], "path": ["bucket/p/a.parquet"], "row_hash": pa.array([9], pa.uint64())})
    rows = run(table, spec, tokenizer, engine)
    assert rows[0]["shard"] == "s3://bucket/p/a.parquet" and rows[0]["error"] is None
    assert rows[0]["id"] == "a.parquet:0000000000000009"
    assert rows[0]["prompt"] == json.dumps(msgs)


def test_engine_failure_propagates(tokenizer):
    class Broken(FakeEngine):
        def generate(self, prompts, params, mode="orthrus"):
            raise RuntimeError("CUDA error: device-side assert")

    with pytest.raises(RuntimeError, match="device-side assert"):
        process_batch(batch(["a"]), WorkerSpec(model_path="m"), tokenizer, Broken(0), "{}")


class OomAbove(FakeEngine):
    """Raises MemoryError for batches larger than `limit` prompts, and for any batch holding a
    prompt longer than `huge` tokens (a row too big even alone)."""

    def __init__(self, token: int, limit: int, huge: int = 10_000) -> None:
        super().__init__(token)
        self.limit, self.huge, self.sizes = limit, huge, []

    def generate(self, prompts, params, mode="orthrus"):
        self.sizes.append(len(prompts))
        if len(prompts) > self.limit or any(len(p) > self.huge for p in prompts):
            raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().generate(prompts, params, mode)


def test_out_of_memory_halves_the_batch_down_to_one_row(tokenizer):
    engine = OomAbove(tokenizer.encode("x", add_special_tokens=False)[0], limit=2, huge=20)
    freed = []
    prompts = ["a", "b", "c", "d", "e", "y" * 30, "g"]
    out = process_batch(batch(prompts), WorkerSpec(model_path="m", max_new_tokens=3, chat_template=False), tokenizer,
                        engine, "{}", on_oom=lambda: freed.append(1))
    rows = out.select(OUTPUT_SCHEMA.names).to_pylist()
    # 7 -> 3 + 4 -> (1 + 2) + (2 + 2) -> the pair holding the 31-token row -> that row alone fails.
    assert engine.sizes == [7, 3, 1, 2, 4, 2, 2, 1, 1]
    assert len(freed) == 5  # out of memory at 7, 3, 4, the pair, and the row alone
    assert [r["error"] for r in rows] == [None] * 5 + [
        "out of memory with this row alone (MemoryError: CUDA out of memory. Tried to allocate 2.00 GiB)", None]
    assert [r["num_completion_tokens"] for r in rows] == [3, 3, 3, 3, 3, None, 3]


def test_other_engine_errors_are_not_split(tokenizer):
    class Broken(FakeEngine):
        def generate(self, prompts, params, mode="orthrus"):
            self.calls.append(len(prompts))
            raise ValueError("bad state")

    engine = Broken(0)
    with pytest.raises(ValueError, match="bad state"):
        process_batch(batch(["a", "b"]), WorkerSpec(model_path="m"), tokenizer, engine, "{}")
    assert engine.calls == [2]


def test_too_long_prompts_error_or_keep_their_end(tokenizer, engine):
    prompt = "abcdefghij" * 10  # 100 tokens (byte-level, no BOS); max_model_len 64
    spec = WorkerSpec(model_path="m", max_new_tokens=4, chat_template=False, too_long="truncate")
    rows = run(batch([prompt, "short"]), spec, tokenizer, engine)
    assert [r["error"] for r in rows] == [None, None]
    assert rows[0]["num_prompt_tokens"] == 60  # 64 - max_new_tokens
    sent = engine.calls[0][0][0]
    assert sent == tokenizer(prompt)["input_ids"][-60:]  # the end of the prompt is kept
    assert rows[0]["prompt"] == prompt  # the output shows the prompt as given
    rows = run(batch([prompt]), WorkerSpec(model_path="m", chat_template=False), tokenizer, engine)
    assert rows[0]["error"] == "prompt has 100 tokens; max_model_len 64 leaves room for at most 63"


def test_out_of_range_sampling_values(tokenizer, engine):
    table = batch(["a"] * 6, temp=[math.inf, -0.5, 0.0, 0.0, 0.0, 0.0], top_p=[1.0, 1.0, 1.5, 0.0, 1.0, 1.0],
                  seed=pa.array([None, None, None, None, float(2**63), -1.0], pa.float64()))
    spec = WorkerSpec(model_path="m", sampling_columns=(("temperature", "temp"), ("top_p", "top_p"),
                                                        ("seed", "seed")))
    rows = run(table, spec, tokenizer, engine)
    assert [r["error"] for r in rows] == [
        "sampling temperature is infinite", "sampling temperature must be >= 0, got -0.5",
        "sampling top_p must be in (0, 1], got 1.5", "sampling top_p must be in (0, 1], got 0.0",
        "sampling seed must be in [0, 2**63 - 1], got 9223372036854775808",
        "sampling seed must be in [0, 2**63 - 1], got -1"]
    assert engine.calls == []


def test_duplicate_rows_from_the_driver_get_errors(tokenizer, engine):
    spec = WorkerSpec(model_path="m", id_column="key",
                      duplicate_rows={2: "duplicate id 'k': row 0 of /d/a has it first"})
    rows = run(batch(["a", "b"], key=["k", "k"]), spec, tokenizer, engine)
    assert [r["error"] for r in rows] == [None, "duplicate id 'k': row 0 of /d/a has it first"]
