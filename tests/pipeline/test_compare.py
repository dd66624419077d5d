"""compare's figures on hand-built runs, where every expected number can be worked out by hand.

Rows (shard S1: a, b, c; shard S2: d, e):
  a  equal          [1, 2, 3]      AR 0.3 s, Orthrus 0.1 s  -> row speedup 3
  b  different      [1, 2, 3, 4] vs [1, 2, 9, 4]: first difference at token 2 (3 vs 9)
  c  error in both  (not compared)
  d  different      [5, 6] vs [5, 6, 7]: a prefix, so the difference is at 2 (AR has no token there)
  e  equal          [7]
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.compare import (ALL, Billing, equality, first_difference, first_differences, join_rows, shard_table,
                              workers_per_mode)
from pipeline.sample import choose_rows, write_sample
from pipeline.shards import list_shards


def rows(mode: str) -> pd.DataFrame:
    tokens = {"ar": {"a": [1, 2, 3], "b": [1, 2, 3, 4], "c": None, "d": [5, 6], "e": [7]},
              "orthrus": {"a": [1, 2, 3], "b": [1, 2, 9, 4], "c": None, "d": [5, 6, 7], "e": [7]}}[mode]
    seconds = {"ar": {"a": 0.3, "b": 0.4, "d": 0.2, "e": 0.1}, "orthrus": {"a": 0.1, "b": 0.1, "d": 0.05, "e": 0.05}}
    recs = []
    for rid, shard, prompt in (("a", "S1", 10), ("b", "S1", 20), ("c", "S1", None), ("d", "S2", 30), ("e", "S2", 40)):
        t = tokens[rid]
        recs.append({"id": rid, "shard": shard, "completion": None if t is None else " ".join(map(str, t)),
                     "completion_token_ids": None if t is None else np.array(t, dtype=np.int32),
                     "num_prompt_tokens": prompt, "num_completion_tokens": None if t is None else len(t),
                     "error": "prompt is null" if t is None else None,
                     "engine_seconds": seconds[mode].get(rid), "iterations": None,
                     "mean_acceptance_length": None if t is None else (1.0 if mode == "ar" else 1.5),
                     "worker": f"{mode}-host:{1 if shard == 'S1' else 2}"})
    return pd.DataFrame.from_records(recs)


def stats(mode: str) -> pd.DataFrame:
    figs = {"ar": [("S1", 7, 0.7, 7, 7, [7]), ("S2", 3, 0.3, 3, 3, [3])],
            "orthrus": [("S1", 7, 0.2, 4, 8, [1, 3]), ("S2", 4, 0.1, 2, 4, [0, 2])]}[mode]
    return pd.DataFrame.from_records(
        [{"shard": s, "completion_tokens": t, "engine_seconds": e, "iterations": i, "forward_passes": f,
          "acceptance_histogram": np.array(h)} for s, t, e, i, f, h in figs])


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 9, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2
    assert first_difference(np.array([4]), [5]) == 0
    assert first_difference(None, []) is None and first_difference([], [8]) == 0


def test_join_rows_status_first_difference_and_row_speedup():
    joined = join_rows(rows("ar"), rows("orthrus"))
    assert joined["id"].tolist() == ["a", "b", "c", "d", "e"]
    assert joined["status"].tolist() == ["equal", "different", "error", "different", "equal"]
    assert joined["first_diff"].tolist() == [pd.NA, 2, pd.NA, 2, pd.NA]
    assert joined["ar_token_at_diff"].tolist() == [pd.NA, 3, pd.NA, pd.NA, pd.NA]
    assert joined["orthrus_token_at_diff"].tolist() == [pd.NA, 9, pd.NA, 7, pd.NA]
    # row speedup = (orthrus tokens / s) / (AR tokens / s)
    assert joined["speedup"].tolist()[:2] == [pytest.approx(3.0), pytest.approx(4.0)]
    assert math.isnan(joined["speedup"][2])
    assert joined.loc[3, "speedup"] == pytest.approx((3 / 0.05) / (2 / 0.2))
    assert equality(joined) == {"rows": 5, "compared": 4, "equal": 2, "different": 2, "errors": 1, "missing": 0,
                                "equality_rate": 0.5}
    assert first_differences(joined, limit=1) == [{
        "id": "b", "shard": "S1", "first_diff": 2, "ar_token": 3, "orthrus_token": 9, "ar_completion_tokens": 4,
        "orthrus_completion_tokens": 4, "ar_text": "1 2 3 4", "orthrus_text": "1 2 9 4"}]
    assert first_differences(joined)[1]["ar_token"] is None and first_differences(joined)[1]["orthrus_token"] == 7
    assert workers_per_mode(joined) == {"ar": {"ar-host:1": 3, "ar-host:2": 2},
                                        "orthrus": {"orthrus-host:1": 3, "orthrus-host:2": 2}}


def test_a_row_in_one_run_only_is_missing():
    joined = join_rows(rows("ar"), rows("orthrus").iloc[:4])
    assert joined.set_index("id")["status"].to_dict()["e"] == "missing"
    assert equality(joined)["missing"] == 1 and equality(joined)["compared"] == 3


def test_shard_figures_speedup_and_cost_per_gpu():
    joined = join_rows(rows("ar"), rows("orthrus"))
    price = 3.6  # USD per GPU-hour = 0.001 USD per GPU-second
    table = shard_table(joined, stats("ar"), stats("orthrus"), Billing(1, price), Billing(1, price))
    assert table["shard"].tolist() == ["S1", "S2", ALL]
    s1, s2, total = table.to_dict("records")
    assert (s1["rows"], s1["compared"], s1["equal"], s1["errors"], s1["equality_rate"]) == (3, 2, 1, 1, 0.5)
    assert s1["ar_tokens_per_unit_s"] == pytest.approx(10.0) and s1["orthrus_tokens_per_unit_s"] == pytest.approx(35.0)
    assert s1["speedup"] == pytest.approx(3.5) and s2["speedup"] == pytest.approx(4.0)
    # overall: AR 10 tokens in 1.0 GPU-s, Orthrus 11 tokens in 0.3 GPU-s
    assert total["ar_unit_seconds"] == pytest.approx(1.0) and total["orthrus_unit_seconds"] == pytest.approx(0.3)
    assert total["speedup"] == pytest.approx((11 / 0.3) / 10.0)
    assert total["ar_usd_per_1m_tokens"] == pytest.approx(0.001 * 1.0 / 10 * 1e6)  # $100 per 1M tokens
    assert total["orthrus_usd_per_1m_tokens"] == pytest.approx(0.001 * 0.3 / 11 * 1e6)
    assert total["orthrus_mean_acceptance_length"] == pytest.approx(11 / 6)
    assert total["orthrus_tokens_per_forward"] == pytest.approx(11 / 12)
    assert total["orthrus_acceptance_histogram"] == [1, 5] and total["ar_acceptance_histogram"] == [10]
    assert (total["rows"], total["equal"], total["equality_rate"], total["unit"]) == (5, 2, 0.5, "GPU")


def test_two_gpus_per_worker_double_gpu_seconds_and_cpu_runs_bill_workers():
    joined = join_rows(rows("ar"), rows("orthrus"))
    two = shard_table(joined, stats("ar"), stats("orthrus"), Billing(2, 3.6), Billing(2, 3.6)).iloc[-1]
    assert two["orthrus_unit_seconds"] == pytest.approx(0.6) and two["orthrus_tokens_per_unit_s"] == pytest.approx(
        11 / 0.6)
    assert two["speedup"] == pytest.approx((11 / 0.3) / 10.0)  # same GPUs on both sides: unchanged
    cpu = shard_table(joined, stats("ar"), stats("orthrus"), Billing(0, 3.6), Billing(0, 3.6)).iloc[-1]
    assert cpu["unit"] == "worker" and cpu["ar_unit_seconds"] == pytest.approx(1.0)


def test_sample_shards_report_under_their_source():
    shard_of = {"S1": "/data/src-1.parquet", "S2": "/data/src-2.parquet"}
    joined = join_rows(rows("ar"), rows("orthrus"), shard_of)
    table = shard_table(joined, stats("ar"), stats("orthrus"), Billing(1, 1.0), Billing(1, 1.0), shard_of)
    assert table["shard"].tolist() == ["/data/src-1.parquet", "/data/src-2.parquet", ALL]
    assert table["rows"].tolist() == [3, 2, 5]


def test_no_compared_rows_gives_nan_rate():
    ar, orth = rows("ar").iloc[2:3], rows("orthrus").iloc[2:3]
    assert math.isnan(equality(join_rows(ar, orth))["equality_rate"])


def test_sample_is_seeded_and_spans_shards(write_shards, tmp_path):
    """Expected rows are pinned literals (numpy's seeded Generator.choice), not recomputed with choose_rows,
    and the spread over shards is checked against the counts alone.

    Planted bugs this fails on (issue 10): taking the first n rows, ignoring the seed, an off-by-one in the
    shard bounds, rows drawn from one shard only.
    """
    assert [p.tolist() for p in choose_rows([5, 0, 10], 6, seed=1)] == [[0, 2, 4], [], [0, 4, 7]]
    assert [p.tolist() for p in choose_rows([5, 10], 4, seed=2)] == [[1, 3, 4], [5]]
    assert [p.tolist() for p in choose_rows([2, 3], 99, seed=0)] == [[0, 1], [0, 1, 2]]
    # Every row is equally likely, so shard a (5 of 15 rows) holds about a third of the picks.
    from_a = [len(choose_rows([5, 10], 3, seed=s)[0]) for s in range(200)]
    assert any(0 < k < 3 for k in from_a) and abs(sum(from_a) / 600 - 1 / 3) < 0.08

    inputs = write_shards({"a.parquet": {"prompt": [f"a{i}" for i in range(5)], "x": list(range(5))},
                           "b.parquet": {"prompt": [f"b{i}" for i in range(10)], "x": list(range(10))}})
    shards = list_shards(str(inputs), ["prompt"])
    sample = write_sample(shards, ["prompt"], 4, seed=2, dest=str(tmp_path / "sample"))
    got = pd.read_parquet(sample.uri)
    assert sample.rows == 4 and list(got.columns) == ["prompt"]
    assert sorted(got["prompt"]) == ["a1", "a3", "a4", "b5"]
    assert sorted(sample.source_of.values()) == [f"{inputs}/a.parquet", f"{inputs}/b.parquet"]  # spans both
    again = write_sample(shards, ["prompt"], 4, seed=2, dest=str(tmp_path / "sample"))
    assert sorted(pd.read_parquet(again.uri)["prompt"]) == ["a1", "a3", "a4", "b5"]
