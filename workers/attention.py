"""How a layer attends over the paged cache: one rule for every pass, and its reference.

Every query sees the keys of its own row at logical positions < its *limit*:
  AR step, verify, prefill: limit = query position + 1 (causal, prefix included);
  diffusion block:          limit = anchor position + K (the prefix plus the whole block, both ways,
                            once the block's diffusion K/V sit in its lookahead slots).
So masks are functions of positions and lengths only (never `is_causal=True`, which aligns
top-left on top of a cache), and nothing a previous row left in a page is ever read.

`PagedAttend` writes a pass's K/V into the cache, then attends through the fused kernel
(workers/paged_attention.py, CUDA) or through `reference_attention` (gather + SDPA; the CPU
path, and what the GPU tests compare the kernel against).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workers.kv_cache import PagedKVCache


def reference_attention(q: torch.Tensor, k_layer: torch.Tensor, v_layer: torch.Tensor, cache: PagedKVCache,
                        table: torch.Tensor, limit: torch.Tensor, n_keys: int) -> torch.Tensor:
    """q [B, H, T, D] of rows with block tables table [B, P]; keys visible below limit [B, T].

    Gathers each row's first n_keys positions (n_keys >= every limit) and runs SDPA with an explicit mask."""
    B = q.shape[0]
    pos = torch.arange(n_keys, device=q.device).expand(B, n_keys)
    slots = cache.slots(table, pos)  # [B, S]
    keys = k_layer[:, slots].transpose(0, 1)  # [B, KVH, S, D]
    vals = v_layer[:, slots].transpose(0, 1)
    mask = (pos[:, None, :] < limit[:, :, None])[:, None]  # [B, 1, T, S]
    return F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, enable_gqa=True)


@dataclass
class Tiles:
    """Which queries the kernel handles together: tile i is queries start[i] .. start[i] + count[i] - 1
    (along T) of q batch entry batch[i], all of cache row row[i]. A decode step has one tile per row;
    a prefill chunk (B = 1) one per slice of a row segment."""

    row: torch.Tensor  # [N] int32
    start: torch.Tensor  # [N] int32: index of the tile's first query along T (decode: 0)
    count: torch.Tensor  # [N] int32
    batch: torch.Tensor  # [N] int32: index along the q batch dimension
    max_count: int


@dataclass
class PagedAttend:
    """The `attend(layer, q, k, v)` a forward calls: store k/v [B, KVH, T, D] at `slots` [B, T],
    then attend with q [B, H, T, D] for queries whose key limits are `limit` [B, T].

    table: [B, P] block tables of the q batch's rows (decode), or of every row (prefill, B = 1,
    where `tiles` says which queries belong to which row). `n_keys` bounds the reference's gather.
    """

    cache: PagedKVCache
    table: torch.Tensor
    slots: torch.Tensor
    limit: torch.Tensor
    n_keys: int
    tiles: Tiles | None = None  # None: decode layout (row b = table row b, T queries each)
    kernel: object | None = None  # workers.paged_attention.PagedAttentionKernel, or None for the reference

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.cache.write(layer, self.slots, k, v)
        kl, vl = self.cache.k[layer], self.cache.v[layer]
        if self.kernel is not None:
            return self.kernel(q, kl, vl, self.cache, self.table, self.limit, self.tiles)
        if self.tiles is None:
            return reference_attention(q, kl, vl, self.cache, self.table, self.limit, self.n_keys)
        return self._reference_segments(q, kl, vl)

    def _reference_segments(self, q: torch.Tensor, kl: torch.Tensor, vl: torch.Tensor) -> torch.Tensor:
        """Packed prefill on the reference path: one SDPA per row segment."""
        out = torch.empty_like(q)
        t = self.tiles
        for row, start, count in zip(t.row.tolist(), t.start.tolist(), t.count.tolist()):
            seg = slice(start, start + count)
            lim = self.limit[:, seg]  # [1, count]
            n_keys = int(lim.max())
            out[:, :, seg] = reference_attention(q[:, :, seg], kl, vl, self.cache, self.table[row : row + 1], lim, n_keys)
        return out
