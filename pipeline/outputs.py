"""The output folder: outputs/ (one Parquet file per batch and shard), stats/, summary.json.

Files are named `<shard stem>-<shard hash>-<rows hash>.parquet`: all of one shard's files share a
prefix (so a shard's outputs can be found, counted or dropped on their own: the unit that
per-shard commits and resume work on), and the name is a hash of the input rows it holds, so a
retried task rewrites the same file instead of adding a duplicate. Local files are written under
a temporary name and renamed, so a crash never leaves a half-written file with a final name.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.stats import partial_stats
from pipeline.storage import Location, locate
from workers.rows import OUTPUT_SCHEMA

OUTPUTS_DIR = "outputs"
STATS_DIR = "stats"
SHARDS_FILE = "stats/shards.parquet"
SUMMARY_FILE = "summary.json"


class OutputError(ValueError):
    """The output path cannot be used as asked."""


def shard_prefix(shard: str) -> str:
    """`<file stem>-<8 hex of the full URI>`: readable, and unique even when stems repeat."""
    stem = shard.rsplit("/", 1)[-1].removesuffix(".parquet")
    return f"{stem}-{hashlib.sha1(shard.encode()).hexdigest()[:8]}"


def _write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table, local: bool) -> None:
    if not local:
        with fs.open_output_stream(path) as f:
            pq.write_table(table, f)
        return
    folder, name = path.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"  # a leading dot: Parquet readers skip it
    with fs.open_output_stream(tmp) as f:
        pq.write_table(table, f)
    fs.move(tmp, path)


def commit_batch(batch: pa.Table, output_uri: str) -> pa.Table:
    """Ray task: write one actor batch under outputs/ (a file per shard) and return its partial stats.

    Args:
        batch: actor output (BATCH_SCHEMA).
        output_uri: the job's output.path.
    Returns:
        PARTIAL_SCHEMA rows, one per shard in the batch; only these small rows reach the driver.
    """
    out = locate(output_uri).child(OUTPUTS_DIR)
    fs = out.filesystem
    files: dict[str, int] = {}
    for shard in pc.unique(batch.column("shard")).to_pylist():
        part = batch.filter(pc.equal(batch.column("shard"), shard))
        digest = hashlib.sha1(part.column("_row_hash").to_numpy().tobytes()).hexdigest()[:16]
        part = part.select(OUTPUT_SCHEMA.names)
        _write_parquet(fs, f"{out.fs_path}/{shard_prefix(shard)}-{digest}.parquet", part, not out.is_s3)
        files[shard] = 1
    return partial_stats(batch, files)


def prepare_output(uri: str, overwrite: bool) -> Location:
    """Create the output folder; refuse (or, with overwrite, clear) earlier results in it."""
    loc = locate(uri)
    fs = loc.filesystem
    outputs = loc.child(OUTPUTS_DIR)
    existing = fs.get_file_info(pafs.FileSelector(outputs.fs_path, recursive=True, allow_not_found=True))
    earlier = [i for i in existing if i.type == pafs.FileType.File]
    if earlier and not overwrite:
        raise OutputError(f"output.path {loc.uri}: {OUTPUTS_DIR}/ already holds {len(earlier)} files from an "
                          f"earlier run; set output.overwrite=true or choose another path")
    if overwrite:
        for name in (OUTPUTS_DIR, STATS_DIR):
            if fs.get_file_info(loc.child(name).fs_path).type == pafs.FileType.Directory:
                fs.delete_dir(loc.child(name).fs_path)
        if fs.get_file_info(loc.child(SUMMARY_FILE).fs_path).type == pafs.FileType.File:
            fs.delete_file(loc.child(SUMMARY_FILE).fs_path)
    fs.create_dir(outputs.fs_path, recursive=True)
    fs.create_dir(loc.child(STATS_DIR).fs_path, recursive=True)
    return loc


def write_shard_stats(loc: Location, table: pa.Table) -> str:
    """stats/shards.parquet; returns its URI."""
    target = loc.child(SHARDS_FILE)
    _write_parquet(loc.filesystem, target.fs_path, table, not loc.is_s3)
    return target.uri


def write_summary(loc: Location, summary: dict[str, Any]) -> str:
    """summary.json; returns its URI."""
    target = loc.child(SUMMARY_FILE)
    with loc.filesystem.open_output_stream(target.fs_path) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=False).encode() + b"\n")
    return target.uri
