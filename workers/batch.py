"""One Ray batch through the actor: parse and tokenise, generate (halving on out of memory), build rows.

Pure Python over pyarrow (no torch), so it is tested with a fake engine (tests/workers/test_batch.py).
Running out of memory is not fatal: the batch is split in halves and retried, down to single rows,
and a row that runs out of memory alone gets `error` (`generate_in_halves`). Any other exception
from the engine is not a row error: it propagates and ends the actor (Ray restarts it and retries
the batch, see pipeline/job.py). Columns and their meaning: workers/schema.py.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any, Callable, Protocol

import pyarrow as pa

from workers import metrics
from workers.params import Result, SamplingParams
from workers.input_rows import Row, Tokenizer, parse_rows, tokenize
from workers.schema import (BATCH, BATCH_SCHEMA, ENGINE, FINISHED_AT, RESULT_COLUMNS, ROW_FIELDS, ROW_HASH,
                            STARTED_AT)
from workers.spec import WorkerSpec

OOM_ERRORS: tuple[type[BaseException], ...] = (MemoryError,)  # the actor adds torch.cuda.OutOfMemoryError
log = logging.getLogger(__name__)


class EngineLike(Protocol):
    max_model_len: int

    def generate(self, prompts: list[list[int]], params: list[SamplingParams], mode: str = ...) -> list[Result]: ...


def _result_cells(row: Row, res: Result, completion: str) -> dict[str, Any]:
    """The result columns (schema.RESULT_COLUMNS) of one row that ran."""
    s = res.stats
    return {
        "completion": completion, "completion_token_ids": list(res.token_ids),
        "num_prompt_tokens": len(row.token_ids or []), "num_completion_tokens": len(res.token_ids),
        "finish_reason": res.finish_reason, "iterations": s.iterations, "diffusion_passes": s.diffusion_passes,
        "forward_passes": s.iterations + s.diffusion_passes, "drafted_tokens": s.drafted_tokens,
        "accepted_tokens": s.accepted_tokens, "mean_acceptance_length": s.mean_acceptance_length,
        "acceptance_histogram": metrics.histogram(s.acceptance_lengths), "engine_seconds": s.engine_seconds,
        "loops": int(metrics.loops(res.token_ids, span=metrics.loop_span_for(row.params.max_new_tokens))),
    }


def build_table(rows: list[Row], results: dict[int, Result], completions: dict[int, str],
                engine_info: str, started_at: float, batch_info: str = "{}") -> pa.Table:
    """Output rows (BATCH_SCHEMA) in input order; `results` and `completions` are keyed by row index."""
    cols: dict[str, list[Any]] = {name: [] for name, _ in ROW_FIELDS}
    empty = dict.fromkeys(RESULT_COLUMNS)
    for i, row in enumerate(rows):
        res = results.get(i)
        cells = empty if res is None else _result_cells(row, res, completions[i])
        for name, value in (("id", row.id), ("shard", row.shard), ("prompt", row.prompt), ("error", row.error),
                            *cells.items()):
            cols[name].append(value)
    n = len(rows)
    cols["worker"] = [worker_name()] * n
    cols[ROW_HASH] = [r.row_hash for r in rows]
    cols[ENGINE] = [engine_info] * n
    cols[STARTED_AT] = [started_at] * n
    cols[FINISHED_AT] = [time.time()] * n
    cols[BATCH] = [batch_info] * n
    return pa.Table.from_pydict(cols, schema=BATCH_SCHEMA)


def process_batch(batch: pa.Table, spec: WorkerSpec, tokenizer: Tokenizer, engine: EngineLike,
                  engine_info: str, oom_errors: tuple[type[BaseException], ...] = OOM_ERRORS,
                  on_oom: Callable[[], None] | None = None, batch_info: Callable[[], str] | None = None) -> pa.Table:
    """One actor call: parse, tokenise, one `engine.generate` for the good rows, decode, build rows.

    Args:
        batch: rows read by Ray (input columns plus `path` and `row_hash`).
        spec: the job's worker settings.
        tokenizer: the checkpoint's own tokenizer.
        engine: the loaded Engine (or a fake with the same `generate`).
        engine_info: JSON facts about the engine, copied into `_engine`.
        batch_info: called when the batch is done: JSON of the engine's state then, copied into `_batch`.
        oom_errors, on_oom: out-of-memory handling, see `generate_in_halves`.
    Returns:
        One output row per input row, in order (BATCH_SCHEMA).
    """
    started_at = time.time()
    rows = parse_rows(batch, spec)
    tokenize(rows, spec, tokenizer, engine.max_model_len)
    todo = [i for i, r in enumerate(rows) if r.error is None]
    results: dict[int, Result] = {}
    completions: dict[int, str] = {}
    if todo:
        out = generate_in_halves(engine, [rows[i].token_ids for i in todo], [rows[i].params for i in todo],
                                 spec.engine.mode, oom_errors, on_oom)
        if len(out) != len(todo):
            raise RuntimeError(f"engine returned {len(out)} results for {len(todo)} prompts")
        for i, res in zip(todo, out):
            if isinstance(res, str):
                rows[i].error = res
            else:
                results[i] = res
        done = list(results)
        texts = tokenizer.batch_decode([results[i].token_ids for i in done], skip_special_tokens=True)
        completions = dict(zip(done, texts))
    return build_table(rows, results, completions, engine_info, started_at, batch_info() if batch_info else "{}")


def generate_in_halves(engine: EngineLike, prompts: list[list[int]], params: list[SamplingParams], mode: str,
                       oom_errors: tuple[type[BaseException], ...] = OOM_ERRORS,
                       on_oom: Callable[[], None] | None = None) -> list[Result | str]:
    """`engine.generate`, but out of memory splits the batch in halves and retries each, recursively.

    Args:
        engine: the Engine (or a fake).
        prompts, params, mode: as for `engine.generate`.
        oom_errors: what counts as out of memory (the actor passes torch.cuda.OutOfMemoryError too).
        on_oom: called after each out-of-memory error, before the retry (the actor frees the CUDA cache).
    Returns:
        Per prompt, in order: its Result, or the error text for a prompt that ran out of memory alone.
    """
    try:
        return list(engine.generate(prompts, params, mode=mode))
    except oom_errors as err:
        if on_oom is not None:
            on_oom()
        if len(prompts) == 1:
            return [f"out of memory with this row alone ({type(err).__name__}: {str(err)[:200]})"]
        half = len(prompts) // 2
        log.warning("out of memory on %d rows (%s); retrying as %d + %d", len(prompts), type(err).__name__, half,
                    len(prompts) - half)
        return (generate_in_halves(engine, prompts[:half], params[:half], mode, oom_errors, on_oom)
                + generate_in_halves(engine, prompts[half:], params[half:], mode, oom_errors, on_oom))


def worker_name() -> str:
    """`<host>:<pid>`: names the actor process that ran a row (unique across a cluster's nodes)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def engine_info_json(**facts: Any) -> str:
    """The `_engine` cell: the actor's static facts the driver reports in summary.json (device, model, dtype)."""
    facts.setdefault("pid", os.getpid())
    return json.dumps(facts, sort_keys=True)
