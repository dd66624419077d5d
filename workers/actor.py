"""GenerateActor: the Ray Data callable class that owns one Engine.

Ray builds one per actor in the pool (`map_batches(GenerateActor, compute=ActorPoolStrategy)`):
`__init__` pays for the heavy imports and the model load once; each `__call__` is one batch of
rows (workers/batch.py: parse, generate, split in halves when it runs out of memory, build rows). Ray calls it from several
threads at once (pipeline/job.py: `max_concurrent_calls_per_actor`), and every call feeds the same
engine through an EngineLoop, so the next batch's rows join the running batch as slots free up.
torch is imported here only, never in the driver.
"""
from __future__ import annotations

import os
import threading

import pyarrow as pa

from workers.batch import OOM_ERRORS, engine_info_json, process_batch
from workers.model_source import resolve
from workers.spec import WorkerSpec


class GenerateActor:
    """Loads the tokenizer and Engine once; generates one batch per call.

    Args:
        spec: the job's worker settings (model, engine, columns, sampling, chat template).
    """

    def __init__(self, spec: WorkerSpec) -> None:
        import torch
        from transformers import AutoTokenizer

        from workers.engine import Engine

        self.spec = spec
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.oom_errors = OOM_ERRORS + (torch.cuda.OutOfMemoryError,)
        self.on_oom = torch.cuda.empty_cache if device == "cuda" else None
        dtype = spec.dtype if spec.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
        model_dir = os.path.abspath(resolve(spec.model_path))
        from workers.engine_loop import EngineLoop

        e = spec.engine
        self.engine = Engine.from_pretrained(model_dir, device=device, dtype=dtype, **e.engine_kwargs())
        costs_info = self._pass_costs(e.pass_costs if e.mode == "orthrus" else "off")
        self.loop = EngineLoop(self.engine)
        cfg = self.engine.config
        if e.mode == "orthrus" and not cfg.is_orthrus:
            raise ValueError(f"model {spec.model_path!r} is a plain Qwen3 checkpoint (no Orthrus heads); "
                             f"set engine.mode=ar")
        self.tokenizer = LockedTokenizer(AutoTokenizer.from_pretrained(str(self.engine.model_dir)))
        if spec.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"model {spec.model_path!r} has no chat template; set prompt.chat_template=false")
        self.info = engine_info_json(
            device=device,
            device_name=torch.cuda.get_device_name() if device == "cuda" else "cpu",
            dtype=dtype,
            model_dir=str(self.engine.model_dir),
            is_orthrus=bool(cfg.is_orthrus),
            block_size=e.block_size or getattr(cfg, "block_size", None),
            max_model_len=int(self.engine.max_model_len),
            cuda_graphs=bool(getattr(self.engine, "cuda_graphs", False)),
            torch=torch.__version__,
            kv_pool_tokens=int(self.engine.cache.tokens),
            pass_costs=costs_info,
        )

    def _pass_costs(self, setting: str | None) -> dict:
        """engine.pass_costs: "auto" (measured here, cached on local disk), a JSON path, or off."""
        from workers.draft_length import PassCosts, read_rows
        from workers.pass_costs import auto_pass_costs

        if setting in (None, "off"):
            return {"source": "off"}
        if setting == "auto":
            rows, info = auto_pass_costs(self.engine)
        else:
            rows, info = read_rows(setting), {"source": "file", "path": setting}
        self.engine.use_pass_costs(PassCosts.from_rows(rows))
        return {**info, "rows": rows}

    def batch_facts(self) -> str:
        """The `_batch` cell: what the engine is doing as a batch ends (progress lines, summary)."""
        import json

        import torch

        facts = {**self.engine.occupancy(), "k_choice": self.engine.last_choice}
        if self.engine.device.type == "cuda":
            facts["gpu_memory_allocated"] = torch.cuda.memory_allocated(self.engine.device)
            facts["gpu_memory_total"] = torch.cuda.get_device_properties(self.engine.device).total_memory
        return json.dumps(facts, sort_keys=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return process_batch(batch, self.spec, self.tokenizer, self.loop, self.info, self.oom_errors, self.on_oom,
                             self.batch_facts)

    def __repr__(self) -> str:  # shown in Ray's actor names and errors
        return f"GenerateActor({self.spec.model_path!r}, mode={self.spec.engine.mode})"


class LockedTokenizer:
    """The tokenizer behind a lock: concurrent batches share it, and a fast tokenizer's Rust core
    refuses concurrent use ("Already borrowed")."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.lock = tokenizer, threading.Lock()
        self.chat_template = getattr(tokenizer, "chat_template", None)

    def __call__(self, *args, **kwargs):
        with self.lock:
            return self.tokenizer(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        with self.lock:
            return self.tokenizer.apply_chat_template(*args, **kwargs)

    def batch_decode(self, *args, **kwargs):
        with self.lock:
            return self.tokenizer.batch_decode(*args, **kwargs)
