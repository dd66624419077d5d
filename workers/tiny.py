"""Write tiny random checkpoints in the exact Orthrus (or plain Qwen3) format, with a tokenizer.

Tests build their models with this, and `make demo` falls back to it when no trained demo
model is present. The tokenizer is byte-level (256 byte tokens, no merges) plus Qwen3's
special tokens and a mask token, so any text round-trips and the chat template is Qwen3's.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from workers.training.checkpoint import save_safetensors  # the real checkpoint writer; re-exported

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|mask|>"]

# Qwen3's chat template, reduced to what the pipeline uses: roles, a generation prompt, and the
# empty think block that `enable_thinking=False` inserts.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def write_byte_tokenizer(path: str | Path) -> dict[str, int]:
    """Save a byte-level Hugging Face tokenizer to `path`; returns the special-token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}


def tiny_config(*, orthrus: bool = True, vocab_size: int = 272, hidden_size: int = 64, layers: int = 2,
                heads: int = 4, kv_heads: int = 2, head_dim: int = 16, intermediate_size: int = 128,
                tie: bool = True, block_size: int = 8, mask_token_id: int = 261,
                eos_token_id: tuple[int, ...] | int = (258, 256), max_position_embeddings: int = 4096) -> dict:
    cfg = {
        "architectures": ["OrthrusLM" if orthrus else "Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": tie,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "bos_token_id": None,
        "eos_token_id": list(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else eos_token_id,
        "pad_token_id": eos_token_id[-1] if isinstance(eos_token_id, (list, tuple)) else eos_token_id,
        "torch_dtype": "float32",
        "use_cache": False,
    }
    if orthrus:
        cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_orthrus.OrthrusLM"}
        cfg["block_size"] = block_size
        cfg["mask_token_id"] = mask_token_id
    return cfg


def write_tiny_checkpoint(path: str | Path, *, seed: int = 0, init_std: float = 0.02, shards: int = 1,
                          tokenizer: bool = True, dtype: torch.dtype = torch.float32, **config) -> Path:
    """Create a random tiny checkpoint in `path` (config.json, safetensors, tokenizer).

    Keyword arguments go to `tiny_config` (orthrus, vocab_size, hidden_size, layers, tie, ...).
    Norm weights are random around 1 so that a mix-up of AR and diffusion norms shows up.
    """
    from workers.config import ModelConfig
    from workers.model import Qwen3Orthrus

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    raw = tiny_config(**config)
    g = torch.Generator().manual_seed(seed)
    model = Qwen3Orthrus(ModelConfig.from_dict(raw))
    state = {}
    for name, p in model.state_dict().items():
        if name.endswith("norm.weight") or "_norm" in name or "layernorm" in name:
            state[name] = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        else:
            state[name] = init_std * torch.randn(p.shape, generator=g)
    save_safetensors({k: v.to(dtype) for k, v in state.items()}, path, shards)
    raw["torch_dtype"] = str(dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(raw, indent=2))
    if tokenizer:
        write_byte_tokenizer(path)
    return path
