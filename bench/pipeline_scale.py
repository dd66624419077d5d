"""Pipeline scale benchmark (issue 3, item 7; not in CI): many short prompts through the whole job.

    .venv/bin/python bench/pipeline_scale.py                      # 1,000,000 rows in 1,000 shards
    .venv/bin/python bench/pipeline_scale.py --rows 20000 --shards 20 \
        --out bench/results/2026-12-01_pipeline_scale_20000x20.json

Tiny random model, max_new_tokens=1, no chat template: the engine is nearly free, so the figure
is the pipeline's own cost (read, repartition, tokenise, commit, stats). Reports rows/s and the
driver's peak RSS (which must stay flat as rows grow: the driver only folds per-shard partials),
and checks that every input row appears exactly once in outputs/. The JSON it prints (and writes
to --out) records the command, the date, the CPU count and the load average before and after, since
the machine's cores may be shared.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq


def make_inputs(folder: Path, rows: int, shards: int) -> None:
    """`shards` files of rows/shards short prompts each, ids `<shard>-<row>`; reused when present."""
    marker = folder / f"_done-{rows}-{shards}"
    if marker.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    per = rows // shards
    for s in range(shards):
        ids = [f"{s}-{i}" for i in range(per)]
        prompts = [f"prompt {i} of shard {s}" for i in range(per)]
        pq.write_table(pa.table({"id": ids, "prompt": prompts}), folder / f"part-{s:05d}.parquet")
    marker.write_text("ok")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=1_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--work", default="/tmp/orthrus-bench", help="inputs, model and outputs go here")
    p.add_argument("--out", default=None, help="also write the result JSON here (e.g. under bench/results/)")
    args = p.parse_args(argv)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = Path(args.work)
    inputs = work / f"inputs-{args.rows}-{args.shards}"
    make_inputs(inputs, args.rows, args.shards)
    model = work / "model"
    if not (model / "config.json").exists():
        import subprocess  # keep torch out of this (driver) process

        code = f"from workers.tiny import write_tiny_checkpoint as w; w({str(model)!r})"
        subprocess.run([sys.executable, "-c", code], check=True)
    from pipeline import run_job

    rss_before = peak_rss_mib()
    t0 = time.monotonic()
    summary = run_job({
        "name": "pipeline_scale",
        "input": {"path": str(inputs), "prompt_column": "prompt", "id_column": "id"},
        "model": {"path": str(model)},
        # pass_costs off: no per-actor cost measurement at start (the figure is the pipeline's cost)
        "engine": {"mode": "orthrus", "max_batch_size": 512, "max_model_len": 64, "pass_costs": "off"},
        "sampling": {"max_new_tokens": 1},
        "prompt": {"chat_template": False},
        "resources": {"num_workers": args.workers, "batch_size": args.batch_size, "cpus_per_worker": 0.5},
        "output": {"path": str(work / "out"), "overwrite": True},
        "progress_interval_s": 15,
        "ray_address": os.environ.get("RAY_ADDRESS") or "local",
    })
    seconds = time.monotonic() - t0
    rss_job = peak_rss_mib()  # before the exactly-once check below loads every id into this process
    ids = pads.dataset(str(work / "out" / "outputs"), format="parquet").to_table(columns=["id"]).column("id")
    exactly_once = len(ids) == args.rows and len(pa.compute.unique(ids)) == args.rows
    result = {"command": "bench/pipeline_scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "started_utc": started, "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()],
              "rows": args.rows, "shards": args.shards, "workers": args.workers, "batch_size": args.batch_size,
              "seconds": round(seconds, 1), "rows_per_s": round(args.rows / seconds, 1),
              "driver_peak_rss_mib_before_job": round(rss_before, 1), "driver_peak_rss_mib": round(rss_job, 1),
              "output_files": summary["totals"]["output_files"], "every_row_exactly_once": exactly_once,
              "cpus": os.cpu_count()}
    print(json.dumps(result, indent=1))
    (work / "result.json").write_text(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if exactly_once else 1


if __name__ == "__main__":
    sys.exit(main())
