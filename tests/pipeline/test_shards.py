"""Listing input shards: file, folder, glob; row counts from footers; errors that name the file."""
from __future__ import annotations

import pytest

from pipeline.shards import InputError, list_shards, scan_shards
from pipeline.storage import locate, uri_of


def test_folder_file_and_glob(write_shards):
    root = write_shards({"a.parquet": {"prompt": ["x", "y"]}, "sub/b.parquet": {"prompt": ["z"]},
                         "_SUCCESS.parquet": {"prompt": ["marker"]}, "c.parquet": {"prompt": []}})
    (root / "notes.txt").write_text("not data")
    shards = list_shards(str(root), ["prompt"])
    assert [(s.uri, s.num_rows) for s in shards] == [
        (f"{root}/a.parquet", 2), (f"{root}/c.parquet", 0), (f"{root}/sub/b.parquet", 1)]
    assert [s.uri for s in list_shards(f"{root}/a.parquet")] == [f"{root}/a.parquet"]
    assert [s.uri for s in list_shards(f"{root}/*.parquet")] == [
        f"{root}/_SUCCESS.parquet", f"{root}/a.parquet", f"{root}/c.parquet"]
    assert [s.uri for s in list_shards(f"{root}/**/b.parquet")] == [f"{root}/sub/b.parquet"]
    assert [s.uri for s in list_shards(f"{root}/[ab].parquet")] == [f"{root}/a.parquet"]


def test_nothing_matches(tmp_path):
    with pytest.raises(InputError, match=r"^input.path '.*/missing': no Parquet files match$"):
        list_shards(str(tmp_path / "missing"))
    with pytest.raises(InputError, match=r"^input.path '.*/\*.parquet': no Parquet files match$"):
        list_shards(str(tmp_path / "*.parquet"))
    with pytest.raises(InputError, match=r"^input.path: 'http://x/y': only local paths and s3:// URIs"):
        list_shards("http://x/y")


def test_corrupt_file_and_missing_column_name_the_file(write_shards, tmp_path):
    root = write_shards({"good.parquet": {"text": ["a"]}})
    with pytest.raises(InputError) as err:
        list_shards(str(root), ["prompt"])
    assert str(err.value) == (f"shard {root}/good.parquet: no column 'prompt' (columns: text) "
                              f"(input.on_bad_file=skip skips bad files)")
    (root / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=rf"^shard {root}/bad.parquet: not a readable Parquet file \("):
        list_shards(str(root), ["text"])


def test_bad_files_are_skipped_and_listed(write_shards):
    root = write_shards({"a.parquet": {"prompt": ["x"]}, "b.parquet": {"text": ["y"]},
                         "d.parquet": {"prompt": []}})
    (root / "c.parquet").write_bytes(b"PAR1 truncated")
    (root / "e.parquet").write_bytes(b"")
    with pytest.raises(InputError) as err:
        scan_shards(str(root), ["prompt"])
    assert str(err.value) == (f"shard {root}/b.parquet: no column 'prompt' (columns: text); 2 more bad file(s) "
                              f"(input.on_bad_file=skip skips bad files)")
    shards, bad = scan_shards(str(root), ["prompt"], on_bad_file="skip")
    assert [(s.uri, s.num_rows) for s in shards] == [(f"{root}/a.parquet", 1), (f"{root}/d.parquet", 0)]
    assert [b.uri for b in bad] == [f"{root}/b.parquet", f"{root}/c.parquet", f"{root}/e.parquet"]
    assert bad[0].reason == "no column 'prompt' (columns: text)"
    assert bad[1].reason.startswith("not a readable Parquet file (ArrowInvalid: ")
    assert bad[2].reason == "empty file (0 bytes)"


