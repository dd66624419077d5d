"""The output folder: outputs/ (one Parquet file per batch and shard), stats/, summary.json.

Files are named `<shard stem>-<shard hash>-<rows hash>.parquet`: all of one shard's files share a
prefix (so a shard's outputs can be found, counted or dropped on their own: the unit that
per-shard commits and resume work on), and the name is a hash of the input rows it holds, so a
retried task rewrites the same file instead of adding a duplicate. Local files are written under
a temporary name and renamed, so a crash never leaves a half-written file with a final name (an
S3 object appears only when its upload completes).

Resume (`output.resume`, issue 6) works per shard. When the driver has seen every row of a shard
written, it writes `done/<shard prefix>.json` with the shard's figures. A rerun keeps the shards
that have a marker (and their figures) and runs the others again after deleting whatever files
they left in outputs/, so every input row ends up in exactly one file. `job.json`, written before
any work, holds the settings that decide a row's output; a resume with other settings is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.shards import CREDENTIALS_HINT
from pipeline.stats import ShardStats, partial_stats
from pipeline.storage import Location, locate
from workers.schema import OUTPUT_SCHEMA, ROW_HASH

OUTPUTS_DIR = "outputs"
STATS_DIR = "stats"
SHARDS_FILE = "stats/shards.parquet"
SUMMARY_FILE = "summary.json"
DONE_DIR = "done"
JOB_FILE = "job.json"


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
        digest = hashlib.sha1(part.column(ROW_HASH).to_numpy().tobytes()).hexdigest()[:16]
        part = part.select(OUTPUT_SCHEMA.names)
        _write_parquet(fs, f"{out.fs_path}/{shard_prefix(shard)}-{digest}.parquet", part, not out.is_s3)
        files[shard] = 1
    return partial_stats(batch, files)


def prepare_output(uri: str, overwrite: bool, resume: bool = False, job: dict[str, Any] | None = None) -> Location:
    """Create the output folder; refuse (or, with overwrite, clear) earlier results in it.

    Args:
        uri: output.path.
        overwrite: delete earlier outputs/, stats/, done/, job.json and summary.json first.
        resume: keep earlier results (see the module docstring); `job` must match job.json.
        job: the settings that decide a row's output (pipeline.config.resume_key), written to job.json.
    Raises:
        OutputError: earlier results without overwrite or resume, a resume of a different job, or a
            store that refuses access (checked by writing job.json, before any GPU time).
    """
    loc = output_location(uri)
    fs = loc.filesystem
    outputs = loc.child(OUTPUTS_DIR)
    hint = f"; {CREDENTIALS_HINT}" if loc.is_s3 else ""
    try:
        existing = fs.get_file_info(pafs.FileSelector(outputs.fs_path, recursive=True, allow_not_found=True))
    except OSError as err:
        raise OutputError(f"output.path {loc.uri}: cannot list ({err}){hint}") from None
    earlier = [i for i in existing if i.type == pafs.FileType.File]
    if earlier and not (overwrite or resume):
        raise OutputError(f"output.path {loc.uri}: {OUTPUTS_DIR}/ already holds {len(earlier)} files from an "
                          f"earlier run; set output.overwrite=true or choose another path (output.resume=true "
                          f"finishes that run)")
    if overwrite:
        for name in (OUTPUTS_DIR, STATS_DIR, DONE_DIR):
            if fs.get_file_info(loc.child(name).fs_path).type == pafs.FileType.Directory:
                fs.delete_dir(loc.child(name).fs_path)
        for name in (SUMMARY_FILE, JOB_FILE):
            if fs.get_file_info(loc.child(name).fs_path).type == pafs.FileType.File:
                fs.delete_file(loc.child(name).fs_path)
    if resume and job is not None:
        _check_same_job(loc, job)
    try:
        for name in (OUTPUTS_DIR, STATS_DIR, DONE_DIR):
            fs.create_dir(loc.child(name).fs_path, recursive=True)
        if job is not None:
            write_json(loc.child(JOB_FILE), job)
    except OSError as err:
        raise OutputError(f"output.path {loc.uri}: cannot write ({err}){hint}") from None
    return loc


def output_location(uri: str) -> Location:
    """output.path parsed; a local path that is a file (or inside one) is refused, naming it."""
    try:
        loc = locate(uri)
    except ValueError as err:
        raise OutputError(f"output.path: {err}") from None
    if not loc.is_s3:
        path = loc.fs_path
        while path and not os.path.exists(path):
            path = os.path.dirname(path) if os.path.dirname(path) != path else ""
        if path and not os.path.isdir(path):
            where = "is a file" if path == loc.fs_path else f"is inside {path}, which is a file"
            raise OutputError(f"output.path {loc.uri} {where}, not a folder; choose a folder for the job's results")
    return loc


def _check_same_job(loc: Location, job: dict[str, Any]) -> None:
    target = loc.child(JOB_FILE)
    if loc.filesystem.get_file_info(target.fs_path).type != pafs.FileType.File:
        return  # nothing ran here yet (or a run from before job.json existed): nothing to compare
    with loc.filesystem.open_input_stream(target.fs_path) as f:
        earlier = json.loads(f.read())
    before, now = _flatten(earlier), _flatten(job)
    diffs = [f"{key} ({before.get(key, '-')!r} then, {now.get(key, '-')!r} now)"
             for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    if diffs:
        raise OutputError(f"output.path {loc.uri}: output.resume continues the same job, but "
                          f"{'; '.join(diffs)} differ from the earlier run's {JOB_FILE}; set output.overwrite=true "
                          f"or choose another path")


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: a refused resume names the exact keys that differ."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict) and item:
            out.update(_flatten(item, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = item
    return out


def write_json(target: Location, value: Any) -> None:
    with target.filesystem.open_output_stream(target.fs_path) as f:
        f.write(json.dumps(value, indent=2).encode() + b"\n")


def mark_done(loc: Location, stats: ShardStats) -> None:
    """done/<shard prefix>.json: the shard is complete; its figures, for a resume's stats and summary."""
    write_json(loc.child(DONE_DIR, f"{shard_prefix(stats.shard)}.json"), asdict(stats))


