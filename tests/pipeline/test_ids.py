"""Duplicate ids found in the driver: the first row runs, later rows are named by Ray's row hash."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.ids import find_duplicates, ray_row_hash
from pipeline.shards import list_shards


def test_row_hash_matches_rays_reader():
    from ray.data._internal.datasource_v2.common.synthesized_columns import _compute_row_hashes

    for path in ("/data/a.parquet", "bucket/prefix/part-00001.parquet"):
        assert [ray_row_hash(path, i) for i in range(5, 9)] == [int(h) for h in _compute_row_hashes(path, 5, 4)]


def test_later_duplicates_across_and_within_shards(write_shards):
    root = write_shards({"a.parquet": {"key": ["x", "y", "x", None]},
                         "b.parquet": pa.table({"key": pa.array([7, 8], pa.int64())}),
                         "c.parquet": {"key": ["y", "7", "z"]}})
    shards = list_shards(str(root), ["key"])
    a, c = (f"{root}/a.parquet", f"{root}/c.parquet")
    assert find_duplicates(pafs.LocalFileSystem(), shards, "key") == {
        ray_row_hash(a, 2): f"duplicate id 'x': row 0 of {a} has it first",
        ray_row_hash(c, 0): f"duplicate id 'y': row 1 of {a} has it first",
        ray_row_hash(c, 1): f"duplicate id '7': row 0 of {root}/b.parquet has it first",  # ids compare as text
    }
    assert find_duplicates(pafs.LocalFileSystem(), shards[2:], "key") == {}