def test_only_bad_files_is_an_error_even_when_skipping(write_shards):
    root = write_shards({"b.parquet": {"text": ["y"]}})
    with pytest.raises(InputError) as err:
        scan_shards(str(root), ["prompt"], on_bad_file="skip")
    assert str(err.value) == (f"input.path {str(root)!r}: none of the 1 Parquet file(s) is usable, e.g. "
                              f"{root}/b.parquet: no column 'prompt' (columns: text)")


def test_locations():
    s3 = locate("s3://bucket/prefix/")
    assert (s3.uri, s3.fs_path, s3.is_s3) == ("s3://bucket/prefix", "bucket/prefix", True)
    assert s3.child("outputs", "a.parquet").uri == "s3://bucket/prefix/outputs/a.parquet"
    assert uri_of("bucket/key.parquet", True) == "s3://bucket/key.parquet"
    local = locate("rel/dir")
    assert local.uri.endswith("/rel/dir") and local.uri.startswith("/") and not local.is_s3
    with pytest.raises(ValueError, match="names no bucket"):
        locate("s3://")


def test_column_types_are_decided_from_the_footers(write_shards):
    """Issue 13: an integer id or prompt in one file and text in another crashed Ray mid-job."""
    import pyarrow as pa

    from pipeline.columns import read_schema

    roles = {"prompt": "prompt", "key": "id", "temp": "sampling", "n": "sampling"}
    root = write_shards({
        "a.parquet": {"key": ["x", "y"], "prompt": ["p", "q"], "temp": [0.5, 0.0], "n": [1, 2]},
        "b.parquet": {"key": [7, 8], "prompt": ["r", None], "temp": [0, 1], "n": [3, None]},
        "c.parquet": pa.table({"key": pa.array([None], pa.null()), "prompt": pa.array([None], pa.null()),
                               "temp": pa.array([None], pa.null()), "n": pa.array([4], pa.int32())}),
        "d.parquet": {"key": ["z"], "prompt": [5], "temp": [0.0], "n": [1]},
        "e.parquet": {"key": ["w"], "prompt": ["s"], "temp": ["hot"], "n": [1]},
        "f.parquet": {"key": [[1, 2]], "prompt": ["t"], "temp": [0.0], "n": [1]},
    })
    with pytest.raises(InputError) as err:
        scan_shards(str(root), (), roles=roles)
    assert str(err.value) == (f"shard {root}/d.parquet: column 'prompt' is int64, not text; 2 more bad file(s) "
                              f"(input.on_bad_file=skip skips bad files)")
    shards, bad = scan_shards(str(root), (), "skip", roles)
    assert [s.uri for s in shards] == [f"{root}/a.parquet", f"{root}/b.parquet", f"{root}/c.parquet"]
    assert [(b.uri, b.reason) for b in bad] == [
        (f"{root}/d.parquet", "column 'prompt' is int64, not text"),
        (f"{root}/e.parquet", "column 'temp' is string, not a number"),
        (f"{root}/f.parquet", "column 'key' is list<element: int64>; ids must be text, numbers or other single "
                              "values")]
    schema = read_schema(roles, [{c: s.schema.field(c).type for c in roles} for s in shards])
    assert schema == pa.schema([("prompt", pa.string()), ("key", pa.string()), ("temp", pa.float64()),
                                ("n", pa.int64())])


def test_messages_files_must_agree_on_text_or_list(write_shards):
    msgs = [{"role": "user", "content": "hi"}]
    root = write_shards({"a.parquet": {"m": ['[{"role": "user", "content": "hi"}]']}, "b.parquet": {"m": [msgs]},
                         "c.parquet": {"m": [3]}})
    shards, bad = scan_shards(str(root), (), "skip", {"m": "messages"})
    assert [s.uri for s in shards] == [f"{root}/a.parquet"]
    assert [(b.uri, b.reason) for b in bad] == [
        (f"{root}/b.parquet", f"column 'm' is list<element: struct<role: string, content: string>> here but string "
                              f"in {root}/a.parquet"),
        (f"{root}/c.parquet", "column 'm' is int64, not text or a list of {role, content}")]
