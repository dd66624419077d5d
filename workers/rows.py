"""Row handling: input rows -> engine requests, engine results -> output rows.

Pure Python over pyarrow (no torch), so it is tested with a fake engine. A bad row never fails
the batch: it gets `error` set and null figures, and the other rows run (cf. ray-project/ray#59194,
where one over-long prompt killed a whole job). Running out of memory is not fatal either: the
batch is split in halves and retried, down to single rows, and a row that runs out of memory alone
gets `error` (`generate_in_halves`). Any other exception from the engine is not a row error: it
propagates and ends the actor (Ray restarts it and retries the batch, see pipeline/job.py).

Per-row figures (the engine's RequestStats, see workers/params.py):
  iterations       verify (AR) forwards the row took part in; in AR mode one per token
  diffusion_passes diffusion (draft) forwards; 0 in AR mode
  forward_passes   iterations + diffusion_passes
  acceptance_histogram[i]  iterations that committed i + 1 tokens
  engine_seconds   the row's share of the engine's busy time (workers/params.RequestStats): the
                   engine serves several batches at once, so a batch's wall time is no row's cost
  completion_token_ids  the generated token ids (what `completion` decodes); `orthrus-batch compare`
                   checks AR and Orthrus outputs token for token with them
  worker           `<host>:<pid>` of the actor that ran the row (which engine, for data-parallel
                   checks and per-worker figures)
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import pyarrow as pa

from workers.params import Result, SamplingParams
from workers.spec import WorkerSpec

ROW_FIELDS: list[tuple[str, pa.DataType]] = [
    ("id", pa.string()),
    ("shard", pa.string()),
    ("prompt", pa.string()),
    ("completion", pa.string()),
    ("completion_token_ids", pa.list_(pa.int32())),
    ("num_prompt_tokens", pa.int64()),
    ("num_completion_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("error", pa.string()),
    ("iterations", pa.int64()),
    ("diffusion_passes", pa.int64()),
    ("forward_passes", pa.int64()),
    ("drafted_tokens", pa.int64()),
    ("accepted_tokens", pa.int64()),
    ("mean_acceptance_length", pa.float64()),
    ("acceptance_histogram", pa.list_(pa.int64())),
    ("engine_seconds", pa.float64()),
    ("worker", pa.string()),
]
OUTPUT_SCHEMA = pa.schema(ROW_FIELDS)
# Batch-level facts the commit stage needs for per-shard stats; dropped before writing.
INTERNAL_FIELDS: list[tuple[str, pa.DataType]] = [
    ("_row_hash", pa.uint64()),  # Ray's hash of (file path, row position): unique per input row
    ("_engine", pa.string()),  # JSON: device, model_dir, dtype, is_orthrus, block_size
    ("_started_at", pa.float64()),  # unix time the batch reached the actor
    ("_finished_at", pa.float64()),  # unix time its rows were built
    ("_batch", pa.string()),  # JSON: the engine's state as the batch ended (K choice, GPU memory, KV pool)
]
BATCH_SCHEMA = pa.schema(ROW_FIELDS + INTERNAL_FIELDS)
RAY_PATH_COLUMN = "path"  # read_parquet(include_paths=True)
RAY_HASH_COLUMN = "row_hash"  # read_parquet(include_row_hash=True)
_INT_PARAMS = ("max_new_tokens", "top_k", "seed")
_MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
OOM_ERRORS: tuple[type[BaseException], ...] = (MemoryError,)  # the actor adds torch.cuda.OutOfMemoryError
log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    def __call__(self, texts: list[str], add_special_tokens: bool = ...) -> Any: ...
    def apply_chat_template(self, messages: list[dict], **kwargs: Any) -> Any: ...
    def batch_decode(self, ids: list[list[int]], skip_special_tokens: bool = ...) -> list[str]: ...


class EngineLike(Protocol):
    max_model_len: int

    def generate(self, prompts: list[list[int]], params: list[SamplingParams], mode: str = ...) -> list[Result]: ...


@dataclass
class Row:
    """One input row on its way through the actor."""

    id: str
    shard: str
    row_hash: int
    prompt: str | None
    error: str | None = None
    text: str | None = None  # prompt text (prompt_column jobs)
    messages: list[dict] | None = None  # chat messages (messages_column jobs)
    token_ids: list[int] | None = None
    params: SamplingParams | None = None


def default_id(shard: str, row_hash: int) -> str:
    """`<file name>:<hash>`; Ray's row hash mixes the file path and the row's position."""
    return f"{shard.rsplit('/', 1)[-1]}:{row_hash:016x}"


def row_seed(base_seed: int, row_id: str) -> int:
    """A per-row seed from the job seed and the row id: rows sample independently, and a row's
    result does not depend on which batch it lands in."""
    digest = hashlib.blake2b(f"{base_seed}:{row_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _prompt_value(value: Any) -> tuple[str | None, str | None]:
    """(text, error) for a prompt cell."""
    if value is None:
        return None, "prompt is null"
    if not isinstance(value, str):
        return None, f"prompt must be text, got {type(value).__name__}"
    if not value.strip():
        return None, "prompt is empty"
    return value, None


def _messages_value(value: Any) -> tuple[list[dict] | None, str | None]:
    """(messages, error) for a chat-messages cell: a list of {role, content} or its JSON text."""
    if value is None:
        return None, "messages is null"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            return None, f"messages is not valid JSON ({err.msg})"
    if not isinstance(value, list) or not value:
        return None, "messages must be a non-empty list of {role, content}"
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return None, f"messages[{i}] must be a {{role, content}} mapping, got {type(m).__name__}"
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                return None, f"messages[{i}].{key} must be text"
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["content"].strip() for m in out):
        return None, "messages have no content"
    return out, None


def _sampling(spec: WorkerSpec, overrides: dict[str, Any], rid: str) -> tuple[SamplingParams | None, str | None]:
    """SamplingParams for one row: the defaults, the row's non-null sampling cells, a derived seed."""
    values: dict[str, Any] = {"max_new_tokens": spec.max_new_tokens, "temperature": spec.temperature,
                              "top_k": spec.top_k, "top_p": spec.top_p, "seed": row_seed(spec.seed, rid)}
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"sampling {name} must be a number, got {type(value).__name__}"
        if isinstance(value, float) and math.isnan(value):
            return None, f"sampling {name} is NaN"
        if isinstance(value, float) and math.isinf(value):
            return None, f"sampling {name} is infinite"
        if name in _INT_PARAMS:
            if isinstance(value, float) and not value.is_integer():
                return None, f"sampling {name} must be an integer, got {value}"
            value = int(value)
        values[name] = value
    if not 0 <= values["seed"] <= _MAX_SEED:
        return None, f"sampling seed must be in [0, 2**63 - 1], got {values['seed']}"
    try:
        return SamplingParams(block_size=spec.block_size, **values), None
    except ValueError as err:
        return None, f"sampling {err}"


