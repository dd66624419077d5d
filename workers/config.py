"""Model configuration read from a checkpoint's config.json (Qwen3 or OrthrusLM).

We read config.json ourselves rather than through transformers' config classes: their field
names move between major versions (`rope_theta` became `rope_parameters` in v5) and the
engine only needs a handful of numbers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QWEN3_EOS_IDS = (151645, 151643)  # <|im_end|>, <|endoftext|>: Qwen3 stops on both


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    eos_token_ids: tuple[int, ...]
    is_orthrus: bool
    block_size: int | None = None
    mask_token_id: int | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        def need(key: str) -> Any:
            if key not in raw:
                raise CheckpointError(f"{source}: missing required field '{key}'")
            return raw[key]

        if raw.get("model_type") not in ("qwen3", None):
            raise CheckpointError(f"{source}: model_type is {raw.get('model_type')!r}; only 'qwen3' is supported")
        archs = raw.get("architectures") or []
        is_orthrus = "OrthrusLM" in archs
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", None):
            raise CheckpointError(f"{source}: rope type {rope_type!r} is not supported (only default RoPE)")
        rope_theta = raw.get("rope_theta", rope.get("rope_theta"))
        if rope_theta is None:
            raise CheckpointError(f"{source}: missing required field 'rope_theta'")
        if raw.get("use_sliding_window"):
            raise CheckpointError(f"{source}: use_sliding_window=true is not supported")
        hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
        eos = raw.get("eos_token_id", QWEN3_EOS_IDS)
        eos_ids = tuple(eos) if isinstance(eos, list) else (eos,)
        if eos_ids == (151645,):  # released configs list only <|im_end|>; Qwen3 also ends on 151643
            eos_ids = QWEN3_EOS_IDS
        block_size = mask_token_id = None
        if is_orthrus:
            block_size, mask_token_id = int(need("block_size")), int(need("mask_token_id"))
        cfg = cls(
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_hidden_layers=int(need("num_hidden_layers")),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get("num_key_value_heads", heads)),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            max_position_embeddings=int(raw.get("max_position_embeddings", 40960)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=bool(raw.get("attention_bias", False)),
            eos_token_ids=tuple(int(e) for e in eos_ids if e is not None),
            is_orthrus=is_orthrus,
            block_size=block_size,
            mask_token_id=mask_token_id,
        )
        if cfg.num_attention_heads % cfg.num_key_value_heads:
            raise CheckpointError(f"{source}: num_attention_heads must be a multiple of num_key_value_heads")
        if is_orthrus and not 0 <= cfg.mask_token_id < cfg.vocab_size:
            raise CheckpointError(f"{source}: mask_token_id {cfg.mask_token_id} is outside the vocabulary")
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: config.json not found")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(raw, source=str(path))
