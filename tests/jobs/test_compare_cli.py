"""`orthrus-batch compare` end to end on the tiny model, with two engine actors per mode.

The figures in compare/ are checked against the two runs' own summaries (recomputed here from
their totals), so the test holds whatever the timings are. Two actors per run also checks data
parallelism: both actors of each mode ran rows (the per-row `worker` column).
"""
from __future__ import annotations

import base64
import io
import json

import pandas as pd
import pytest
from PIL import Image

from jobs.cli import main

PRICE = 3.6  # USD per worker-hour here (no GPU): 0.001 USD per worker-second


@pytest.mark.timeout(240)
def test_compare_ar_and_orthrus_on_a_sample(ray_session, tiny_model, write_shards, tmp_path, capsys):
    inputs = write_shards({"s0.parquet": {"key": [f"a{i}" for i in range(6)], "prompt": [f"hello {i}" for i in range(6)]},
                           "s1.parquet": {"key": [f"b{i}" for i in range(6)], "prompt": [f"def f{i}(x):" for i in range(6)]}})
    job = tmp_path / "job.yaml"
    job.write_text(f"name: cmp\ninput: {{path: {inputs}, prompt_column: prompt, id_column: key}}\n"
                   f"model: {{path: {tiny_model}}}\noutput: {{path: {tmp_path / 'out'}}}\n"
                   f"sampling: {{max_new_tokens: 5, temperature: 0.7}}\nresources: {{batch_size: 2}}\n"
                   f"progress_interval_s: 1\n")
    # Start both actors before rows flow, so each takes batches (Ray Data otherwise feeds the
    # first actor that is up, and a tiny job can finish before the second one is).
    ctx = ray_session.data.DataContext.get_current()
    before, ctx.wait_for_min_actors_s = ctx.wait_for_min_actors_s, 120
    try:
        assert main(["compare", str(job), "--sample", "8", "--gpu-hour-price", str(PRICE),
                     "--set", "resources.num_workers=2"]) == 0
    finally:
        ctx.wait_for_min_actors_s = before
    printed = capsys.readouterr().out
    out = tmp_path / "out"
    summary = json.loads((out / "compare" / "summary.json").read_text())
    runs = {m: json.loads((out / m / "summary.json").read_text()) for m in ("ar", "orthrus")}
    assert runs["ar"]["mode"] == "ar" and runs["orthrus"]["mode"] == "orthrus"
    assert runs["orthrus"]["config"]["sampling"]["temperature"] == 0.0  # compare is greedy

    # Same 8 rows in both runs; greedy AR and Orthrus agree token for token.
    assert summary["equality"] == {"rows": 8, "compared": 8, "equal": 8, "different": 0, "errors": 0, "missing": 0,
                                   "equality_rate": 1.0}
    assert summary["first_differences"] == [] and summary["sample"]["rows"] == 8
    rows = pd.read_parquet(out / "compare" / "rows.parquet")
    assert len(rows) == 8 and set(rows["id"]) <= {f"{p}{i}" for p in "ab" for i in range(6)}
    assert (rows["status"] == "equal").all() and (rows["ar_completion_tokens"] == 5).all()
    ar_out = pd.read_parquet(out / "ar" / "outputs")
    assert sorted(ar_out["id"]) == sorted(rows["id"])

    # Per shard under the source shards; overall figures recomputed from the runs' totals.
    shards = pd.read_parquet(out / "compare" / "shards.parquet").set_index("shard")
    assert set(shards.index) <= {f"{inputs}/s0.parquet", f"{inputs}/s1.parquet", "(all)"}
    assert shards.drop("(all)")["rows"].sum() == 8
    o = summary["overall"]
    t = {m: runs[m]["totals"] for m in runs}
    rate = {m: t[m]["completion_tokens"] / t[m]["engine_seconds"] for m in t}
    assert o["unit"] == "worker" and o["ar_completion_tokens"] == t["ar"]["completion_tokens"] == 40
    assert o["orthrus_tokens_per_unit_s"] == pytest.approx(rate["orthrus"])
    assert o["speedup"] == pytest.approx(rate["orthrus"] / rate["ar"])
    assert o["ar_usd_per_1m_tokens"] == pytest.approx(0.001 * t["ar"]["engine_seconds"] / 40 * 1e6)
    assert o["orthrus_acceptance_histogram"] == t["orthrus"]["acceptance_histogram"]
    assert f"speedup {o['speedup']:.2f}x tokens/s per worker (CPU workers, no GPU)" in printed

    # N actors -> N-way data parallelism: both actors of each run took rows.
    for mode in ("ar", "orthrus"):
        workers = summary["workers"][mode]
        assert len(workers) == 2 and all(n >= 1 for n in workers.values()) and sum(workers.values()) == 8, workers
        assert runs[mode]["actors"] == 2

    # The report embeds three decodable PNGs.
    page = (out / "compare" / "report.html").read_text()
    pngs = [chunk.split('"', 1)[0] for chunk in page.split("data:image/png;base64,")[1:]]
    assert len(pngs) == 3
    for data in pngs:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] >= 500
    assert (out / "compare" / "report.md").read_text().count(".png)") == 3
