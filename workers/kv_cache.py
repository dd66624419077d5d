"""The preallocated KV cache, written in place by position.

Layout [layers, slots, kv_heads, positions, head_dim]: a decode step reads the first B slots as
a view ([B, KVH, S, D], what SDPA wants) and writes each row's block at its own positions.
Positions at or beyond a row's length hold garbage that the masks never let a query read, so
rejected drafts need no rollback and a reused slot needs no clearing.
"""
from __future__ import annotations

import torch

from workers.config import ModelConfig


class KVCache:
    def __init__(self, cfg: ModelConfig, slots: int, positions: int, device: str | torch.device, dtype: torch.dtype):
        shape = (cfg.num_hidden_layers, slots, cfg.num_key_value_heads, positions, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.slots, self.positions = slots, positions

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def write(self, layer: int, rows: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k/v [B, KVH, T, D] of slots rows [B] at positions pos [B, T]."""
        r = rows[:, None]  # [B, 1] broadcasts against pos [B, T]; result dims [B, T, KVH, D]
        self.k[layer][r, :, pos] = k.transpose(1, 2)
        self.v[layer][r, :, pos] = v.transpose(1, 2)
