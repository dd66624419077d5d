"""AR against Orthrus on the same rows: token-level equality, speedup, throughput and cost.

Pure pandas over what two runs wrote (outputs/ and stats/shards.parquet), so every figure here is
tested on hand-built tables. `jobs/compare.py` runs the two jobs; `pipeline/report.py` draws.

Vocabulary (each figure is a sum over rows or a ratio of two sums):
  unit              what is billed: one GPU when the actors hold GPUs (gpus_per_worker > 0), else
                    one CPU worker (actor). The `unit` column says which.
  unit_seconds      engine_seconds x units per worker (= GPU-seconds on GPUs). engine_seconds is
                    time inside the engine's `generate`, so model load and pipeline idle time are
                    left out: the figure compares decoders, not cluster bills.
  tokens_per_unit_s completion tokens / unit_seconds (tokens/s per GPU, or per worker on CPU)
  speedup           orthrus tokens_per_unit_s / ar tokens_per_unit_s. When the outputs are equal the
                    token counts are too, and this is AR unit-seconds / Orthrus unit-seconds.
  usd_per_1m_tokens price per unit-hour x unit_seconds / 3600 / completion tokens x 1,000,000
  status            per row: equal (same completion_token_ids in both runs), different, error (an
                    `error` in either run: not compared), missing (in one run only)
  equality_rate     equal / (equal + different); NaN when no row was compared
  first_diff        index of the first completion token that differs; the shorter length when one
                    completion is a prefix of the other
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from workers import metrics
from workers.schema import OUTPUT_SCHEMA

MODES = ("ar", "orthrus")
ALL = "(all)"  # the overall row of the shard table
# outputs/ columns compare reads: all but the prompt text and the per-row figures it takes from
# stats/shards.parquet instead (completion only to show the first differences)
ROW_INPUT_COLUMNS = [name for name in OUTPUT_SCHEMA.names if name not in (
    "prompt", "finish_reason", "diffusion_passes", "forward_passes", "drafted_tokens", "accepted_tokens",
    "acceptance_histogram", "loops")]
ROWS_COLUMNS = ["id", "shard", "status", "num_prompt_tokens", "ar_completion_tokens", "orthrus_completion_tokens",
                "first_diff", "ar_token_at_diff", "orthrus_token_at_diff", "ar_engine_seconds",
                "orthrus_engine_seconds", "speedup", "orthrus_mean_acceptance_length", "ar_worker", "orthrus_worker"]
_TEXT_CHARS = 160  # completion text shown per side in a first-difference entry


@dataclass(frozen=True)
class Billing:
    """How one run's engine time turns into billed units."""

    gpus_per_worker: float
    usd_per_unit_hour: float

    @property
    def unit(self) -> str:
        return "GPU" if self.gpus_per_worker > 0 else "worker"

    @property
    def units_per_worker(self) -> float:
        return self.gpus_per_worker if self.gpus_per_worker > 0 else 1.0


def _tokens(cell: Any) -> list[int]:
    """A token-id cell as a list: Parquet lists come back as numpy arrays, nulls as None or NaN."""
    return [] if cell is None or isinstance(cell, float) else [int(t) for t in cell]


def first_difference(a: Sequence[int] | None, b: Sequence[int] | None) -> int | None:
    """Index of the first token where `a` and `b` differ; None when they are equal."""
    a, b = _tokens(a), _tokens(b)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _ratio(num: float, den: float) -> float:
    """metrics.ratio with NaN over nothing: "not compared" must not read as 0 (the report shows n/a)."""
    return metrics.ratio(num, den, math.nan)


def _token_at(tokens: Any, i: Any) -> int | None:
    """Token `i` of a cell, or None past its end (the shorter side of a prefix difference)."""
    tokens = _tokens(tokens)
    return None if i is None or pd.isna(i) or i >= len(tokens) else tokens[int(i)]


