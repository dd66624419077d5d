"""Choosing the block size K per batch: the K that commits the most tokens per second, or AR.

With p_j the probability that draft j passes given drafts 1..j-1 did, an iteration of block
size K commits on average
    E(K) = 1 + sum_{i=1..K-1} prod_{j<=i} p_j            tokens per row,
and costs t(B, K) ms at batch B (both passes, measured once per GPU and model: bench/). AR is
K = 1 with E = 1. Rows per second of progress are B * E(K) / t(B, K); we take the best K, so
Orthrus mode is never planned to be slower than AR at the measured costs.
"""
from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path


ROW_KEYS = {"batch", "block_size", "ms_per_iteration"}  # and `context`, 0 or absent for any context


def read_rows(path: str | Path) -> list[dict]:
    """The `pass_costs` rows of a bench/engine_speed.py result or an actor's cached measurement;
    ValueError (or OSError) naming what is wrong otherwise."""
    data = json.loads(Path(path).read_text())
    rows = data.get("pass_costs") if isinstance(data, dict) else None
    if not rows or not all(isinstance(r, dict) and ROW_KEYS <= set(r) for r in rows):
        raise ValueError("no `pass_costs` rows with batch, block_size and ms_per_iteration")
    return rows


@dataclass(frozen=True)
class PassCosts:
    """ms per iteration at (context, batch, K), K = 1 being an AR step. Batches between measured
    ones are interpolated linearly in log(batch) (outside them the nearest is used); contexts
    linearly in context, and beyond the longest measured one extrapolated along the last two
    (attention's share grows linearly with context). A table keyed (batch, K) has one context."""

    ms: dict[tuple[int, int, int], float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ms", {(k if len(k) == 3 else (0, *k)): v for k, v in self.ms.items()})
        batches: dict[tuple[int, int], list[int]] = {}
        for c, b, k in self.ms:
            batches.setdefault((c, k), []).append(b)
        # sorted once: the rule runs between decode steps, where host time is GPU idle time
        object.__setattr__(self, "_batches", {key: sorted(v) for key, v in batches.items()})
        object.__setattr__(self, "_blocks", sorted({k for _, _, k in self.ms}))
        object.__setattr__(self, "_contexts", sorted({c for c, _, _ in self.ms}))

    @classmethod
    def from_bench(cls, path: str | Path) -> "PassCosts":
        """The table of a bench/engine_speed.py result (or an actor's auto measurement)."""
        return cls.from_rows(read_rows(path))

    @classmethod
    def from_rows(cls, rows: list[dict]) -> "PassCosts":
        return cls({(r.get("context", 0), r["batch"], r["block_size"]): r["ms_per_iteration"] for r in rows})

    @property
    def blocks(self) -> list[int]:
        return self._blocks

    @property
    def contexts(self) -> list[int]:
        return self._contexts

    def _at_context(self, ctx: int, batch: int, K: int) -> float:
        bs = self._batches.get((ctx, K))
        if not bs:
            raise KeyError(f"no pass cost measured for block size {K} at context {ctx}")
        i = bisect.bisect_left(bs, batch)
        if i == 0 or batch >= bs[-1]:
            return self.ms[(ctx, bs[0] if i == 0 else bs[-1], K)]
        lo, hi = bs[i - 1], bs[i]
        w = (math.log(batch) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (1 - w) * self.ms[(ctx, lo, K)] + w * self.ms[(ctx, hi, K)]

    def time(self, batch: int, K: int, context: int | None = None) -> float:
        cs = self.contexts
        if len(cs) == 1 or context is None or context <= cs[0]:
            return self._at_context(cs[0], batch, K)
        i = min(bisect.bisect_left(cs, context), len(cs) - 1)
        lo, hi = cs[i - 1], cs[i]
        a, b = self._at_context(lo, batch, K), self._at_context(hi, batch, K)
        return max(a + (b - a) * (context - lo) / (hi - lo), min(a, b))


def expected_committed(accept: list[float], K: int) -> float:
    """E(K) from per-position pass probabilities accept[j-1] = p_j (the last one repeats)."""
    total, run = 1.0, 1.0
    for i in range(1, K):
        run *= accept[min(i, len(accept)) - 1] if accept else 0.0
        total += run
    return total


SWITCH_GAIN = 1.1  # a new K must promise 10% more than the one in use: flapping K costs graph captures


def choose_block_size(costs: PassCosts, batch: int, accept: list[float], context: int | None = None,
                      keep: int | None = None) -> int:
    """The measured K (1 = AR) with the most committed tokens per ms at this batch size and context;
    `keep` (the K in use) stays unless the best promises SWITCH_GAIN times its rate."""
    rate = {K: expected_committed(accept, K) / costs.time(batch, K, context) for K in costs.blocks}
    best = max(costs.blocks, key=lambda K: (rate[K], -K))
    if keep in rate and rate[best] < SWITCH_GAIN * rate[keep]:
        return keep
    return best


def explain_choice(costs: PassCosts, batch: int, accept: list[float], context: int | None, device: str) -> str:
    """One line saying which K the rule picks here and why (progress lines and summaries)."""
    rate = {K: expected_committed(accept, K) / costs.time(batch, K, context) for K in costs.blocks}  # tokens/ms/row
    K = choose_block_size(costs, batch, accept, context)
    best_draft = max((k for k in rate if k > 1), key=rate.get, default=None)
    where = f"batch {batch}, context {context or '-'} on {device}"
    if K == 1 and best_draft is not None:
        return (f"K=1 (AR): drafts do not pay at {where} (AR {1 / rate[1]:.2f} ms/token per row, best K={best_draft} "
                f"{1 / rate[best_draft]:.2f} ms/token at first-draft acceptance {accept[0]:.2f})")
    if K == 1:
        return f"K=1 (AR) at {where}"
    return (f"K={K}: {rate[K] / rate[1]:.2f}x AR's tokens per second at {where} "
            f"(first-draft acceptance {accept[0]:.2f})")


@dataclass
class AcceptanceTracker:
    """Running estimate of p_j from the drafts judged and passed at each block index.

    The counts are kept on the device (workers/orthrus.commit, SlotState.tally: an iteration that
    accepted a drafts judged drafts 1..min(a+1, K-1) and passed 1..a) and copied here after each
    iteration. A Beta(prior_pass, prior_fail) prior keeps early estimates sane."""

    max_block: int = 32
    prior_pass: float = 1.0
    prior_fail: float = 1.0
    tried: list[int] = field(default_factory=list)
    passed: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tried = self.tried or [0] * self.max_block
        self.passed = self.passed or [0] * self.max_block

    def set_counts(self, tried: list[int], passed: list[int]) -> None:
        """Totals counted on the device (SlotState.tally) replace the host's."""
        self.tried, self.passed = list(tried), list(passed)

    def probabilities(self) -> list[float]:
        return [(p + self.prior_pass) / max(t + self.prior_pass + self.prior_fail, 1e-9) for p, t in zip(self.passed, self.tried)]
