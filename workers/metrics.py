"""Decoding figures, each defined next to its formula: one home for the engine, the driver and compare.

Pure Python (no torch, no numpy), so the driver imports it as freely as the actor does.

Vocabulary (per row, or summed over rows: every figure below is a ratio of two sums):
  iteration        one verify (AR) forward of a row; it commits 1..K tokens
  Orthrus iteration an iteration that drafted: one diffusion pass proposing K - 1 tokens (K > 1)
  AR iteration     an iteration that drafted nothing (K = 1: AR mode, the block-size rule's fallback
                   to AR, or the prefill forward that yields a row's first token)
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence


def ratio(num: float, den: float, empty: float = 0.0) -> float:
    """num / den; `empty` when den is 0 (nothing was measured: 0 tokens, 0 iterations, 0 seconds).

    One rule, one place: a figure over nothing is never an exception. The run's own figures keep
    the default 0.0 (a shard with no rows decoded nothing, and summary.json stays strict JSON);
    compare passes `math.nan`, where "not compared" must not read as 0 (its report shows n/a).
    """
    return num / den if den else empty


def mean_acceptance_length(completion_tokens: float, iterations: float, empty: float = 0.0) -> float:
    """Committed tokens per iteration = completion_tokens / iterations = 1 + accepted / iterations
    (vLLM's mean acceptance length; 1.0 in AR mode)."""
    return ratio(completion_tokens, iterations, empty)


def tokens_per_forward(completion_tokens: float, forward_passes: float, empty: float = 0.0) -> float:
    """completion_tokens / (iterations + diffusion_passes): what each model forward bought."""
    return ratio(completion_tokens, forward_passes, empty)


def mean_block_size(drafted_tokens: float, diffusion_passes: float) -> float:
    """Mean K of the Orthrus iterations = 1 + drafted_tokens / diffusion_passes (each drafts K - 1);
    0.0 when no iteration drafted (AR throughout)."""
    return 1.0 + drafted_tokens / diffusion_passes if diffusion_passes else 0.0


def ar_share(iterations: float, diffusion_passes: float) -> float:
    """Share of iterations that drafted nothing = (iterations - diffusion_passes) / iterations."""
    return ratio(iterations - diffusion_passes, iterations)


def histogram(lengths: Sequence[int]) -> list[int]:
    """Acceptance histogram of per-iteration committed lengths: out[i] = iterations that committed i + 1."""
    out = [0] * (max(lengths) if lengths else 0)
    for n in lengths:
        out[n - 1] += 1
    return out


def add_histograms(a: Iterable[int], b: Iterable[int]) -> list[int]:
    """Elementwise sum of two acceptance histograms of any lengths."""
    out = [int(n) for n in a]
    for i, n in enumerate(b):
        if i == len(out):
            out.append(0)
        out[i] += int(n)
    return out


def sum_histograms(hists: Iterable[Any]) -> list[int]:
    """The sum of many histograms; None cells (rows or shards without one) count as empty."""
    out: list[int] = []
    for h in hists:
        if h is not None:
            out = add_histograms(out, h)
    return out


def histogram_mean(hist: Sequence[int]) -> float:
    """Mean committed length over the histogram's iterations (NaN for an empty histogram)."""
    total = sum(hist)
    return sum((i + 1) * n for i, n in enumerate(hist)) / total if total else math.nan


def histogram_shares(hist: Sequence[int]) -> str:
    """`1:20% 2:50% ...`: share of iterations per committed length (lengths never seen are left out)."""
    total = sum(hist)
    return " ".join(f"{i + 1}:{100.0 * n / total:.0f}%" for i, n in enumerate(hist) if n) or "-"


# -- text that looks broken: loops and empty completions -----------------------------------------
# A continuation *loops* when some unit of p <= 32 tokens repeats back to back over a stretch of
# more than 64 tokens (tokens[j] == tokens[j+p] for 64 consecutive j). A completion is *empty*
# when it has no token before its stop token. A span of 64 needs completions longer than 64
# tokens: for shorter ones `loop_span_for` scales it to half the completion length.
LOOP_PERIOD, LOOP_SPAN = 32, 64
LOOP_DEFINITION = f"period <= {LOOP_PERIOD} tokens repeating over > {LOOP_SPAN} tokens"


def loops(ids: Sequence[int], max_period: int = LOOP_PERIOD, span: int = LOOP_SPAN) -> bool:
    """True when some period p <= max_period holds for `span` consecutive positions (see module docstring)."""
    ids = list(ids)
    for p in range(1, max_period + 1):
        run = 0
        for j in range(len(ids) - p):
            run = run + 1 if ids[j] == ids[j + p] else 0
            if run >= span:
                return True
    return False


def loop_span_for(max_new_tokens: int) -> int:
    """The loop span for completions of at most `max_new_tokens`: LOOP_SPAN, or half the length if shorter."""
    return max(1, min(LOOP_SPAN, max_new_tokens // 2))


def loop_rate(completions: Iterable[Sequence[int]], span: int = LOOP_SPAN, max_period: int = LOOP_PERIOD) -> float:
    """Share of completions (token id lists) that loop; 0.0 for none."""
    flags = [loops(ids, max_period, span) for ids in completions]
    return sum(flags) / len(flags) if flags else 0.0


def is_empty(ids: Sequence[int], stop_token_ids: Iterable[int]) -> bool:
    """No token before the stop token: nothing generated, or the first token is a stop token."""
    return len(ids) == 0 or ids[0] in set(stop_token_ids)


def empty_rate(completions: Iterable[Sequence[int]], stop_token_ids: Iterable[int]) -> float:
    """Share of completions that are empty (is_empty); 0.0 for none."""
    stops = set(stop_token_ids)
    flags = [is_empty(ids, stops) for ids in completions]
    return sum(flags) / len(flags) if flags else 0.0
