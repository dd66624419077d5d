"""GenerateActor: the Ray Data callable class that owns one Engine.

Ray builds one per actor in the pool (`map_batches(GenerateActor, compute=ActorPoolStrategy)`):
`__init__` pays for the heavy imports and the model load once; each `__call__` is one batch of
rows and one `engine.generate` (split in halves when it runs out of memory: workers/rows.py).
torch is imported here only, never in the driver.
"""
from __future__ import annotations

import os
import pyarrow as pa

from workers.hub import is_hub_id
from workers.rows import OOM_ERRORS, engine_info_json, process_batch
from workers.spec import WorkerSpec


def resolve_model_dir(path: str) -> str:
    """A local checkpoint folder for `path`: the folder itself, or a hub snapshot in the HF cache."""
    if os.path.isdir(path):
        return os.path.abspath(path)
    if not is_hub_id(path):
        raise FileNotFoundError(f"model.path {path!r} is not a checkpoint folder nor a hub id (org/name)")
    from workers.loader import resolve

    return str(resolve(path))


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
        model_dir = resolve_model_dir(spec.model_path)
        from workers.draft_length import PassCosts

        costs = PassCosts.from_bench(spec.pass_costs) if spec.pass_costs else None
        self.engine = Engine.from_pretrained(model_dir, device=device, dtype=dtype,
                                             max_batch_size=spec.max_batch_size, max_model_len=spec.max_model_len,
                                             cuda_graphs=spec.cuda_graphs, pass_costs=costs)
        cfg = self.engine.config
        if spec.mode == "orthrus" and not cfg.is_orthrus:
            raise ValueError(f"model {spec.model_path!r} is a plain Qwen3 checkpoint (no Orthrus heads); "
                             f"set engine.mode=ar")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.engine.model_dir))
        if spec.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"model {spec.model_path!r} has no chat template; set prompt.chat_template=false")
        self.info = engine_info_json(
            device=device,
            device_name=torch.cuda.get_device_name() if device == "cuda" else "cpu",
            dtype=dtype,
            model_dir=str(self.engine.model_dir),
            is_orthrus=bool(cfg.is_orthrus),
            block_size=spec.block_size or getattr(cfg, "block_size", None),
            max_model_len=int(self.engine.max_model_len),
            cuda_graphs=bool(getattr(self.engine, "cuda_graphs", False)),
            torch=torch.__version__,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        return process_batch(batch, self.spec, self.tokenizer, self.engine, self.info, self.oom_errors, self.on_oom)

    def __repr__(self) -> str:  # shown in Ray's actor names and errors
        return f"GenerateActor({self.spec.model_path!r}, mode={self.spec.mode})"

