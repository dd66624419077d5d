"""Fused attention over the paged cache (Triton, CUDA): one kernel for AR, verify, diffusion and prefill.

A program takes one *tile* (up to TQ queries of one cache row: a decode row's K-token block, or a
slice of a prefill segment) for one KV head, and stacks the tile's queries with the G query heads
that share that KV head into BLOCK_M = TQ x G rows. It walks the row's pages once, BLOCK_N keys
at a time (the block table is read per key, so any power-of-two page size works), with an online
softmax and each query's own key limit (attention.py). So each KV page is read once per pass for
all K queries of a block: the cost of a block pass stays close to one AR step's cache read, where
a materialised [G*K, keys] score matrix grew with K x context (bench/results).

Short batches over long contexts are split along the keys (SPLITS programs per tile and head; a
second kernel merges them by log-sum-exp). Lengths are tensors the kernel reads, so a captured
CUDA graph serves every context length: graphs are keyed by (batch bucket, K) only.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 64


@triton.jit
def _attend_kernel(Q, K, V, Out, Part, Lse, Table, Limit, TileRow, TileStart, TileCount, TileBatch,
                   stride_qb, stride_qh, stride_qt, stride_kh, stride_ks, stride_tab, stride_lb, stride_lt,
                   n_batch, n_heads, n_t, scale,
                   G: tl.constexpr, BLOCK_M: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr,
                   BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, IEEE: tl.constexpr):
    tile, kvh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    row = tl.load(TileRow + tile).to(tl.int64)
    start = tl.load(TileStart + tile)
    count = tl.load(TileCount + tile)
    b = tl.load(TileBatch + tile).to(tl.int64)
    m = tl.arange(0, BLOCK_M)
    t = start + m // G  # query index along T
    head = kvh * G + m % G
    valid = (m // G) < count
    d = tl.arange(0, D)
    q_off = b * stride_qb + head.to(tl.int64)[:, None] * stride_qh + t[:, None] * stride_qt + d[None, :]
    q = tl.load(Q + q_off, mask=valid[:, None], other=0.0)  # [BLOCK_M, D]
    limit = tl.load(Limit + b * stride_lb + t * stride_lt, mask=valid, other=0)  # [BLOCK_M]
    top = tl.max(limit, 0)
    n_blocks = tl.cdiv(top, BLOCK_N)
    per_split = tl.cdiv(n_blocks, SPLITS)
    first = split * per_split
    last = tl.minimum(first + per_split, n_blocks)
    m_i = tl.full([BLOCK_M], -1e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    n = tl.arange(0, BLOCK_N)
    k_base = K + kvh.to(tl.int64) * stride_kh
    v_base = V + kvh.to(tl.int64) * stride_kh
    for blk in range(first, last):
        kpos = blk * BLOCK_N + n  # [BLOCK_N] logical key positions
        page = tl.load(Table + row * stride_tab + kpos // PAGE, mask=kpos < top, other=0)
        slot = page * PAGE + kpos % PAGE
        k = tl.load(k_base + slot[None, :] * stride_ks + d[:, None])  # [D, BLOCK_N]
        if IEEE:
            s = tl.dot(q, k, input_precision="ieee")
        else:
            s = tl.dot(q, k)
        s = tl.where(kpos[None, :] < limit[:, None], s * scale, float("-inf"))  # [BLOCK_M, BLOCK_N]
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + slot[:, None] * stride_ks + d[None, :])  # [BLOCK_N, D]
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    o_off = ((b * n_heads + head.to(tl.int64)) * n_t + t)[:, None] * D + d[None, :]  # [B, H, T, D] contiguous
    if SPLITS == 1:
        out = acc / tl.maximum(l_i, 1e-30)[:, None]
        tl.store(Out + o_off, out.to(Out.dtype.element_ty), mask=valid[:, None])
    else:
        size = n_batch * n_heads * n_t
        tl.store(Part + split * size * D + o_off, acc / tl.maximum(l_i, 1e-30)[:, None], mask=valid[:, None])
        lse = tl.where(l_i > 0, m_i + tl.log(tl.maximum(l_i, 1e-30)), float("-inf"))
        tl.store(Lse + split * size + (b * n_heads + head.to(tl.int64)) * n_t + t, lse, mask=valid)


@triton.jit
def _merge_kernel(Part, Lse, Out, size, SPLITS: tl.constexpr, D: tl.constexpr):
    """Out[i] = sum_s w_s Part[s, i] / sum_s w_s with w_s = exp(Lse[s, i] - max_s Lse[s, i])."""
    i = tl.program_id(0).to(tl.int64)
    s = tl.arange(0, SPLITS)
    d = tl.arange(0, D)
    lse = tl.load(Lse + s * size + i)  # [SPLITS]
    top = tl.max(lse, 0)
    w = tl.where(lse > float("-inf"), tl.exp(lse - top), 0.0)
    part = tl.load(Part + (s[:, None] * size + i) * D + d[None, :])  # [SPLITS, D]
    out = tl.sum(part * w[:, None], 0) / tl.maximum(tl.sum(w, 0), 1e-30)
    tl.store(Out + i * D + d, out.to(Out.dtype.element_ty))


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class PagedAttentionKernel:
    """Calls the kernel for PagedAttend (attention.py); holds the decode tiles per batch size."""

    def __init__(self, device: torch.device) -> None:
        self.sms = torch.cuda.get_device_properties(device).multi_processor_count
        self.decode_tiles: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}

    def _decode_tiles(self, B: int, T: int, device) -> tuple[torch.Tensor, ...]:
        if (B, T) not in self.decode_tiles:
            rows = torch.arange(B, dtype=torch.int32, device=device)
            self.decode_tiles[(B, T)] = (rows, torch.zeros_like(rows), torch.full_like(rows, T), rows)
        return self.decode_tiles[(B, T)]

    def __call__(self, q, k_layer, v_layer, cache, table, limit, tiles) -> torch.Tensor:
        B, H, T, D = q.shape
        KVH = k_layer.shape[0]
        G = H // KVH
        if tiles is None:  # decode: tile b = row b's T queries
            row, start, count, batch = self._decode_tiles(B, T, q.device)
            TQ = T
        else:
            row, start, count, batch, TQ = tiles.row, tiles.start, tiles.count, tiles.batch, tiles.max_count
        n_tiles = row.shape[0]
        block_m = max(16, _pow2(TQ * G))
        splits = 1 if tiles is not None else min(16, _pow2(-(-2 * self.sms // (n_tiles * KVH))))
        out = torch.empty((B, H, T, D), dtype=q.dtype, device=q.device)
        size = B * H * T
        part = torch.empty((splits, size, D), dtype=torch.float32, device=q.device) if splits > 1 else out
        lse = torch.empty((splits, size), dtype=torch.float32, device=q.device) if splits > 1 else out
        _attend_kernel[(n_tiles, KVH, splits)](
            q, k_layer, v_layer, out, part, lse, table, limit, row, start, count, batch,
            q.stride(0), q.stride(1), q.stride(2), k_layer.stride(0), k_layer.stride(1), table.stride(0),
            limit.stride(0), limit.stride(1), B, H, T, D**-0.5,
            G=G, BLOCK_M=block_m, D=D, PAGE=cache.page_size, BLOCK_N=BLOCK_N, SPLITS=splits,
            IEEE=q.dtype == torch.float32, num_warps=8 if block_m >= 128 else 4, num_stages=2)
        if splits > 1:
            _merge_kernel[(size,)](part, lse, out, size, SPLITS=splits, D=D)
        return out
