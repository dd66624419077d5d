"""Loops and empty completions, the two ways a small model's text looks broken (torch-free).

A continuation *loops* when some unit of p <= 32 tokens repeats back to back over a stretch of
more than 64 tokens (tokens[j] == tokens[j+p] for 64 consecutive j). A completion is *empty*
when it has no token before its stop token (the first token generated is a stop token, so the
text is ""). Both are plain functions of token ids, so the driver (which never imports torch)
can put them in a summary line, e.g.
    loop_rate(ids_per_row, span=loop_span_for(max_new_tokens)), empty_rate(ids_per_row, stop_ids)
A span of 64 needs completions longer than 64 tokens: for shorter ones (the demo job's 32),
`loop_span_for` scales the span to half the completion length (16 of 32: two copies of a unit).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

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
