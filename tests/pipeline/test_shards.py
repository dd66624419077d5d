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
