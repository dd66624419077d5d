"""The compare report: three PNG plots and one page that a person reads instead of the tables.

Writes, under the compare folder: `tokens_per_s.png` (tokens/s per unit, per shard, both modes),
`acceptance.png` (Orthrus acceptance-length histogram), `speedup_vs_prompt.png` (per-row speedup
against prompt length), `report.html` (self-contained: the PNGs are embedded as data URIs, so
the one file can be mailed or attached) and `report.md` (the same text, linking the PNG files).
Every number comes from the compare summary and tables; nothing is typed in here.
"""
from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, Callable

import pandas as pd

from pipeline.compare import ALL
from pipeline.storage import Location
from workers.metrics import histogram_mean

MAX_BARS = 40  # shards drawn in the per-shard plot (all of them stay in shards.parquet)
MAX_TABLE_SHARDS = 50  # shards listed in the report's table
FIGURES = ("tokens_per_s", "acceptance", "speedup_vs_prompt")
_COLORS = {"ar": "#7f8c8d", "orthrus": "#2e86de"}


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _short(shard: str) -> str:
    return shard.rsplit("/", 1)[-1].removesuffix(".parquet")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_tokens_per_s(shards: pd.DataFrame, unit: str) -> bytes:
    """Grouped bars: tokens/s per unit for each shard, AR and Orthrus side by side."""
    import matplotlib.pyplot as plt
    import numpy as np

    per = shards[shards["shard"] != ALL].head(MAX_BARS)
    x = np.arange(len(per))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(per) + 3), 4))
    for k, mode in enumerate(("ar", "orthrus")):
        ax.bar(x + (k - 0.5) * 0.4, per[f"{mode}_tokens_per_unit_s"].fillna(0), 0.4, label=mode,
               color=_COLORS[mode])
    ax.set_xticks(x, [_short(s) for s in per["shard"]], rotation=45 if len(per) > 6 else 0, ha="right")
    ax.set_ylabel(f"tokens/s per {unit}")
    more = f" (first {MAX_BARS} of {len(shards) - 1})" if len(shards) - 1 > MAX_BARS else ""
    ax.set_title(f"Engine tokens/s per {unit}, per shard{more}")
    ax.legend()
    return _png(fig)


def plot_acceptance(histogram: list[int]) -> bytes:
    """Share of Orthrus iterations that committed 1, 2, ... K tokens."""
    import matplotlib.pyplot as plt

    total = sum(histogram)
    fig, ax = plt.subplots(figsize=(6, 4))
    lengths = list(range(1, len(histogram) + 1))
    ax.bar(lengths, [100.0 * n / total if total else 0.0 for n in histogram], color=_COLORS["orthrus"])
    mean = histogram_mean(histogram)
    ax.set_xlabel("tokens committed per iteration (acceptance length)")
    ax.set_ylabel("% of iterations")
    ax.set_title(f"Orthrus acceptance lengths: {total:,} iterations, mean {_fmt(mean)}")
    if lengths:
        ax.set_xticks(lengths)
    return _png(fig)


def plot_speedup_vs_prompt(rows: pd.DataFrame, overall: float) -> bytes:
    """Per-row speedup against prompt tokens, with the overall speedup and 1.0 (no gain) marked."""
    import matplotlib.pyplot as plt

    ok = rows[rows["speedup"].notna()]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(ok["num_prompt_tokens"].astype(float), ok["speedup"], s=14, alpha=0.6, color=_COLORS["orthrus"])
    ax.axhline(1.0, color="black", lw=0.8, ls=":", label="1.0 (no gain)")
    if not math.isnan(overall):
        ax.axhline(overall, color="#e67e22", lw=1.2, label=f"overall {overall:.2f}x")
    if len(ok) and (ok["speedup"] > 0).all():
        ax.set_yscale("log")  # a ratio: 2x and 0.5x sit equally far from 1
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("speedup (Orthrus / AR tokens/s)")
    ax.set_title(f"Speedup against prompt length ({len(ok):,} rows)")
    ax.legend()
    return _png(fig)


