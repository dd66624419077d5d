r"""Measure the demo checkpoint: greedy acceptance length and tokens per forward per block size K.

    python -m jobs.eval_demo --model demo/model --prompts demo/prompts.parquet --out demo/eval.json \
        --block-sizes 4,8,16,32 --max-new-tokens 128 --dtype float32 --device cpu --batch-size 64

Greedy decoding of every prompt once in AR mode and once per K in Orthrus mode, with our engine;
the figures and their definitions (acceptance length, TPF, loops, empty completions, exact match)
are in workers/training/evaluation.py and README "Demo model" (the method: arXiv 2605.12825).
Exits 1 when an fp32 run finds an Orthrus completion that differs from AR (lossless is the rule).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workers.training.evaluation import evaluate
from workers.training.loop import HelpFormatter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    a = ap.add_argument
    a("--model", default="demo/model", help="Orthrus checkpoint folder")
    a("--prompts", default="demo/prompts.parquet", help="Parquet with a `prompt` column (raw text, chat rows templated)")
    a("--out", default="demo/eval.json", help="where the report goes")
    a("--block-sizes", default="4,8,16,32", help="block sizes K to measure")
    a("--max-new-tokens", type=int, default=128, help="tokens generated per prompt")
    a("--dtype", default="float32", help="float32 (exact match expected) or bfloat16")
    a("--device", default="cpu", help="cpu or cuda (in fp32 the GPU gave the CPU's tokens on a 16-prompt check, demo/eval.json)")
    a("--batch-size", type=int, default=64, help="engine max_batch_size")
    a("--limit", type=int, default=None, help="first N prompts only (smoke runs)")
    args = ap.parse_args(argv)
    report = evaluate(Path(args.model), Path(args.prompts), [int(k) for k in args.block_sizes.split(",")],
                      args.max_new_tokens, args.dtype, args.device, args.batch_size, args.limit)
    report["command"] = "python -m jobs.eval_demo " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k not in ("by_block_size", "per_prompt")}, indent=1))
    return 0 if report["all_exact"] or args.dtype != "float32" else 1


if __name__ == "__main__":
    raise SystemExit(main())
