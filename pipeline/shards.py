"""Input shards: every Parquet file the job's `input.path` names, checked before any GPU time.

A shard is one input file. Its identity travels with each row (Ray's `path` column), because
Ray Data may read several small files into one block: block boundaries say nothing about files.
The row count of every shard comes from its Parquet footer, so the driver knows when a shard is
complete without holding its rows (the hook that per-shard commits and resume build on).
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.columns import Role, messages_kind, type_problem
from pipeline.storage import Location, locate, uri_of

_GLOB_CHARS = re.compile(r"[*?\[]")
_METADATA_THREADS = 16
CREDENTIALS_HINT = ("check the AWS settings (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
                    "AWS_ENDPOINT_URL)")
_ACCESS_ERRORS = ("ACCESS_DENIED", "SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "AccessDenied",
                  "NETWORK_CONNECTION", "Access Denied")


class InputError(ValueError):
    """Input that cannot be read; the message names the path or file and what is wrong."""


@dataclass(frozen=True)
class BadFile:
    """An input file that cannot be a shard, and why (skipped with input.on_bad_file=skip)."""

    uri: str
    reason: str


@dataclass(frozen=True)
class Shard:
    """One input file."""

    uri: str  # what the `shard` output column holds: /abs/path.parquet or s3://bucket/key
    fs_path: str  # the same file for pyarrow / Ray (no scheme)
    num_rows: int
    schema: pa.Schema | None = field(default=None, compare=False, repr=False)  # from the footer


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Shell-style glob over '/'-separated paths: `*` and `?` stay inside one folder, `**/` spans any."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _is_data_file(path: str) -> bool:
    """Skip Spark/Hadoop markers and hidden files that directory listings often hold."""
    name = path.rsplit("/", 1)[-1]
    return not name.startswith(("_", ".")) and name.endswith(".parquet")


def _list_files(loc: Location) -> list[str]:
    fs = loc.filesystem
    m = _GLOB_CHARS.search(loc.fs_path)
    if m:
        base = loc.fs_path[: m.start()].rsplit("/", 1)[0] or "/"
        regex = _glob_regex(loc.fs_path)
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return [i.path for i in infos if i.type == pafs.FileType.File and regex.match(i.path)]
    info = fs.get_file_info(loc.fs_path)
    if info.type == pafs.FileType.File:
        return [info.path]
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(loc.fs_path, recursive=True))
        return [i.path for i in infos if i.type == pafs.FileType.File and _is_data_file(i.path)]
    return []


def _inspect(fs: pafs.FileSystem, fs_path: str, uri: str, required: tuple[str, ...],
             roles: dict[str, Role]) -> Shard | BadFile:
    """Read one footer: row count, columns and their types; a BadFile says what is wrong with the file."""
    try:
        with fs.open_input_file(fs_path) as f:
            if f.size() == 0:
                return BadFile(uri, "empty file (0 bytes)")
            meta = pq.read_metadata(f)
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing to the user
        if _is_access_error(err):
            raise InputError(f"shard {uri}: cannot read ({err}); {CREDENTIALS_HINT}") from None
        return BadFile(uri, f"not a readable Parquet file ({type(err).__name__}: {err})")
    schema = meta.schema.to_arrow_schema()
    missing = [c for c in (*required, *roles) if c not in schema.names]
    if missing:
        return BadFile(uri, f"no column {missing[0]!r} (columns: {', '.join(schema.names) or 'none'})")
    for column, role in roles.items():
        problem = type_problem(column, role, schema.field(column).type)
        if problem:
            return BadFile(uri, problem)
    return Shard(uri=uri, fs_path=fs_path, num_rows=meta.num_rows, schema=schema)


def _same_messages_kind(found: list[Shard | BadFile], roles: dict[str, Role]) -> list[Shard | BadFile]:
    """A messages column must be text in every file or a list in every file: the first good file decides."""
    column = next((c for c, r in roles.items() if r == "messages"), None)
    if column is None:
        return found
    first: Shard | None = None
    out: list[Shard | BadFile] = []
    for f in found:
        kind = messages_kind(f.schema.field(column).type) if isinstance(f, Shard) else None
        if kind is not None and first is None:
            first = f
        elif kind is not None and kind != messages_kind(first.schema.field(column).type):
            f = BadFile(f.uri, f"column {column!r} is {f.schema.field(column).type} here but "
                               f"{first.schema.field(column).type} in {first.uri}")
        out.append(f)
    return out


def _is_access_error(err: Exception) -> bool:
    """Errors of the store (credentials, permissions, network), not of the file: never skipped."""
    text = str(err)
    return isinstance(err, PermissionError) or any(code in text for code in _ACCESS_ERRORS)


def list_shards(path: str, required_columns: list[str] | tuple[str, ...] = ()) -> list[Shard]:
    """All Parquet files under `path`, sorted, with row counts; any bad file is an error.

    See `scan_shards`; this is `scan_shards(..., on_bad_file="error")[0]`.
    """
    return scan_shards(path, required_columns)[0]


def scan_shards(path: str, required_columns: list[str] | tuple[str, ...] = (),
                on_bad_file: str = "error", roles: dict[str, Role] | None = None) -> tuple[list[Shard], list[BadFile]]:
    """All Parquet files under `path` (file, folder, glob or s3:// prefix), sorted, with row counts.

    Args:
        path: the job's `input.path`.
        required_columns: columns every shard must have (prompt, id, sampling columns).
        on_bad_file: "error" (raise on the first bad file) or "skip" (return bad files apart).
        roles: column -> role (pipeline/columns.py); a column of a type its role cannot take makes
            the file bad, so mixed types across files never reach Ray.
    Returns:
        (one Shard per good file, one BadFile per skipped file), both sorted by path.
    Raises:
        InputError: nothing matches or the store refuses access (credentials); a bad file with
            on_bad_file="error"; no good file left with "skip".
    """
    try:
        loc = locate(path)
    except ValueError as err:
        raise InputError(f"input.path: {err}") from None
    try:
        files = sorted(set(_list_files(loc)))
    except OSError as err:
        hint = f"; {CREDENTIALS_HINT}" if _is_access_error(err) else ""
        raise InputError(f"input.path {path!r}: cannot list ({err}){hint}") from None
    if not files:
        raise InputError(f"input.path {path!r}: no Parquet files match")
    fs = loc.filesystem
    required, roles = tuple(required_columns), dict(roles or {})
    with ThreadPoolExecutor(max_workers=min(_METADATA_THREADS, len(files))) as pool:
        found = list(pool.map(lambda p: _inspect(fs, p, uri_of(p, loc.is_s3), required, roles), files))
    found = _same_messages_kind(found, roles)
    shards = [f for f in found if isinstance(f, Shard)]
    bad = [f for f in found if isinstance(f, BadFile)]
    if bad and on_bad_file != "skip":
        more = f"; {len(bad) - 1} more bad file(s)" if len(bad) > 1 else ""
        raise InputError(f"shard {bad[0].uri}: {bad[0].reason}{more} (input.on_bad_file=skip skips bad files)")
    if not shards:
        raise InputError(f"input.path {path!r}: none of the {len(files)} Parquet file(s) is usable, e.g. "
                         f"{bad[0].uri}: {bad[0].reason}")
    return shards, bad
