"""A deterministic row sample of a job's input, written as Parquet shards both compare runs read.

Both modes must see exactly the same rows, so the sample is chosen once, from row counts alone
(Parquet footers: no data is read to choose), by a seeded generator: the same input, size and
seed give the same rows on every machine. Each source shard with sampled rows becomes one sample
file named after it, so per-shard figures can be reported under the source shard.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.outputs import shard_prefix
from pipeline.shards import Shard
from pipeline.storage import Location, locate


@dataclass(frozen=True)
class Sample:
    """Where the sample went and which source shard each sample file stands for."""

    uri: str  # the folder to use as input.path
    source_of: dict[str, str]  # sample file URI -> source shard URI
    rows: int


def choose_rows(counts: list[int], n: int, seed: int) -> list[np.ndarray]:
    """Sorted row indices to take from each shard: `n` distinct rows of sum(counts), seeded.

    Args:
        counts: rows per shard, in shard order.
        n: rows to sample (all rows when n >= the total).
        seed: the generator's seed.
    Returns:
        One sorted index array per shard (empty where the shard gets no rows).
    """
    total = int(sum(counts))
    picks = np.arange(total) if n >= total else np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
    bounds = np.cumsum([0] + list(counts))
    return [picks[(picks >= lo) & (picks < hi)] - lo for lo, hi in zip(bounds[:-1], bounds[1:])]


def write_sample(shards: list[Shard], columns: list[str], n: int, seed: int, dest: str) -> Sample:
    """Write `n` sampled rows of `shards` (only `columns`) under `dest`, replacing an earlier sample.

    Args:
        shards: the job's input shards (pipeline.shards.list_shards).
        columns: the input columns the job reads.
        n: sample size.
        seed: sampling seed.
        dest: a local folder or s3:// prefix that every Ray worker can read.
    Returns:
        The Sample (its `uri` becomes both runs' input.path).
    """
    loc = locate(dest)
    fs = loc.filesystem
    if fs.get_file_info(loc.fs_path).type == pafs.FileType.Directory:
        fs.delete_dir(loc.fs_path)
    fs.create_dir(loc.fs_path, recursive=True)
    src_loc = locate(shards[0].uri) if shards else loc
    source_of: dict[str, str] = {}
    rows = 0
    for shard, idx in zip(shards, choose_rows([s.num_rows for s in shards], n, seed)):
        if not len(idx):
            continue
        with src_loc.filesystem.open_input_file(shard.fs_path) as f:
            table = pq.read_table(f, columns=columns).take(idx)
        target: Location = loc.child(f"{shard_prefix(shard.uri)}.parquet")
        with fs.open_output_stream(target.fs_path) as f:
            pq.write_table(table, f)
        source_of[target.uri] = shard.uri
        rows += table.num_rows
    return Sample(uri=loc.uri, source_of=source_of, rows=rows)