def join_rows(ar: pd.DataFrame, orthrus: pd.DataFrame, shard_of: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per input row id with both runs' figures, its status and first difference.

    Args:
        ar, orthrus: the runs' outputs/ (at least ROW_INPUT_COLUMNS).
        shard_of: run shard URI -> the shard to report it under (a sample file -> its source shard).
    Returns:
        ROWS_COLUMNS plus `ar_completion` and `orthrus_completion`, sorted by shard and id.
    """
    shard_of = shard_of or {}
    both = pd.merge(ar[ROW_INPUT_COLUMNS], orthrus[ROW_INPUT_COLUMNS], on="id", how="outer",
                    suffixes=("_ar", "_orthrus"), indicator=True)
    out = pd.DataFrame({"id": both["id"].astype(str)})
    shard = both["shard_ar"].where(both["shard_ar"].notna(), both["shard_orthrus"])
    out["shard"] = shard.map(lambda s: shard_of.get(s, s))
    errored = both["error_ar"].notna() | both["error_orthrus"].notna()
    diffs = [first_difference(a, b) for a, b in zip(both["completion_token_ids_ar"],
                                                    both["completion_token_ids_orthrus"])]
    status = np.where(both["_merge"] != "both", "missing",
                      np.where(errored, "error", np.where([d is None for d in diffs], "equal", "different")))
    out["status"] = status
    out["num_prompt_tokens"] = both["num_prompt_tokens_ar"].where(both["num_prompt_tokens_ar"].notna(),
                                                                  both["num_prompt_tokens_orthrus"]).astype("Int64")
    for mode in MODES:
        out[f"{mode}_completion_tokens"] = both[f"num_completion_tokens_{mode}"].astype("Int64")
    out["first_diff"] = pd.array([d if s == "different" else None for d, s in zip(diffs, status)], dtype="Int64")
    for mode in MODES:
        out[f"{mode}_token_at_diff"] = pd.array(
            [_token_at(t, d) for t, d in zip(both[f"completion_token_ids_{mode}"], out["first_diff"].astype(object))],
            dtype="Int64")
        out[f"{mode}_engine_seconds"] = both[f"engine_seconds_{mode}"].astype(float)
    ar_rate = out["ar_completion_tokens"].astype(float) / out["ar_engine_seconds"]
    orth_rate = out["orthrus_completion_tokens"].astype(float) / out["orthrus_engine_seconds"]
    speedup = (orth_rate / ar_rate).where(out["status"].isin(["equal", "different"]))
    out["speedup"] = speedup.replace([np.inf, -np.inf], np.nan).astype(float)
    out["orthrus_mean_acceptance_length"] = both["mean_acceptance_length_orthrus"].astype(float)
    for mode in MODES:
        out[f"{mode}_worker"] = both[f"worker_{mode}"]
        out[f"{mode}_completion"] = both[f"completion_{mode}"]
    return out.sort_values(["shard", "id"], kind="stable").reset_index(drop=True)


def equality(rows: pd.DataFrame) -> dict[str, Any]:
    """Row counts by status and the equality rate (see the module docstring)."""
    counts = rows["status"].value_counts()
    equal, different = int(counts.get("equal", 0)), int(counts.get("different", 0))
    return {"rows": len(rows), "compared": equal + different, "equal": equal, "different": different,
            "errors": int(counts.get("error", 0)), "missing": int(counts.get("missing", 0)),
            "equality_rate": _ratio(equal, equal + different)}


def _mode_figures(stats: pd.DataFrame, billing: Billing, prefix: str) -> dict[str, Any]:
    """Sums and ratios of sums over some rows of one run's stats/shards.parquet."""
    tokens = int(stats["completion_tokens"].sum())
    engine_s = float(stats["engine_seconds"].sum())
    unit_s = engine_s * billing.units_per_worker
    iterations = int(stats["iterations"].sum())
    forwards = int(stats["forward_passes"].sum())
    return {
        f"{prefix}_completion_tokens": tokens,
        f"{prefix}_engine_seconds": engine_s,
        f"{prefix}_unit_seconds": unit_s,
        f"{prefix}_tokens_per_unit_s": _ratio(tokens, unit_s),
        f"{prefix}_usd_per_1m_tokens": _ratio(billing.usd_per_unit_hour * unit_s / 3600.0 * 1e6, tokens),
        f"{prefix}_mean_acceptance_length": metrics.mean_acceptance_length(tokens, iterations, math.nan),
        f"{prefix}_tokens_per_forward": metrics.tokens_per_forward(tokens, forwards, math.nan),
        f"{prefix}_acceptance_histogram": metrics.sum_histograms(stats["acceptance_histogram"]),
    }


def shard_table(rows: pd.DataFrame, ar_stats: pd.DataFrame, orthrus_stats: pd.DataFrame, ar_billing: Billing,
                orthrus_billing: Billing, shard_of: dict[str, str] | None = None) -> pd.DataFrame:
    """Per-shard figures of both runs, side by side, and a last `(all)` row over every shard.

    Args:
        rows: join_rows' table (for equality counts).
        ar_stats, orthrus_stats: each run's stats/shards.parquet.
        ar_billing, orthrus_billing: GPUs per worker and the price of each run.
        shard_of: run shard URI -> reported shard (sample files -> source shards).
    Returns:
        One row per shard in sorted order, then `(all)`; columns named `<mode>_<figure>`.
    """
    shard_of = shard_of or {}
    stats = {}
    for mode, frame in (("ar", ar_stats), ("orthrus", orthrus_stats)):
        frame = frame.copy()
        frame["shard"] = frame["shard"].map(lambda s: shard_of.get(s, s))
        stats[mode] = frame
    names = sorted(set(stats["ar"]["shard"]) | set(stats["orthrus"]["shard"]))
    records = []
    for name in names + [ALL]:
        pick = (lambda f: f) if name == ALL else (lambda f, n=name: f[f["shard"] == n])
        rec: dict[str, Any] = {"shard": name, **equality(pick(rows))}
        rec.update(_mode_figures(pick(stats["ar"]), ar_billing, "ar"))
        rec.update(_mode_figures(pick(stats["orthrus"]), orthrus_billing, "orthrus"))
        rec["speedup"] = _ratio(rec["orthrus_tokens_per_unit_s"], rec["ar_tokens_per_unit_s"])
        rec["unit"] = orthrus_billing.unit
        records.append(rec)
    return pd.DataFrame.from_records(records)


def first_differences(rows: pd.DataFrame, limit: int = 10) -> list[dict[str, Any]]:
    """The first `limit` differing rows (by shard, then id): where they part and what each side wrote."""
    diff = rows[rows["status"] == "different"].head(limit)
    out = []
    for r in diff.itertuples(index=False):
        out.append({
            "id": r.id, "shard": r.shard, "first_diff": int(r.first_diff),
            "ar_token": None if pd.isna(r.ar_token_at_diff) else int(r.ar_token_at_diff),
            "orthrus_token": None if pd.isna(r.orthrus_token_at_diff) else int(r.orthrus_token_at_diff),
            "ar_completion_tokens": int(r.ar_completion_tokens),
            "orthrus_completion_tokens": int(r.orthrus_completion_tokens),
            "ar_text": (r.ar_completion or "")[:_TEXT_CHARS], "orthrus_text": (r.orthrus_completion or "")[:_TEXT_CHARS],
        })
    return out


def workers_per_mode(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Rows each actor ran, per mode: the check that N actors gave N-way data parallelism."""
    return {mode: {str(k): int(v) for k, v in rows[f"{mode}_worker"].dropna().value_counts().sort_index().items()}
            for mode in MODES}
