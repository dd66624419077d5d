"""Read a checkpoint (local folder or hub id) into our model: safetensors only, no remote code.

Every tensor in the checkpoint must map to a parameter and every parameter must be loaded; a
mismatch is an error naming the tensor and the file, not a silent random weight.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from workers.config import CheckpointError, ModelConfig
from workers.model import Qwen3Orthrus
from workers.model_source import is_diff_tensor, resolve  # local folder or hub id: the one rule (workers/model_source.py)

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# The inference layout's one table of renamings: a fused weight is its checkpoint parts stacked
# row-wise, in this order (one GEMM instead of several for inputs read together). load_model(fused=True)
# builds the model that way; training loads the checkpoint's own names.
FUSED = {"self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
         "self_attn.qkv_proj_diff": ("self_attn.q_proj_diff", "self_attn.k_proj_diff", "self_attn.v_proj_diff"),
         "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj")}


def sources(param: str) -> list[str]:
    """The checkpoint tensors a model parameter is made of: itself, or the parts of a fused weight."""
    for fused, parts in FUSED.items():
        key = f".{fused}."  # whole module names: `.qkv_proj.` never matches `.qkv_proj_diff.`
        if key in param:
            prefix, suffix = param.split(key)
            return [f"{prefix}.{part}.{suffix}" for part in parts]
    return [param]


def tensor_files(folder: Path) -> dict[str, Path]:
    """Map each tensor name to the safetensors file that holds it."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
        if missing:
            raise CheckpointError(f"{index}: lists shard files that are missing: {', '.join(missing)}")
        return {name: folder / f for name, f in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        if list(folder.glob("*.bin")) or list(folder.glob("*.pt")):
            raise CheckpointError(f"{folder}: only pickle weights (*.bin/*.pt) found; we load safetensors only")
        raise CheckpointError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    with safe_open(str(single), framework="pt") as f:
        return {name: single for name in f.keys()}


def load_model(path_or_id: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
               fused: bool = False) -> tuple[Qwen3Orthrus, Path]:
    """Build the model for the checkpoint and load every tensor; returns (model in eval mode, folder).
    `fused`: the inference layout (FUSED), as the engine loads it."""
    folder = resolve(path_or_id)
    cfg = ModelConfig.from_file(folder / "config.json")
    files = tensor_files(folder)
    with torch.device("meta"):
        model = Qwen3Orthrus(cfg, fused=fused)
    parts = {name: sources(name) for name, _ in model.named_parameters()}
    params = {src: None for srcs in parts.values() for src in srcs}  # checkpoint names the model needs
    if cfg.tie_word_embeddings:
        files.pop("lm_head.weight", None)  # some exporters write the tied head anyway
    unexpected = sorted(n for n in files if n not in params and not n.endswith(IGNORED_SUFFIXES))
    if unexpected:
        hint = " (an OrthrusLM checkpoint needs architectures: ['OrthrusLM'])" if any(is_diff_tensor(n) for n in unexpected) else ""
        raise CheckpointError(f"{folder}: tensors not in the model: {', '.join(unexpected[:5])}{hint}")
    missing = sorted(n for n in params if n not in files)
    if missing:
        raise CheckpointError(f"{folder}: missing tensors: {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    with torch.device("meta"):  # the checkpoint's own layout: the expected shape of every tensor
        shapes = {n: tuple(p.shape) for n, p in Qwen3Orthrus(cfg).named_parameters()}
    tensors: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name in params:
        by_file.setdefault(files[name], []).append(name)
    for fpath, names in by_file.items():
        with safe_open(str(fpath), framework="pt", device="cpu") as f:
            for name in names:
                t = f.get_tensor(name)
                if tuple(t.shape) != shapes[name]:
                    raise CheckpointError(f"{fpath.name}: tensor {name} has shape {tuple(t.shape)}, expected {shapes[name]}")
                tensors[name] = t.to(device=device, dtype=dtype)
    state = {name: torch.cat([tensors.pop(s) for s in srcs]) if len(srcs) > 1 else tensors.pop(srcs[0])
             for name, srcs in parts.items()}
    model.load_state_dict(state, assign=True, strict=True)
    model.inv_freq = model.rope_frequencies(device)
    return model.eval().requires_grad_(False), folder