def parse_rows(batch: pa.Table, spec: WorkerSpec) -> list[Row]:
    """Read ids, shards, prompts and sampling cells; set `error` on rows that cannot run."""
    n = batch.num_rows
    paths = batch.column(RAY_PATH_COLUMN).to_pylist()
    hashes = batch.column(RAY_HASH_COLUMN).to_pylist()
    ids = batch.column(spec.id_column).to_pylist() if spec.id_column else [None] * n
    source = spec.prompt_column or spec.messages_column
    cells = batch.column(source).to_pylist()
    overrides = {name: batch.column(col).to_pylist() for name, col in spec.sampling_columns}
    rows = []
    for i in range(n):
        shard = ("s3://" + paths[i]) if spec.s3_input else paths[i]
        rid, error = default_id(shard, hashes[i]), None
        if spec.id_column:
            if ids[i] is None:
                error = "id is null"
            else:
                rid = str(ids[i])
        if spec.prompt_column:
            text, err = _prompt_value(cells[i])
            shown = cells[i] if isinstance(cells[i], str) or cells[i] is None else str(cells[i])
        else:
            text, err = _messages_value(cells[i])
            shown = cells[i] if isinstance(cells[i], str) or cells[i] is None else json.dumps(
                cells[i], ensure_ascii=False, default=str)
        row = Row(id=rid, shard=shard, row_hash=hashes[i], prompt=shown, error=error or err)
        if row.error is None and spec.duplicate_rows:
            row.error = spec.duplicate_rows.get(hashes[i])
        if row.error is None:
            row.params, row.error = _sampling(spec, {k: v[i] for k, v in overrides.items()}, rid)
        if row.error is None:
            if spec.prompt_column:
                row.text = text
            else:
                row.messages = text
        rows.append(row)
    return rows


