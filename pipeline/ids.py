"""Duplicate ids: found in the driver before Ray starts, so the policy does not depend on batching.

Policy (`input.duplicate_ids: error`, the default): the first row with an id, in shard order and
then row order, runs; every later row with the same id gets `error` set and does not run. The
check reads only the id column of each shard (a Parquet column projection) and holds the ids in
one Arrow array, so its memory is about the ids' bytes; `duplicate_ids: allow` skips it.

Rows are told apart inside the actor by Ray's `row_hash` (read_parquet(include_row_hash=True)),
a function of the file path and the row's position that `ray_row_hash` computes the same way
(tests/pipeline/test_ids.py checks it against Ray's reader).
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.shards import Shard

_THREADS = 16
_MASK = (1 << 64) - 1


def ray_row_hash(fs_path: str, row: int) -> int:
    """Ray 2.60's row hash: splitmix64(md5(path)[:8] + row) (ray.data ... synthesized_columns)."""
    x = (int.from_bytes(hashlib.md5(fs_path.encode()).digest()[:8], "little") + row) & _MASK
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _ids(fs: pafs.FileSystem, shard: Shard, column: str) -> pa.Array:
    with fs.open_input_file(shard.fs_path) as f:
        col = pq.read_table(f, columns=[column]).column(column)
    return pc.cast(col, pa.string()).combine_chunks() if col.num_chunks else pa.array([], pa.string())


def find_duplicates(fs: pafs.FileSystem, shards: list[Shard], column: str) -> dict[int, str]:
    """{row hash: error} for every row whose id an earlier row already has.

    Args:
        fs: the input filesystem.
        shards: the job's shards, in the order that decides which row is first.
        column: input.id_column.
    Returns:
        The rows to refuse, keyed by Ray's row hash, with the message their `error` gets.
    """
    if not shards:
        return {}
    with ThreadPoolExecutor(max_workers=min(_THREADS, len(shards))) as pool:
        per_shard = list(pool.map(lambda s: _ids(fs, s, column), shards))
    ids = pa.chunked_array(per_shard, pa.string())
    counts = pc.value_counts(ids.drop_null() if ids.null_count else ids)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return {}
    first: dict[str, str] = {}
    out: dict[int, str] = {}
    for shard, col in zip(shards, per_shard):  # shard order, then row order
        rows = np.flatnonzero(pc.is_in(col, value_set=repeated).to_numpy(zero_copy_only=False))
        for row, rid in zip(rows.tolist(), col.take(pa.array(rows, pa.int64())).to_pylist()):
            where = f"row {row} of {shard.uri}"
            if rid in first:
                out[ray_row_hash(shard.fs_path, row)] = f"duplicate id {rid!r}: {first[rid]} has it first"
            else:
                first[rid] = where
    return out
