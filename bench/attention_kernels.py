"""Block attention over a long cache, one layer at the Qwen3-8B shape: our paged Triton kernel
against torch's FlexAttention and the grouped-GEMM code it replaced (bf16, H200).

    python bench/attention_kernels.py --out bench/results/attention_kernels_h200.json

For each (batch, K, context) it times one layer's attention for B rows of K queries (32 query
heads, 8 KV heads, head_dim 128) over `context` cached keys per row, and reports the cache-read
floor (bytes of K and V read once, at the measured bandwidth). FlexAttention is given its best
case: a contiguous [B, KVH, S, D] cache (no paging) with a mask_mod that reads each row's limit,
compiled, and its block mask built outside the timed region; a paged layout can only add to it.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

import torch

from workers.config import ModelConfig
from workers.kv_cache import PagedKVCache
from workers.paged_attention import PagedAttentionKernel
from workers.tiny import tiny_config

H, KVH, D = 32, 8, 128


def cuda_ms(fn, repeat: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def grouped_gemm(q, keys, vals, limit):
    """The old path: fp32 scores [B, KVH, G*T, S] materialised, masked and soft-maxed."""
    B, _, T, _ = q.shape
    S = keys.shape[2]
    G = H // KVH
    scores = torch.matmul(q.reshape(B, KVH, G * T, D), keys.transpose(-1, -2)).float() * D**-0.5
    vis = torch.arange(S, device=q.device) < limit[:, None, :, None]  # [B, 1, T, S]
    vis = vis[:, :, None].expand(B, 1, G, T, S).reshape(B, 1, G * T, S)
    probs = scores.masked_fill(~vis, float("-inf")).softmax(-1).to(q.dtype)
    return torch.matmul(probs, vals).reshape(B, H, T, D)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="1,32,512;1,32,8192;16,4,8192;64,1,8192;64,8,8192;64,8,512;256,8,512")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    x = torch.ones(2 << 30, dtype=torch.bfloat16, device="cuda")
    bw = x.numel() * 2 / (cuda_ms(lambda: x.sum(dtype=torch.float32), 10) / 1e3)
    del x
    cfg = ModelConfig.from_dict(tiny_config(heads=H, kv_heads=KVH, head_dim=D, layers=1))
    kernel = PagedAttentionKernel(torch.device("cuda"))
    rows = []
    for shape in args.shapes.split(";"):
        B, K, ctx = (int(v) for v in shape.split(","))
        S = ctx + K
        cache = PagedKVCache(cfg, B * -(-(S + 32) // 16) + 4, 16, B, S, 32, "cuda", torch.bfloat16)
        cache.k.normal_()
        cache.v.normal_()
        pages = torch.randperm(cache.num_pages - cache.trash_pages, device="cuda") + cache.trash_pages
        cache.block_table.copy_(pages[: B * cache.pages_per_row].view(B, -1))
        q = torch.randn(B, H, K, D, device="cuda", dtype=torch.bfloat16)
        length = torch.full((B,), ctx, device="cuda")
        limit = (length[:, None] + torch.arange(K, device="cuda")) + 1  # causal (verify)
        row = {"batch": B, "block_size": K, "context": ctx,
               "floor_ms": round(2 * B * S * KVH * D * 2 / bw * 1e3, 4),
               "ours_ms": round(cuda_ms(lambda: kernel(q, cache.k[0], cache.v[0], cache, cache.block_table[:B], limit, None)), 4)}
        slots = cache.slots(cache.block_table[:B], torch.arange(S, device="cuda").expand(B, S))
        keys = cache.k[0][:, slots].transpose(0, 1).contiguous()  # [B, KVH, S, D]
        vals = cache.v[0][:, slots].transpose(0, 1).contiguous()
        row["grouped_gemm_ms"] = round(cuda_ms(lambda: grouped_gemm(q, keys, vals, limit)), 4)
        want = grouped_gemm(q, keys, vals, limit).float()
        got = kernel(q, cache.k[0], cache.v[0], cache, cache.block_table[:B], limit, None).float()
        row["ours_max_abs_err"] = float((got - want).abs().max())
        try:
            lim = limit.clone()
            mask = create_block_mask(lambda b, h, qi, kv: kv < lim[b, qi], B, None, K, S, device="cuda")
            row["flex_ms"] = round(cuda_ms(lambda: flex(q, keys, vals, block_mask=mask, enable_gqa=True)), 4)
            row["flex_max_abs_err"] = float((flex(q, keys, vals, block_mask=mask, enable_gqa=True).float() - want).abs().max())
        except Exception as e:  # noqa: BLE001  (report what failed, keep measuring)
            row["flex_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(json.dumps(row), flush=True)
        rows.append(row)
        del cache, keys, vals
        torch.cuda.empty_cache()
    out = {"command": "python bench/attention_kernels.py " + " ".join(argv or __import__("sys").argv[1:]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "gpu": torch.cuda.get_device_name(),
           "torch": torch.__version__, "read_bandwidth_TBps": round(bw / 1e12, 3), "rows": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
