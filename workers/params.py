"""The engine's public value types: what a caller asks for and what it gets back."""
from __future__ import annotations

from dataclasses import dataclass, field

from workers.metrics import mean_acceptance_length


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one prompt.

    temperature == 0 means greedy. top_k == 0 and top_p == 1 disable those filters.
    `block_size` (Orthrus mode only) overrides the engine's draft block size K for this
    request; rows with different K in one `generate` call run in separate batches.
    `seed` makes sampling reproducible per row: a row's tokens depend only on its seed,
    prompt and parameters, never on which other rows share its batch. `seed=None` (the default)
    gives each request its own seed (its request id), so identical prompts in one call sample
    independently; pass seeds to reproduce a run.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] | None = None  # None: the model's eos ids
    block_size: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0 or self.temperature != self.temperature:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and (isinstance(self.seed, bool) or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))


@dataclass
class RequestStats:
    """What decoding one prompt cost.

    iterations: verify passes (AR forwards) this row took part in; AR mode: one per token.
    diffusion_passes: diffusion forwards (0 in AR mode).
    drafted_tokens: draft tokens proposed (K-1 per Orthrus iteration).
    accepted_tokens: drafts committed to the output. Each iteration commits its accepted
      drafts plus one token from the AR view (correction or bonus), so always
      len(token_ids) == accepted_tokens + iterations.
    acceptance_lengths: committed tokens per iteration (1..K), in order.
    engine_seconds: this row's share of the engine's busy time: each prefill chunk split over its
      rows by tokens, each iteration split evenly over the rows that took part in it.
    preemptions: times the row was preempted (pages freed) and later re-prefilled.
    """

    prompt_tokens: int = 0
    iterations: int = 0
    diffusion_passes: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    acceptance_lengths: list[int] = field(default_factory=list)
    engine_seconds: float = 0.0
    preemptions: int = 0

    @property
    def mean_acceptance_length(self) -> float:
        """Committed tokens per iteration (workers/metrics.py; committed = accepted + iterations)."""
        return mean_acceptance_length(self.accepted_tokens + self.iterations, self.iterations)


@dataclass
class Result:
    """One prompt's completion: `token_ids` excludes the prompt; finish_reason is
    "stop" (a stop token was produced; it is included) or "length" (max_new_tokens or
    max_model_len reached)."""

    token_ids: list[int]
    finish_reason: str
    stats: RequestStats
