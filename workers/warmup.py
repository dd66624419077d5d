"""The warm-up forward that sizes the KV pool: how much memory the largest passes need beside it.

nano-vllm's recipe: after the weights are loaded, run the biggest forwards the engine will run (a
full prefill chunk; an iteration at max_batch_size rows and the largest block, greedy) on a small
temporary cache and take the peak; the pool gets what is left of the budget. CUDA only.
"""
from __future__ import annotations

import torch

from workers.kv_cache import PagedKVCache, bytes_per_token
from workers.orthrus import SlotState, iterate, prefill


def peak_forward_bytes(engine, page_size: int) -> int:
    """Peak bytes allocated beyond the weights by one prefill chunk and one widest iteration."""
    B, K, chunk = engine.max_batch_size, engine.max_block_size, engine.prefill_chunk
    ps = page_size
    rows = B + 1
    pages = -(-K // ps) + rows * -(-(max(chunk, K) + K) // ps)
    cache = PagedKVCache(engine.config, pages, ps, rows, max(chunk, K), K, engine.device, engine.dtype)
    state = SlotState.allocate(B, max(chunk, K), 1, K, engine.device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.inference_mode():
        mine = cache.pool.take(cache.pages_for(chunk))
        cache.set_pages(B, 0, mine)
        prefill(engine.model, cache, [(B, [0] * chunk, 0)], engine.kernel)
        state.active[:] = True
        state.budget[:] = 1 << 30
        iterate(engine.model, cache, state, B, K if engine.config.is_orthrus else 1, K, False, engine.kernel)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del cache, state
    torch.cuda.empty_cache()
    return int(peak * 1.1)  # headroom: sampling rows and allocator fragmentation


def pool_tokens(engine, page_size: int, fraction: float) -> int:
    """Tokens for the KV pool: on the CPU as many as max_batch_size full rows; on CUDA what
    `fraction` of the GPU leaves after the weights and a warm-up forward at the largest shapes."""
    per_row = engine.max_model_len + engine.max_block_size
    if engine.device.type != "cuda":
        return engine.max_batch_size * per_row
    peak = peak_forward_bytes(engine, page_size)
    free = fraction * torch.cuda.get_device_properties(engine.device).total_memory - torch.cuda.memory_allocated() - peak
    tokens = int(free // bytes_per_token(engine.config, engine.dtype))
    return max(min(tokens, engine.max_batch_size * per_row), per_row)
