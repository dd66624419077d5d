"""A fake engine and hand-built Ray batches for the batch-loop tests (test_batch.py, test_input_rows.py)."""
from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from workers.batch import process_batch
from workers.params import RequestStats, Result, SamplingParams
from workers.schema import BATCH_SCHEMA, OUTPUT_SCHEMA
from workers.spec import EngineSettings, WorkerSpec

_SAMPLING = ("max_new_tokens", "temperature", "top_k", "top_p", "seed")
_ENGINE = ("mode", "block_size", "max_batch_size", "max_model_len", "cuda_graphs", "pass_costs",
           "kv_cache_memory_fraction", "kv_cache_tokens", "max_concurrent_batches")


def make_spec(model_path: str = "m", **flat: Any) -> WorkerSpec:
    """A WorkerSpec from flat settings: sampling and engine keys go to their nested values."""
    sampling = SamplingParams(**{"seed": 0, **{k: flat.pop(k) for k in _SAMPLING if k in flat}})
    engine = EngineSettings(**{k: flat.pop(k) for k in _ENGINE if k in flat})
    return WorkerSpec(model_path=model_path, engine=engine, sampling=sampling, **flat)


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


def batch(prompts, shard="/data/a.parquet", **extra) -> pa.Table:
    n = len(prompts)
    return pa.table({"prompt": prompts, "path": [shard] * n, "row_hash": pa.array(range(1, n + 1), pa.uint64()),
                     **extra})


def run(table, spec, tokenizer, engine):
    out = process_batch(table, spec, tokenizer, engine, json.dumps({"device": "cpu"}))
    assert out.schema == BATCH_SCHEMA
    return out.select(OUTPUT_SCHEMA.names).to_pylist()
