"""One request: its prompt, its parameters and everything the engine knows about its progress.

Life of a request: WAITING (queued) -> PREFILL (holds a slot and pages; its tokens' K/V are being
written, a chunk per step) -> DECODE (its slot takes part in every iteration) -> FINISHED. When the
page pool runs dry a decoding request is *preempted*: its pages are freed, what it generated so far
is kept here, and it goes back to the front of the queue; on re-admission it is prefilled again with
prompt + generated tokens and goes on exactly where it stopped (its sampling randomness depends on
its seed and positions only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from workers.params import RequestStats, Result, SamplingParams


class Status(Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


AUTO = 0  # block_size: chosen per iteration from pass costs (workers/draft_length.py)


@dataclass(eq=False)  # identity: the scheduler finds and removes requests by object
class Request:
    request_id: int
    prompt: list[int]
    params: SamplingParams
    block_size: int  # 1 = AR, AUTO, or a fixed K
    stop_ids: tuple[int, ...]
    budget: int  # completion tokens allowed: max_new_tokens, cut by max_model_len
    status: Status = Status.WAITING
    slot: int | None = None
    pages: list[int] = field(default_factory=list)
    prefilled: int = 0  # tokens of `tokens[:-1]` whose K/V are in the cache
    length: int = 0  # tokens with K/V in the cache while decoding (read back after each iteration)
    # carried across preemptions (restored into the slot on re-admission)
    output: list[int] = field(default_factory=list)
    hist: list[int] = field(default_factory=list)  # tokens committed by each iteration
    counters: dict[str, int] = field(default_factory=dict)  # iterations, accepted, diffusion, drafted
    stopped: bool = False
    engine_seconds: float = 0.0
    preemptions: int = 0

    @property
    def tokens(self) -> list[int]:
        """Prompt + what was generated before the last preemption: what a prefill writes."""
        return self.prompt + self.output

    @property
    def to_prefill(self) -> int:
        """K/V still to write before decoding can start: all tokens but the last (the anchor)."""
        return len(self.tokens) - 1 - self.prefilled

    def result(self) -> Result:
        c = self.counters
        stats = RequestStats(
            prompt_tokens=len(self.prompt), iterations=c.get("iterations", 0),
            diffusion_passes=c.get("diffusion", 0), drafted_tokens=c.get("drafted", 0),
            accepted_tokens=c.get("accepted", 0), acceptance_lengths=list(self.hist),
            engine_seconds=self.engine_seconds, preemptions=self.preemptions,
        )
        return Result(list(self.output), "stop" if self.stopped else "length", stats)
