"""The compare report renders: PNGs that decode to real pictures, and pages that embed or link them.

Built from the hand-made runs of test_compare.py (speedup 11/0.3/10 = 3.67x, 2 of 4 rows equal).
"""
from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import matplotlib.image
import numpy as np
from PIL import Image
from test_compare import rows, stats

from pipeline.compare import ALL, Billing, equality, first_differences, join_rows, shard_table, workers_per_mode
from pipeline.report import FIGURES, write_report
from pipeline.storage import locate


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs[a["id"]] = a["src"]


def summary_and_tables():
    joined = join_rows(rows("ar"), rows("orthrus"))
    shards = shard_table(joined, stats("ar"), stats("orthrus"), Billing(1, 3.6), Billing(1, 3.6))
    summary = {"name": "t", "finished_at": "2026-11-29T00:00:00+00:00", "model": "/m", "usd_per_unit_hour": 3.6,
               "equality": equality(joined), "overall": shards[shards["shard"] == ALL].iloc[0].to_dict(),
               "first_differences": first_differences(joined), "workers": workers_per_mode(joined),
               "runs": {"ar": {"job_seconds": 12.5, "device_types": ["cuda"]},
                        "orthrus": {"job_seconds": 5.0, "device_types": ["cuda"]}}}
    return summary, shards, joined


def test_report_pngs_decode_and_pages_embed_them(tmp_path):
    summary, shards, joined = summary_and_tables()
    written: dict[str, bytes] = {}

    def write(loc, data):
        written[loc.uri] = data
        (tmp_path / loc.uri.rsplit("/", 1)[-1]).write_bytes(data)

    paths = write_report(locate(str(tmp_path)), summary, shards, joined, write)
    assert sorted(paths) == sorted([*FIGURES, "report.md", "report.html"])
    for name in FIGURES:
        png = (tmp_path / f"{name}.png").read_bytes()
        img = Image.open(io.BytesIO(png))
        img.verify()
        assert img.format == "PNG" and img.size[0] >= 500 and img.size[1] >= 300, (name, img.size)
        pixels = matplotlib.image.imread(tmp_path / f"{name}.png")
        assert pixels.ndim == 3 and pixels.shape[:2] == (img.size[1], img.size[0])
        assert float(np.std(pixels)) > 0.05, f"{name} looks blank"

    page = (tmp_path / "report.html").read_text()
    parser = Images()
    parser.feed(page)
    assert sorted(parser.srcs) == sorted(FIGURES)
    for name, src in parser.srcs.items():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (tmp_path / f"{name}.png").read_bytes()
    assert "Orthrus decodes 3.67x as many tokens per GPU-second as AR on 5 rows" in page
    assert "identical on 2 of 2" not in page and "identical on 2 of 4 compared rows (50.0%)" in page
    assert "$100.0000" in page  # AR: $0.001 per GPU-second x 1.0 s / 10 tokens x 1M

    md = (tmp_path / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name}.png)" in md
    assert "| ar | 10 | 1.00 | 1.00 | 10.00 | 100.00 | 1.00 | 1.00 | 12.50 | cuda |" in md
    assert "| b | S1 | 2 | 3 | 9 | 1 2 3 4 | 1 2 9 4 |" in md
