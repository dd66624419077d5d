"""Measuring pass costs on the device the engine runs on, and keeping them on local disk.

A pass cost is the steady time of one iteration (K = 1: an AR step; K > 1: diffusion + verify) for
B decoding rows at context `ctx`: the step the engine really runs (captured graph on CUDA) replayed
on rows given distinct pages (so every row's cache is really read: shared pages would hit in L2).
Shapes whose rows do not fit the pool are left out (the table extrapolates along context).
`auto_pass_costs` measures a small grid within a time budget when an actor starts and caches the
table keyed by device, model and engine settings, so later actors and jobs reuse it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from workers.draft_length import read_rows

# the grid `auto` measures: (batches, blocks, contexts); a CPU runs small models on short contexts
AUTO_GRID = {"cuda": ((1, 4, 16, 64, 256), (1, 2, 4, 8, 16), (512, 4096)),
             "cpu": ((1, 8, 64), (1, 2, 4, 8), (128, 1024))}


def _timer(device: torch.device):
    if device.type == "cuda":
        def run(fn) -> float:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            return a.elapsed_time(b)
    else:
        def run(fn) -> float:
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
    return run


def measure(engine, batches, blocks, contexts, repeat: int = 7, budget_s: float | None = None) -> list[dict]:
    """Median ms per iteration for each (context, batch, K) that fits; the engine must be idle."""
    if engine.has_unfinished():
        raise RuntimeError("pass costs are measured on an idle engine")
    st, cache, time_it = engine.state, engine.cache, _timer(engine.device)
    t_end = time.perf_counter() + budget_s if budget_s else float("inf")
    rows = []
    for ctx in contexts:
        for B in batches:
            if B > engine.max_batch_size or ctx + max(blocks) > engine.max_model_len + engine.max_block_size:
                continue
            pages = cache.pool.take(B * cache.pages_for(ctx + max(blocks)))
            if pages is None:
                continue
            per = len(pages) // B
            for r in range(B):
                cache.set_pages(r, 0, pages[r * per : (r + 1) * per])
            try:
                for K in blocks:
                    if K > 1 and not engine.config.is_orthrus or time.perf_counter() > t_end:
                        continue
                    def fill():
                        st.active[:B], st.length[:B], st.generated[:B], st.budget[:B] = True, ctx, 0, 1 << 40
                        st.greedy[:B], st.stop_ids[:B] = True, -1
                        for name in st.COUNTERS:  # `iterations` indexes `hist`: it must not run past its width
                            getattr(st, name)[:B] = 0

                    fill()
                    with torch.inference_mode():
                        engine.run_step(B, K, ctx + K, False)  # capture (CUDA) or warm-up
                        times = []
                        for _ in range(repeat):
                            fill()
                            times.append(time_it(lambda: engine.run_step(B, K, ctx + K, False)))
                    rows.append({"context": ctx, "batch": B, "block_size": K,
                                 "ms_per_iteration": round(sorted(times)[len(times) // 2], 3)})
            finally:
                for r in range(B):
                    cache.clear_row(r)
                cache.pool.give_back(pages)
                for t in (st.active, st.length, st.tally, st.generated, *(getattr(st, n) for n in st.COUNTERS)):
                    t.zero_()
    return rows


def cache_key(engine) -> str:
    """Device, model and the engine settings a pass cost depends on."""
    device = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else f"cpu-{os.cpu_count()}"
    parts = {"device": device, "model": str(engine.model_dir), "dtype": str(engine.dtype),
             "graphs": engine.cuda_graphs, "max_batch_size": engine.max_batch_size, "torch": torch.__version__,
             "page_size": engine.cache.page_size}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def auto_pass_costs(engine, cache_dir: str | Path | None = None, budget_s: float | None = None) -> tuple[list[dict], dict]:
    """Pass-cost rows for this engine: read from the local cache, else measured and cached.

    Returns (rows, info) where info says where they came from and how long measuring took."""
    folder = Path(cache_dir or os.environ.get("ORTHRUS_CACHE") or Path.home() / ".cache" / "orthrus-batch")
    path = folder / f"pass_costs-{cache_key(engine)}.json"
    if path.is_file():
        try:
            return read_rows(path), {"source": "cache", "path": str(path), "seconds": 0.0}
        except ValueError:
            pass  # a torn or foreign file: measure again
    t0 = time.perf_counter()
    budget_s = budget_s or (40.0 if engine.device.type == "cuda" else 10.0)
    batches, blocks, contexts = AUTO_GRID["cuda" if engine.device.type == "cuda" else "cpu"]
    blocks = tuple(k for k in blocks if k == 1 or engine.config.is_orthrus and k <= engine.max_block_size)
    rows = measure(engine, [b for b in batches if b <= engine.max_batch_size] or [engine.max_batch_size],
                   blocks, [c for c in contexts if c < engine.max_model_len] or [engine.max_model_len // 2],
                   repeat=5, budget_s=budget_s)
    seconds = round(time.perf_counter() - t0, 2)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pass_costs": rows, "measured_seconds": seconds}, indent=1))
    tmp.replace(path)  # atomic: concurrent actors never read half a file
    return rows, {"source": "measured", "path": str(path), "seconds": seconds}
