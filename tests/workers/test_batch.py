"""The batch loop with a fake engine: exact per-row figures, out-of-memory halving, engine errors."""
from __future__ import annotations

import os
import socket

import pytest

from fake_engine import FakeEngine, batch, make_spec, run  # tests/workers is on sys.path (rootdir-relative imports)
from workers.batch import process_batch
from workers.input_rows import default_id
from workers.schema import OUTPUT_SCHEMA


@pytest.fixture
def engine(tokenizer):
    return FakeEngine(tokenizer.encode("x", add_special_tokens=False)[0])


def test_good_rows_get_completions_and_exact_figures(tokenizer, engine):
    spec = make_spec(max_new_tokens=5)
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
        "loops": 1,  # five copies of one token: a loop at the span for 5-token completions (2)
    }
    assert first["id"] == "a.parquet:0000000000000001"
    assert share == 0.75 and rows[1]["engine_seconds"] == 0.75  # each row's own share, as the engine reports it


def test_engine_failure_propagates(tokenizer):
    class Broken(FakeEngine):
        def generate(self, prompts, params, mode="orthrus"):
            raise RuntimeError("CUDA error: device-side assert")

    with pytest.raises(RuntimeError, match="device-side assert"):
        process_batch(batch(["a"]), make_spec(), tokenizer, Broken(0), "{}")


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
    out = process_batch(batch(prompts), make_spec(max_new_tokens=3, chat_template=False), tokenizer,
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
        process_batch(batch(["a", "b"]), make_spec(), tokenizer, engine, "{}")
    assert engine.calls == [2]