def tokenize(rows: list[Row], spec: WorkerSpec, tokenizer: Tokenizer, max_model_len: int) -> None:
    """Chat-template and tokenise the good rows in one call; flag prompts that leave no room."""
    good = [r for r in rows if r.error is None]
    if not good:
        return
    if spec.chat_template:
        texts = []
        for r in good:
            messages = r.messages if spec.messages_column else [{"role": "user", "content": r.text}]
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                       enable_thinking=spec.enable_thinking))
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    else:
        encoded = tokenizer([r.text for r in good], add_special_tokens=True)["input_ids"]
    for r, ids in zip(good, encoded):
        r.token_ids = list(ids)
        if spec.too_long == "truncate":
            # Left-truncate: keep the end of the prompt (with the chat template, its last turn and the
            # assistant header) and make room for the row's max_new_tokens (at least one token).
            keep = max(1, max_model_len - r.params.max_new_tokens)
            if len(ids) > keep:
                r.token_ids = r.token_ids[-keep:]
        elif len(ids) + 1 > max_model_len:
            r.error = (f"prompt has {len(ids)} tokens; max_model_len {max_model_len} leaves room for at most "
                       f"{max_model_len - 1}")


def _histogram(lengths: Sequence[int]) -> list[int]:
    hist = [0] * (max(lengths) if lengths else 0)
    for n in lengths:
        hist[n - 1] += 1
    return hist


def build_table(rows: list[Row], results: dict[int, Result], completions: dict[int, str],
                engine_info: str, started_at: float, batch_info: str = "{}") -> pa.Table:
    """Output rows (BATCH_SCHEMA) in input order; `results` and `completions` are keyed by row index."""
    forwards = {i: r.stats.iterations + r.stats.diffusion_passes for i, r in results.items()}
    cols: dict[str, list[Any]] = {name: [] for name, _ in ROW_FIELDS}
    for i, row in enumerate(rows):
        res = results.get(i)
        cols["id"].append(row.id)
        cols["shard"].append(row.shard)
        cols["prompt"].append(row.prompt)
        cols["error"].append(row.error)
        if res is None:
            for name in ("completion", "completion_token_ids", "num_prompt_tokens", "num_completion_tokens",
                         "finish_reason", "iterations", "diffusion_passes", "forward_passes", "drafted_tokens",
                         "accepted_tokens", "mean_acceptance_length", "acceptance_histogram", "engine_seconds"):
                cols[name].append(None)
            continue
        s = res.stats
        cols["completion"].append(completions[i])
        cols["completion_token_ids"].append(list(res.token_ids))
        cols["num_prompt_tokens"].append(len(row.token_ids or []))
        cols["num_completion_tokens"].append(len(res.token_ids))
        cols["finish_reason"].append(res.finish_reason)
        cols["iterations"].append(s.iterations)
        cols["diffusion_passes"].append(s.diffusion_passes)
        cols["forward_passes"].append(forwards[i])
        cols["drafted_tokens"].append(s.drafted_tokens)
        cols["accepted_tokens"].append(s.accepted_tokens)
        cols["mean_acceptance_length"].append(s.mean_acceptance_length)
        cols["acceptance_histogram"].append(_histogram(s.acceptance_lengths))
        cols["engine_seconds"].append(s.engine_seconds)
    n = len(rows)
    cols["worker"] = [worker_name()] * n
    cols["_row_hash"] = [r.row_hash for r in rows]
    cols["_engine"] = [engine_info] * n
    cols["_started_at"] = [started_at] * n
    cols["_finished_at"] = [time.time()] * n
    cols["_batch"] = [batch_info] * n
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
                                 spec.mode, oom_errors, on_oom)
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
    """The `_engine` cell: facts the driver reports in summary.json (device, model, dtype)."""
    facts.setdefault("pid", os.getpid())
    return json.dumps(facts, sort_keys=True)
