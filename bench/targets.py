"""The attention issue's targets, computed from one engine_speed pass-cost run (no GPU needed).

    python bench/targets.py bench/results/2026-12-01_h200_8b_pass_costs.json > bench/results/2026-12-01_h200_8b_targets.json

Each row: the target, the ratio measured (iteration / AR step, or step / its floor) and whether it
is met. Floors: a pass reads the weights once (`floor.ms_per_forward`) plus every cached K/V byte
of every row (`floor.kv_bytes_per_token` per token) at the measured read bandwidth.
"""
from __future__ import annotations

import json
import sys


def main(argv=None) -> None:
    path = (argv or sys.argv[1:])[0]
    run = json.loads(open(path).read())
    ms = {(r["context"], r["batch"], r["block_size"]): r["ms_per_iteration"] for r in run["pass_costs"]}
    f = run["floor"]

    def floor(ctx: int, B: int) -> float:  # one pass: weights + the cache of B rows at ctx tokens
        return f["ms_per_forward"] + B * (ctx + 1) * f["kv_bytes_per_token"] / (f["read_bandwidth_TBps"] * 1e12) * 1e3

    rows = [
        ("8k, batch 64: K=8 iteration / AR step", ms[(8192, 64, 8)] / ms[(8192, 64, 1)], 2.3),
        ("8k, batch 16: K=4 iteration / AR step", ms[(8192, 16, 4)] / ms[(8192, 16, 1)], 2.0),
        ("8k, batch 64: AR step / its KV + weight floor", ms[(8192, 64, 1)] / floor(8192, 64), 1.1),
        ("512, batch 1: AR step / weight floor", ms[(512, 1, 1)] / f["ms_per_forward"], 1.3),
        ("512, batch 1: K=32 iteration / two-pass floor", ms[(512, 1, 32)] / (2 * floor(512, 1)), 1.3),
        ("512, batch 64: K=8 iteration / AR step", ms[(512, 64, 8)] / ms[(512, 64, 1)], 3.5),
    ]
    out = {"source": path, "floor_8k_b64_ms": round(floor(8192, 64), 2), "two_pass_floor_512_b1_ms": round(2 * floor(512, 1), 2),
           "targets": [{"what": w, "measured": round(v, 2), "target": t, "met": v <= t} for w, v, t in rows]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
