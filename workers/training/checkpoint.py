"""Write checkpoints: a plain Qwen3 base, and an Orthrus checkpoint = base tensors + `*_diff` tensors.

The Orthrus writer copies every base tensor byte for byte from the base checkpoint's own files
(never through the training model, whose dtype may differ), so the Orthrus format's "every base
tensor bit-identical to the base" holds by construction; only the `*_diff` tensors are new, stored
in the base's dtype. The config gains what the public format has: architectures ["OrthrusLM"], auto_map,
block_size, mask_token_id.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workers.loader import tensor_files
from workers.model import Qwen3Orthrus
from workers.model_source import is_diff_tensor

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt", "generation_config.json")
SHARD_BYTES = 15 * 1024 * 1024  # < 16 MiB: what one file back from a device call may hold


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, shards: int = 1) -> None:
    """Write a state dict as one `model.safetensors` or `shards` files plus the index.

    Tensors go to shards round-robin in name order; should a shard come out over SHARD_BYTES
    (a few large tensors), the count grows until none is."""
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    if shards <= 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    names = sorted(tensors)
    size = {n: tensors[n].numel() * tensors[n].element_size() for n in names}
    while shards < len(names) and max(sum(size[n] for n in names[i::shards]) for i in range(shards)) > SHARD_BYTES:
        shards += 1
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(path / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    index = {"metadata": {"total_size": sum(size.values())}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def read_base_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint (single file or sharded), as stored."""
    by_file: dict[Path, list[str]] = {}
    for name, path in tensor_files(Path(folder)).items():  # the loader's index reading and its errors
        by_file.setdefault(path, []).append(name)
    out: dict[str, torch.Tensor] = {}
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in names:
                out[name] = f.get_tensor(name)
    return out


def copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def _shards_for(tensors: dict[str, torch.Tensor]) -> int:
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    return max(1, -(-total // SHARD_BYTES))


def write_base_checkpoint(model: Qwen3Orthrus, raw_config: dict, folder: str | Path, tokenizer_dir: Path | None,
                          dtype: torch.dtype = torch.bfloat16) -> Path:
    """Save a plain Qwen3ForCausalLM checkpoint (no `*_diff` tensors) in `dtype`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {n: p.detach().to("cpu", dtype) for n, p in model.state_dict().items() if not is_diff_tensor(n)}
    save_safetensors(state, folder, _shards_for(state))
    cfg = {k: v for k, v in raw_config.items() if k not in ("auto_map", "block_size", "mask_token_id")}
    cfg.update(architectures=["Qwen3ForCausalLM"], torch_dtype=str(dtype).removeprefix("torch."))
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer_dir is not None:
        copy_tokenizer(tokenizer_dir, folder)
    return folder


def diff_state(model: Qwen3Orthrus) -> dict[str, torch.Tensor]:
    """The six `*_diff` tensors of every layer, by checkpoint name."""
    return {n: p.detach().cpu() for n, p in model.state_dict().items() if is_diff_tensor(n)}


def write_orthrus_checkpoint(base_dir: str | Path, diff_tensors: dict[str, torch.Tensor], out_dir: str | Path, *,
                             block_size: int, mask_token_id: int, eos_token_ids: list[int] | None = None) -> Path:
    """Base tensors copied as stored + `diff_tensors` (cast to the base dtype) + an OrthrusLM config."""
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = {n: t for n, t in read_base_tensors(base_dir).items() if not is_diff_tensor(n)}
    dtype = base["model.embed_tokens.weight"].dtype
    clash = sorted(set(base) & set(diff_tensors))
    if clash:
        raise ValueError(f"diff tensors would overwrite base tensors: {clash[:3]}")
    tensors = {**base, **{n: t.to(dtype) for n, t in diff_tensors.items()}}
    for old in list(out_dir.glob("*.safetensors")) + list(out_dir.glob("model.safetensors.index.json")):
        old.unlink()  # a re-run with fewer shards must not leave stale ones behind
    save_safetensors(tensors, out_dir, _shards_for(tensors))
    cfg = json.loads((base_dir / "config.json").read_text())
    cfg.update(architectures=["OrthrusLM"], auto_map={"AutoModelForCausalLM": "modeling_orthrus.OrthrusLM"},
               block_size=int(block_size), mask_token_id=int(mask_token_id), use_cache=False,
               torch_dtype=str(dtype).removeprefix("torch."))
    if eos_token_ids is not None:
        cfg["eos_token_id"] = [int(e) for e in eos_token_ids]
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    if base_dir.resolve() != out_dir.resolve():
        copy_tokenizer(base_dir, out_dir)
    return out_dir