def render_figures(summary: dict[str, Any], shards: pd.DataFrame, rows: pd.DataFrame) -> dict[str, bytes]:
    """{figure name: PNG bytes} for FIGURES."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never a display
    overall = summary["overall"]
    return {
        "tokens_per_s": plot_tokens_per_s(shards, overall["unit"]),
        "acceptance": plot_acceptance(overall["orthrus_acceptance_histogram"]),
        "speedup_vs_prompt": plot_speedup_vs_prompt(rows, overall["speedup"]),
    }


def _table(header: list[str], body: list[list[Any]]) -> tuple[str, str]:
    """(markdown, html) of one table."""
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(_fmt(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in body]
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in body)
    return "\n".join(md), f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _sections(summary: dict[str, Any], shards: pd.DataFrame) -> list[tuple[str, str, tuple[str, str] | None]]:
    """(title, paragraph, table) in report order."""
    o, eq, runs = summary["overall"], summary["equality"], summary["runs"]
    unit, price = o["unit"], summary["usd_per_unit_hour"]
    verdict = (f"Orthrus decodes {_fmt(o['speedup'])}x as many tokens per {unit}-second as AR on "
               f"{eq['rows']:,} rows; greedy outputs are identical on {eq['equal']:,} of {eq['compared']:,} "
               f"compared rows ({_fmt(100 * eq['equality_rate'], 1)}%). At ${_fmt(price)} per {unit}-hour: "
               f"AR ${_fmt(o['ar_usd_per_1m_tokens'], 4)} and Orthrus ${_fmt(o['orthrus_usd_per_1m_tokens'], 4)} "
               f"per 1M output tokens.")
    if unit == "worker":
        verdict += (" These runs had no GPUs: figures are per CPU worker (actor), and the price is applied "
                    "per worker-hour.")
    overall = _table(
        ["mode", "completion tokens", "engine s", f"{unit}-s", f"tokens/s per {unit}", "$/1M tokens",
         "mean acceptance", "tokens/forward", "job wall s", "devices"],
        [[m, o[f"{m}_completion_tokens"], o[f"{m}_engine_seconds"], o[f"{m}_unit_seconds"],
          o[f"{m}_tokens_per_unit_s"], o[f"{m}_usd_per_1m_tokens"], o[f"{m}_mean_acceptance_length"],
          o[f"{m}_tokens_per_forward"], runs[m]["job_seconds"], ", ".join(runs[m]["device_types"])]
         for m in ("ar", "orthrus")])
    diffs = summary["first_differences"]
    diff_table = _table(["id", "shard", "first differing token", "AR token", "Orthrus token", "AR text",
                         "Orthrus text"],
                        [[d["id"], _short(d["shard"]), d["first_diff"], d["ar_token"], d["orthrus_token"],
                          d["ar_text"], d["orthrus_text"]] for d in diffs]) if diffs else None
    per = shards[shards["shard"] != ALL].head(MAX_TABLE_SHARDS)
    shard_table = _table(
        ["shard", "rows", "equal", "equality", f"AR tok/s per {unit}", f"Orthrus tok/s per {unit}", "speedup",
         "AR $/1M", "Orthrus $/1M", "mean acceptance"],
        [[_short(r["shard"]), r["rows"], r["equal"], f"{_fmt(100 * r['equality_rate'], 1)}%", r["ar_tokens_per_unit_s"],
          r["orthrus_tokens_per_unit_s"], r["speedup"], r["ar_usd_per_1m_tokens"], r["orthrus_usd_per_1m_tokens"],
          r["orthrus_mean_acceptance_length"]] for r in per.to_dict("records")])
    workers = _table(["mode", "worker (host:pid)", "rows"],
                     [[m, w, n] for m, ws in summary["workers"].items() for w, n in ws.items()])
    n_shards = len(shards) - 1
    return [
        ("Verdict", verdict, None),
        ("Overall", f"Speedup {_fmt(o['speedup'])}x (tokens/s per {unit}); {unit}-seconds = engine seconds"
                    + (" x GPUs per worker" if unit == "GPU" else "") +
                    " (model load and idle time excluded; job wall time includes them).",
         overall),
        ("Equality", f"{eq['equal']:,} equal, {eq['different']:,} different, {eq['errors']:,} with an error in "
                     f"either run (not compared), {eq['missing']:,} missing from one run. "
                     + ("First differences:" if diffs else "No differences."), diff_table),
        ("Per shard", f"{n_shards:,} shard(s)" + (f"; the first {MAX_TABLE_SHARDS} shown, all in shards.parquet"
                                                   if n_shards > MAX_TABLE_SHARDS else ""), shard_table),
        ("Workers", "Rows each engine actor ran (one actor per GPU gives N-way data parallelism).", workers),
    ]


_CAPTIONS = {"tokens_per_s": "Tokens/s per shard, both modes", "acceptance": "Acceptance-length histogram",
             "speedup_vs_prompt": "Speedup against prompt length"}
_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
        "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}")


def render_markdown(summary: dict[str, Any], shards: pd.DataFrame) -> str:
    title = f"# Orthrus vs AR: {summary['name']}"
    parts = [title, f"Generated {summary['finished_at']}; model `{summary['model']}`."]
    for name, text, table in _sections(summary, shards):
        parts += [f"## {name}", text] + ([table[0]] if table else [])
    parts.append("## Figures")
    parts += [f"![{_CAPTIONS[f]}]({f}.png)" for f in FIGURES]
    return "\n\n".join(parts) + "\n"


def render_html(summary: dict[str, Any], shards: pd.DataFrame, pngs: dict[str, bytes]) -> str:
    body = [f"<h1>Orthrus vs AR: {html.escape(summary['name'])}</h1>",
            f"<p>Generated {html.escape(summary['finished_at'])}; model <code>{html.escape(summary['model'])}"
            f"</code>.</p>"]
    for name, text, table in _sections(summary, shards):
        body += [f"<h2>{html.escape(name)}</h2>", f"<p>{html.escape(text)}</p>"] + ([table[1]] if table else [])
    body.append("<h2>Figures</h2>")
    for f in FIGURES:
        data = base64.b64encode(pngs[f]).decode()
        body.append(f'<figure><img id="{f}" alt="{html.escape(_CAPTIONS[f])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(_CAPTIONS[f])}</figcaption></figure>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Orthrus vs AR: "
            f"{html.escape(summary['name'])}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(dest: Location, summary: dict[str, Any], shards: pd.DataFrame, rows: pd.DataFrame,
                 write: Callable[[Location, bytes], None]) -> dict[str, str]:
    """Render the figures and both report files under `dest`; returns {name: URI}.

    Args:
        dest: the compare folder.
        summary: the compare summary (jobs/compare.py builds it from pipeline.compare).
        shards, rows: shard_table's and join_rows' tables.
        write: stores bytes at a Location (local or S3).
    """
    pngs = render_figures(summary, shards, rows)
    out = {}
    for name, data in pngs.items():
        write(dest.child(f"{name}.png"), data)
        out[name] = dest.child(f"{name}.png").uri
    for name, text in (("report.md", render_markdown(summary, shards)),
                       ("report.html", render_html(summary, shards, pngs))):
        write(dest.child(name), text.encode())
        out[name] = dest.child(name).uri
    return out
