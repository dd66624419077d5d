"""The paged KV cache: a pool of fixed-size pages, a block table per row, pages handed out on the host.

Layout per layer: k, v [KVH, num_pages * page_size, D]. A token's *slot* is
`page * page_size + offset`; row r's logical position p lives at slot
`block_table[r, p // page_size] * page_size + p % page_size`. Pages are reserved for a row's
length + K before each iteration, so a block's K/V always has a home and rejected drafts are just
left beyond the row's length (no rollback). Slots at or beyond a row's length hold garbage that no
query may read. The first `trash_pages` pages are never handed out: rows that are not decoding
write there (a free or prefilling slot inside a batch bucket), and block-table entries that no
page backs point there.
"""
from __future__ import annotations

import torch

from workers.config import ModelConfig


def bytes_per_token(cfg: ModelConfig, dtype: torch.dtype) -> int:
    """K and V of one token over all layers (Qwen3-8B, bf16: 144 KiB)."""
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * dtype.itemsize


class PagePool:
    """Free pages on the host. Page ids below `first` are the trash pages and never leave."""

    def __init__(self, num_pages: int, first: int) -> None:
        self.free: list[int] = list(range(num_pages - 1, first - 1, -1))  # pop() hands out low ids first
        self.capacity = num_pages - first

    def take(self, n: int) -> list[int] | None:
        """n pages, or None (and nothing taken) when fewer are free."""
        if n > len(self.free):
            return None
        return [self.free.pop() for _ in range(n)]

    def give_back(self, pages: list[int]) -> None:
        self.free.extend(reversed(pages))

    @property
    def used(self) -> int:
        return self.capacity - len(self.free)


class PagedKVCache:
    def __init__(self, cfg: ModelConfig, num_pages: int, page_size: int, rows: int, max_len: int,
                 max_block: int, device: str | torch.device, dtype: torch.dtype) -> None:
        self.page_size = page_size
        self.trash_pages = -(-max_block // page_size)
        if num_pages <= self.trash_pages:
            raise ValueError(f"a KV pool of {num_pages} pages of {page_size} tokens is too small")
        shape = (cfg.num_hidden_layers, cfg.num_key_value_heads, num_pages * page_size, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pages_per_row = -(-(max_len + max_block) // page_size)
        self.block_table = torch.zeros(rows, self.pages_per_row, dtype=torch.long, device=device)  # [rows, P]
        self.pool = PagePool(num_pages, self.trash_pages)
        self.num_pages = num_pages

    @property
    def tokens(self) -> int:
        """Tokens the pool can hold for rows (trash pages excluded)."""
        return self.pool.capacity * self.page_size

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def pages_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.page_size)

    def set_pages(self, row: int, start: int, pages: list[int]) -> None:
        """Entries start.. of row's block table (one small host-to-device copy)."""
        if pages:
            self.block_table[row, start : start + len(pages)] = torch.tensor(pages, dtype=torch.long).to(
                self.block_table.device, non_blocking=True)

    def clear_row(self, row: int) -> None:
        self.block_table[row].zero_()

    def slots(self, table: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Slots of positions pos [B, T] in rows whose block tables are table [B, P] (a decode step)."""
        return self._slot(table.gather(1, pos // self.page_size), pos)

    def slots_of_rows(self, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Slots of tokens at positions pos [N] of block-table rows rows [N] (a packed prefill)."""
        return self._slot(self.block_table[rows, pos // self.page_size], pos)

    def _slot(self, page: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return page * self.page_size + pos % self.page_size

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k/v [B, KVH, T, D] at slots [B, T]."""
        flat = slots.reshape(-1)  # [B*T]
        self.k[layer].index_copy_(1, flat, k.transpose(0, 1).reshape(k.shape[1], -1, k.shape[-1]))
        self.v[layer].index_copy_(1, flat, v.transpose(0, 1).reshape(v.shape[1], -1, v.shape[-1]))