def load_done(loc: Location, shards: dict[str, int]) -> dict[str, ShardStats]:
    """Completed shards of an earlier run: {uri: figures}, for input shards whose row count still matches."""
    fs = loc.filesystem
    infos = fs.get_file_info(pafs.FileSelector(loc.child(DONE_DIR).fs_path, allow_not_found=True))
    done: dict[str, ShardStats] = {}
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.endswith(".json"):
            continue
        with fs.open_input_stream(info.path) as f:
            text = f.read()
        try:
            stats = ShardStats(**json.loads(text))
        except (ValueError, TypeError):  # cut short (Ctrl-C or a crash while writing it): rerun the shard
            continue
        if shards.get(stats.shard) == stats.input_rows and stats.complete:
            done[stats.shard] = stats
    return done


def drop_partial(loc: Location, keep: set[str]) -> int:
    """Delete outputs/ files of every shard not in `keep` (and stray temporary files); returns the count."""
    fs = loc.filesystem
    outputs = loc.child(OUTPUTS_DIR)
    keep_prefixes = {shard_prefix(s) for s in keep}
    name = re.compile(r"(.+)-[0-9a-f]{16}\.parquet\Z")
    deleted = 0
    for info in fs.get_file_info(pafs.FileSelector(outputs.fs_path, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        m = name.match(info.base_name)
        if m is None or m.group(1) not in keep_prefixes:
            fs.delete_file(info.path)
            deleted += 1
    return deleted


def write_shard_stats(loc: Location, table: pa.Table) -> str:
    """stats/shards.parquet; returns its URI."""
    target = loc.child(SHARDS_FILE)
    _write_parquet(loc.filesystem, target.fs_path, table, not loc.is_s3)
    return target.uri
