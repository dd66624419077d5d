"""Qwen3 with the Orthrus diffusion view: our own module tree, named exactly like the checkpoint.

Two views share everything but attention (the Orthrus paper, arXiv 2605.12825): the "ar" view uses q/k/v/o_proj and
q/k_norm; the "diffusion" view uses their `*_diff` twins. How a layer attends (which keys,
which mask, whether the KV cache is written) is not the model's business: every forward takes
an `attend(layer_idx, q, k, v) -> out` callable, so the engine's cached decode step, the
prefill and the head-training pass reuse the same layers.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from workers.config import ModelConfig
from workers.fused import Ops

Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
VIEWS = ("ar", "diffusion")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Ops.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, orthrus: bool, fused: bool = False) -> None:
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        bias = cfg.attention_bias
        self.split = [self.n_heads * d, self.n_kv * d, self.n_kv * d]
        self.orthrus = orthrus
        if fused:  # the inference layout (workers/loader.FUSED): one GEMM instead of three
            self.qkv_proj = nn.Linear(h, sum(self.split), bias=bias)
        else:
            self.q_proj = nn.Linear(h, self.n_heads * d, bias=bias)
            self.k_proj = nn.Linear(h, self.n_kv * d, bias=bias)
            self.v_proj = nn.Linear(h, self.n_kv * d, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * d, h, bias=bias)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)
        if orthrus:  # the diffusion view's own projections and norms; no biases (the Orthrus paper, arXiv 2605.12825)
            if fused:
                self.qkv_proj_diff = nn.Linear(h, sum(self.split), bias=False)
            else:
                self.q_proj_diff = nn.Linear(h, self.n_heads * d, bias=False)
                self.k_proj_diff = nn.Linear(h, self.n_kv * d, bias=False)
                self.v_proj_diff = nn.Linear(h, self.n_kv * d, bias=False)
            self.o_proj_diff = nn.Linear(self.n_heads * d, h, bias=False)
            self.q_norm_diff = RMSNorm(d, cfg.rms_norm_eps)
            self.k_norm_diff = RMSNorm(d, cfg.rms_norm_eps)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, view: str):
        """Queries, keys, values of one view, normed and rotated. x: [B, T, hidden]."""
        B, T, _ = x.shape
        diff = view == "diffusion"
        qn, kn = (self.q_norm_diff, self.k_norm_diff) if diff else (self.q_norm, self.k_norm)
        if hasattr(self, "qkv_proj"):  # the inference layout
            q, k, v = (self.qkv_proj_diff if diff else self.qkv_proj)(x).split(self.split, dim=-1)
        elif diff:
            q, k, v = self.q_proj_diff(x), self.k_proj_diff(x), self.v_proj_diff(x)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = Ops.norm_rope(q.view(B, T, self.n_heads, self.head_dim), qn.weight, qn.eps, cos, sin)  # [B, T, H, D]
        k = Ops.norm_rope(k.view(B, T, self.n_kv, self.head_dim), kn.weight, kn.eps, cos, sin)  # [B, T, KVH, D]
        v = v.view(B, T, self.n_kv, self.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, D]

    def forward(self, x, cos, sin, view: str, attend: Attend, layer_idx: int) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project(x, cos, sin, view)
        out = attend(layer_idx, q, k, v)  # [B, H, T, D]
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return (self.o_proj_diff if view == "diffusion" else self.o_proj)(out)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, fused: bool = False) -> None:
        super().__init__()
        if fused:  # the inference layout (workers/loader.FUSED)
            self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        else:
            self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
            self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "gate_up_proj"):
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(Ops.silu_mul(gate, up))
        return self.down_proj(Ops.silu_mul(self.gate_proj(x), self.up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, orthrus: bool, fused: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(cfg, orthrus, fused)
        self.mlp = MLP(cfg, fused)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, view: str, attend: Attend, layer_idx: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, view, attend, layer_idx)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    """`model.*` in the checkpoint: embeddings, layers, final norm."""

    def __init__(self, cfg: ModelConfig, orthrus: bool, fused: bool = False) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, orthrus, fused) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen3Orthrus(nn.Module):
    """Qwen3ForCausalLM, plus the diffusion view when `orthrus` (an OrthrusLM checkpoint).

    `fused`: the inference layout, where weights that read the same input are one matrix
    (qkv_proj, qkv_proj_diff, gate_up_proj; workers/loader.FUSED maps them to the checkpoint's
    names). Training builds the checkpoint's own layout (fused=False)."""

    def __init__(self, cfg: ModelConfig, orthrus: bool | None = None, fused: bool = False) -> None:
        super().__init__()
        self.config = cfg
        self.orthrus = cfg.is_orthrus if orthrus is None else orthrus
        self.model = Body(cfg, self.orthrus, fused)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.register_buffer("inv_freq", self.rope_frequencies(), persistent=False)

    def rope_frequencies(self, device=None) -> torch.Tensor:
        """RoPE inverse frequencies, fp32. Recomputed after loading (meta-device builds leave it empty)."""
        d = self.config.head_dim
        return 1.0 / (self.config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))

    def rotary(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos/sin for absolute positions [B, T] -> [B, T, 1, D] (broadcast over heads), computed in fp32."""
        freqs = positions.float()[..., None] * self.inv_freq  # [B, T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None]  # [B, T, 1, D]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, view: str, attend: Attend) -> torch.Tensor:
        """Final-normed hidden states [B, T, hidden] for tokens [B, T] at positions [B, T]."""
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if view == "diffusion" and not self.orthrus:
            raise ValueError("this checkpoint has no diffusion view (no *_diff tensors): use mode='ar'")
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rotary(positions, x.dtype)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, view, attend, i)
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.model.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight
        return F.linear(hidden, weight)  # [..., V]
