"""The `attend` callables the model calls once per layer, and the masks they use.

Masks are built from positions, never with `is_causal=True` (top-left aligned when queries and
keys differ in length: wrong on top of a cache, ORTHRUS.md). True = may attend.
  verify / AR / prefill: key position <= query position (causal, prefix included);
  diffusion: key position < anchor position + K (the prefix plus the whole block, both ways).
A row's keys at or beyond its own length + K are never visible, whatever an earlier row left there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workers.kv_cache import KVCache


def causal_mask(q_pos: torch.Tensor, n_keys: int) -> torch.Tensor:
    """[B, 1, T, S]: key s visible to the query at q_pos[b, t] iff s <= q_pos[b, t]."""
    keys = torch.arange(n_keys, device=q_pos.device)
    return (keys <= q_pos[:, :, None])[:, None]


def block_mask(length: torch.Tensor, K: int, n_keys: int) -> torch.Tensor:
    """[B, 1, 1, S]: the diffusion view sees the prefix and its whole block: s < length + K."""
    keys = torch.arange(n_keys, device=length.device)
    return (keys < (length[:, None] + K))[:, None, None]


@dataclass
class CachedAttend:
    """Write this pass's K/V into the cache at `pos`, then attend over the rows' cached keys.

    rows: [B] slot ids; `contiguous` means rows == 0..B-1, so the cache is read as a view.
    n_keys bounds the key positions read (static for a decode step; the prompt end at prefill).
    """

    cache: KVCache
    rows: torch.Tensor
    pos: torch.Tensor
    mask: torch.Tensor
    n_keys: int
    contiguous: bool

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.cache.write(layer, self.rows, self.pos, k, v)
        if self.contiguous:  # a decode step: read the first B slots of the cache in place
            keys = self.cache.k[layer, : q.shape[0], :, : self.n_keys]  # [B, KVH, S, D]
            vals = self.cache.v[layer, : q.shape[0], :, : self.n_keys]
            if q.shape[2] > 1:  # a block of queries: SDPA is slow here (grouped_attention)
                return grouped_attention(q, keys, vals, self.mask)
            # one query per row (AR): SDPA's kernel beat the GEMM pair on the H200 (7.5 vs 8.8 ms
            # per 8B step at B=64; bench/results/2026-11-29_h200_8b_*.log)
        else:  # prefill of some slots: gather their rows
            keys = self.cache.k[layer][self.rows, :, : self.n_keys]
            vals = self.cache.v[layer][self.rows, :, : self.n_keys]
        return F.scaled_dot_product_attention(q, keys, vals, attn_mask=self.mask, enable_gqa=True)


def grouped_attention(q: torch.Tensor, keys: torch.Tensor, vals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention for a handful of queries per row over a long cache, as two batched GEMMs.

    The G query heads that share a KV head are stacked with the block's T queries, so each
    cached key and value is read once per KV head (no repeat) by one GEMM. On the H200, SDPA's
    fused kernels spent ~40x the cache-read time on a 2-query block with a mask (bench/results).
    q: [B, H, T, D]; keys/vals: [B, KVH, S, D]; mask: [B, 1, T or 1, S] (True = attend)."""
    B, H, T, D = q.shape
    KVH, S = keys.shape[1], keys.shape[2]
    G = H // KVH
    qg = q.reshape(B, KVH, G * T, D)  # head h = kvh * G + g, as enable_gqa groups them
    scores = torch.matmul(qg, keys.transpose(-1, -2)).float() * D**-0.5  # [B, KVH, G*T, S]
    m = mask.expand(B, 1, T, S)[:, :, None].expand(B, 1, G, T, S).reshape(B, 1, G * T, S)
    probs = scores.masked_fill(~m, float("-inf")).softmax(-1).to(q.dtype)
    return torch.matmul(probs, vals).reshape(B, H, T, D)  # [B, H, T, D]
