"""The row contract: the columns an actor returns, what outputs/ keeps, and Ray's own columns.

One home for every column name the two sides share: the actor builds rows to BATCH_SCHEMA
(workers/batch.py), the commit task writes OUTPUT_SCHEMA and reduces the rest to partial stats
(pipeline/outputs.py, pipeline/stats.py), compare reads OUTPUT_SCHEMA back (pipeline/compare.py).
Adding an output column is one line in ROW_FIELDS; the null-fill list and the per-row sums follow.

Per-row figures (the engine's RequestStats, workers/params.py; formulas in workers/metrics.py):
  iterations       verify (AR) forwards the row took part in; in AR mode one per token
  diffusion_passes diffusion (draft) forwards: one per Orthrus iteration (K > 1); 0 in AR mode
  forward_passes   iterations + diffusion_passes
  drafted_tokens   draft tokens proposed: K - 1 per Orthrus iteration
  acceptance_histogram[i]  iterations that committed i + 1 tokens
  engine_seconds   the row's share of the engine's busy time: the engine serves several batches at
                   once, so a batch's wall time is no row's cost
  completion_token_ids  the generated token ids (what `completion` decodes); `orthrus-batch compare`
                   checks AR and Orthrus outputs token for token with them
  worker           `<host>:<pid>` of the actor that ran the row (which engine, for data-parallel
                   checks and per-worker figures)
  loops            1 when the completion loops: a unit of <= 32 tokens repeating back to back over
                   more than 64 tokens (half the row's max_new_tokens when that is shorter)
"""
from __future__ import annotations

import pyarrow as pa

_TEXT, _COUNT, _SECONDS = pa.string(), pa.int64(), pa.float64()
ROW_FIELDS: list[tuple[str, pa.DataType]] = [
    ("id", _TEXT), ("shard", _TEXT), ("prompt", _TEXT),  # which row
    ("completion", _TEXT), ("completion_token_ids", pa.list_(pa.int32())),  # what it generated
    ("num_prompt_tokens", _COUNT), ("num_completion_tokens", _COUNT),
    ("finish_reason", _TEXT), ("error", _TEXT),
    # how it decoded: counts (summed per shard), then per-row figures
    ("iterations", _COUNT), ("diffusion_passes", _COUNT), ("forward_passes", _COUNT),
    ("drafted_tokens", _COUNT), ("accepted_tokens", _COUNT),
    ("mean_acceptance_length", pa.float64()), ("acceptance_histogram", pa.list_(pa.int64())),
    ("engine_seconds", _SECONDS), ("worker", _TEXT),
    ("loops", _COUNT),  # 1 when the completion repeats a unit back to back (workers/metrics.loops), else 0
]
OUTPUT_SCHEMA = pa.schema(ROW_FIELDS)

# Batch-level facts the commit stage needs for per-shard stats; dropped before writing.
ROW_HASH = "_row_hash"  # Ray's hash of (file path, row position): unique per input row
ENGINE = "_engine"  # JSON: the actor's static facts (device, model_dir, dtype, is_orthrus, block_size, pid)
STARTED_AT = "_started_at"  # unix time the batch reached the actor
FINISHED_AT = "_finished_at"  # unix time its rows were built
BATCH = "_batch"  # JSON: the engine's state as the batch ended (K choice, GPU memory, KV pool)
INTERNAL_FIELDS: list[tuple[str, pa.DataType]] = [
    (ROW_HASH, pa.uint64()), (ENGINE, _TEXT), (STARTED_AT, _SECONDS), (FINISHED_AT, _SECONDS), (BATCH, _TEXT),
]
BATCH_SCHEMA = pa.schema(ROW_FIELDS + INTERNAL_FIELDS)

RAY_PATH_COLUMN = "path"  # read_parquet(include_paths=True)
RAY_HASH_COLUMN = "row_hash"  # read_parquet(include_row_hash=True)

# Every row has these, run or not; every other output column is a result, null on a row that did
# not run (an error).
ROW_KEYS = ("id", "shard", "prompt", "error", "worker")
RESULT_COLUMNS = tuple(name for name, _ in ROW_FIELDS if name not in ROW_KEYS)
# Every integer result is a count that adds up over rows: row column -> the per-shard figure
# (`num_prompt_tokens` -> `prompt_tokens`).
ROW_SUMS = {name: name.removeprefix("num_") for name, t in ROW_FIELDS if t == _COUNT}
