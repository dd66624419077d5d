"""WorkerSpec: everything an engine actor needs to know, as a frozen value.

The driver builds it from the job config (pipeline/job.py: each section's fields map one to one
onto EngineSettings and SamplingParams); the worker never sees pydantic or YAML, so `workers` does
not import `pipeline` (imports run jobs -> pipeline -> workers).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from workers.params import SamplingParams


@dataclass(frozen=True)
class EngineSettings:
    """How the actor's engine decodes (the job's `engine:` section, described in pipeline/config.py)."""

    mode: str = "orthrus"  # orthrus | ar
    block_size: int | None = None  # None: the checkpoint's K
    max_batch_size: int = 64
    max_model_len: int = 4096
    cuda_graphs: bool | None = None  # None: on when the actor runs on CUDA
    pass_costs: str | None = "auto"  # auto (measured at actor start) | off | a bench JSON (workers/pass_costs.py)
    kv_cache_memory_fraction: float = 0.9  # CUDA: share of GPU memory for weights, activations and the KV pool
    kv_cache_tokens: int | None = None  # an explicit KV pool size (tokens) instead of the fraction
    max_concurrent_batches: int = 4  # Ray batches one actor serves at once, all feeding one engine

    def engine_kwargs(self) -> dict:
        """Engine.from_pretrained's settings beyond the model path and dtype."""
        return {"max_batch_size": self.max_batch_size, "max_model_len": self.max_model_len,
                "cuda_graphs": self.cuda_graphs, "kv_cache_memory_fraction": self.kv_cache_memory_fraction,
                "kv_cache_tokens": self.kv_cache_tokens}


def default_sampling() -> SamplingParams:
    """The job's `sampling:` defaults; `seed` is the job's base seed (each row derives its own)."""
    return SamplingParams(seed=0)


@dataclass(frozen=True)
class WorkerSpec:
    model_path: str  # local folder or hub id
    dtype: str = "auto"  # auto | float32 | bfloat16
    engine: EngineSettings = field(default_factory=EngineSettings)
    sampling: SamplingParams = field(default_factory=default_sampling)  # every row's defaults
    prompt_column: str | None = "prompt"
    messages_column: str | None = None
    id_column: str | None = None
    sampling_columns: tuple[tuple[str, str], ...] = ()  # (SamplingParams field, input column)
    chat_template: bool = True
    enable_thinking: bool = False
    too_long: str = "error"  # error | truncate (keep the end of the prompt)
    s3_input: bool = False  # Ray's `path` column drops the scheme; put s3:// back for `shard`
    duplicate_rows: dict[int, str] = field(default_factory=dict)  # Ray row hash -> error (pipeline/ids.py)
