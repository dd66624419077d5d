"""The job's tokens/s against the bare engine's on the same prompts (issue 3, GPU item; goal >= 95%).

    python bench/engine_vs_pipeline.py --model demo/model --prompts demo/prompts.parquet --rows 2048 \
        --max-new-tokens 256 --batch-size 256 --max-batch-size 256

1. bare: a subprocess loads the Engine, tokenises the prompts exactly as the actor does
   (workers/input_rows.py, untimed), then feeds all of them through the stepping loop
   (add_request, then step until done: the engine at its best, never batch by batch), timed;
2. job: `pipeline.run_job` on the same rows (one actor; one per GPU is the job default).
Reports both rates: the job's steady rate (completion tokens / first batch start to last batch
end, so model load and Ray start-up are left out, as they are for the bare engine) and its
overall rate (whole job wall time), plus the ratios. Prints JSON; writes it to --work/result.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq


def take_rows(src: str, column: str, rows: int, out: Path) -> Path:
    """The first `rows` non-empty prompts of `src` (or synthetic ones) as one Parquet shard."""
    if src:
        prompts = [p for p in pq.read_table(src, columns=[column]).column(column).to_pylist() if p and p.strip()]
        prompts = (prompts * (rows // max(len(prompts), 1) + 1))[:rows]
    else:
        prompts = [f"Write a Python function number {i} that adds two numbers." for i in range(rows)]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "prompts.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(len(prompts))], "prompt": prompts}), path)
    return path


def bare(args: argparse.Namespace, path: Path) -> dict:
    """Runs in a subprocess: the engine alone, same tokenisation and batches, generate timed."""
    import torch
    from transformers import AutoTokenizer

    from workers.engine import Engine
    from workers.input_rows import parse_rows, tokenize
    from workers.params import SamplingParams
    from workers.spec import EngineSettings, WorkerSpec

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    engine = Engine.from_pretrained(args.model, device=device, dtype=dtype, max_batch_size=args.max_batch_size,
                                    max_model_len=args.max_model_len)
    tok = AutoTokenizer.from_pretrained(str(engine.model_dir))
    spec = WorkerSpec(model_path=args.model, engine=EngineSettings(mode=args.mode),
                      sampling=SamplingParams(max_new_tokens=args.max_new_tokens, seed=0),
                      chat_template=args.chat_template, id_column="id")
    table = pq.read_table(path)
    table = table.append_column("path", pa.array([str(path)] * table.num_rows)).append_column(
        "row_hash", pa.array(range(table.num_rows), pa.uint64()))
    rows = parse_rows(table, spec)
    tokenize(rows, spec, tok, engine.max_model_len)
    good = [r for r in rows if r.error is None]
    engine.generate([r.token_ids for r in good[: args.max_batch_size]], [r.params for r in good[: args.max_batch_size]],
                    mode=args.mode)  # warm-up: graph captures, as the job's actor pays them before its steady window
    tokens, t0 = 0, time.perf_counter()
    for r in good:
        engine.add_request(r.token_ids, r.params, mode=args.mode)
    while engine.has_unfinished():
        tokens += sum(len(res.token_ids) for _, res in engine.step())
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "completion_tokens": tokens,
            "seconds": seconds, "tokens_per_s": tokens / seconds}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", default="", help="Parquet with a prompt column; default: synthetic prompts")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--mode", default="orthrus", choices=["orthrus", "ar"])
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--chat-template", type=int, default=1)
    p.add_argument("--work", default="/tmp/orthrus-engine-vs-pipeline")
    p.add_argument("--bare-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.chat_template = bool(args.chat_template)
    work = Path(args.work)
    path = work / "in" / "prompts.parquet"
    if args.bare_only:
        print(json.dumps(bare(args, path)))
        return 0
    take_rows(args.prompts, args.prompt_column, args.rows, work / "in")
    done = subprocess.run([sys.executable, __file__, "--bare-only", *(argv if argv is not None else sys.argv[1:])],
                          capture_output=True, text=True, check=True)
    bare_result = json.loads(done.stdout.strip().splitlines()[-1])

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline import run_job

    summary = run_job({
        "name": "engine_vs_pipeline",
        "input": {"path": str(path), "prompt_column": "prompt", "id_column": "id"},
        "model": {"path": args.model},
        "engine": {"mode": args.mode, "max_batch_size": args.max_batch_size, "max_model_len": args.max_model_len},
        "sampling": {"max_new_tokens": args.max_new_tokens},
        "prompt": {"chat_template": args.chat_template},
        "resources": {"num_workers": 1, "batch_size": args.batch_size},
        "output": {"path": str(work / "out"), "overwrite": True},
        "ray_address": os.environ.get("RAY_ADDRESS") or "local",
    })
    t = summary["totals"]
    result = {"bare": bare_result,
              "job": {k: t[k] for k in ("completion_tokens", "steady_seconds", "steady_tokens_per_s", "job_seconds",
                                        "tokens_per_s", "engine_tokens_per_s")},
              "steady_vs_bare": t["steady_tokens_per_s"] / bare_result["tokens_per_s"],
              "overall_vs_bare": t["tokens_per_s"] / bare_result["tokens_per_s"],
              "same_tokens": t["completion_tokens"] == bare_result["completion_tokens"]}
    print(json.dumps(result, indent=1))
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
