"""Input rows -> engine requests: read and check each cell, sampling settings, chat template, tokens.

Pure Python over pyarrow (no torch), so it is tested with a fake engine (tests/workers/test_input_rows.py).
A bad row never fails the batch: it gets `error` set and never reaches the engine, and the other
rows run (cf. ray-project/ray#59194, where one over-long prompt killed a whole job).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from workers.params import SamplingParams
from workers.schema import RAY_HASH_COLUMN, RAY_PATH_COLUMN
from workers.spec import WorkerSpec

_INT_PARAMS = ("max_new_tokens", "top_k", "seed")
_MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


class Tokenizer(Protocol):
    def __call__(self, texts: list[str], add_special_tokens: bool = ...) -> Any: ...
    def apply_chat_template(self, messages: list[dict], **kwargs: Any) -> Any: ...
    def batch_decode(self, ids: list[list[int]], skip_special_tokens: bool = ...) -> list[str]: ...


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
    """SamplingParams for one row: the job's defaults, the row's non-null sampling cells, a derived seed."""
    values: dict[str, Any] = {"seed": row_seed(spec.sampling.seed or 0, rid)}
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
        return dataclasses.replace(spec.sampling, block_size=spec.engine.block_size, **values), None
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
