"""What the engines were doing as their latest batches ended: K choice, GPU memory, the KV pool.

Every actor batch carries a `_batch` cell (workers/actor.py `batch_facts`): rows running and
waiting in its engine, KV pages in use of the pool, the pool's size in tokens, the block-size
rule's reason for its latest K (`k_choice`), and on CUDA the GPU memory allocated and the GPU's
total. The driver keeps the latest cell per actor (pipeline/stats.py) and sums them here:

  kv_occupancy  kv_pages_used / kv_pages over every actor's pool (0.0 before any batch)
  gpu_memory    allocated / total bytes over the actors on CUDA (None when none runs on CUDA)
  k_choice      the most recent batch's reason for its K (the pass-cost rule's line)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from workers.metrics import ratio

_GIB = 2**30


@dataclass(frozen=True)
class EngineState:
    """The latest `_batch` facts, summed over actors."""

    actors: int = 0  # actors that reported a batch
    running: int = 0
    waiting: int = 0
    kv_pages_used: int = 0
    kv_pages: int = 0
    kv_tokens: int = 0
    gpu_memory_allocated: int | None = None
    gpu_memory_total: int | None = None
    k_choice: str = ""

    @classmethod
    def combine(cls, latest: list[dict[str, Any]]) -> "EngineState":
        """Sum per-actor facts; `latest` is ordered oldest first (its last k_choice is the newest)."""
        total = {name: sum(int(f.get(name) or 0) for f in latest)
                 for name in ("running", "waiting", "kv_pages_used", "kv_pages", "kv_tokens")}
        gpus = [f for f in latest if f.get("gpu_memory_total")]
        choices = [f["k_choice"] for f in latest if f.get("k_choice")]
        return cls(actors=len(latest), **total,
                   gpu_memory_allocated=sum(int(f.get("gpu_memory_allocated") or 0) for f in gpus) if gpus else None,
                   gpu_memory_total=sum(int(f["gpu_memory_total"]) for f in gpus) if gpus else None,
                   k_choice=choices[-1] if choices else "")

    @property
    def kv_occupancy(self) -> float:
        """Share of the KV pools' pages in use."""
        return ratio(self.kv_pages_used, self.kv_pages)

    def memory_text(self) -> str:
        """`kv 45% of 2,730 pages | gpu 12.3/139.8 GiB` (each part only where it was reported)."""
        parts = []
        if self.kv_pages:
            parts.append(f"kv {100.0 * self.kv_occupancy:.0f}% of {self.kv_pages:,} pages")
        if self.gpu_memory_total:
            parts.append(f"gpu {self.gpu_memory_allocated / _GIB:.1f}/{self.gpu_memory_total / _GIB:.1f} GiB")
        return " | ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kv_occupancy": self.kv_occupancy}
