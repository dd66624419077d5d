"""Measure the demo checkpoint: greedy acceptance length and tokens per forward per block size K.

    python -m jobs.eval_demo --model demo/model --prompts demo/prompts.parquet --out demo/eval.json \
        --block-sizes 4,8,16,32 --max-new-tokens 128 --dtype float32

Greedy decoding of every prompt once in AR mode and once per K in Orthrus mode, with our engine.
Definitions (ORTHRUS.md "Counting"):
- mean acceptance length = committed tokens / Orthrus iterations, summed over prompts (each
  iteration commits its accepted drafts plus one AR token; the bonus token counts);
- tokens per forward (TPF) = committed tokens / (diffusion + verify passes); prefill excluded,
  and also given with one prefill forward per prompt counted (`tpf_with_prefill`);
- a continuation *loops* when some unit of p <= 32 tokens repeats back to back over a stretch
  of more than 64 tokens (tokens[j] == tokens[j+p] for 64 consecutive j). Looping text is easy to
  draft, so every figure is also given over the non-looping prompts only;
- exact: the Orthrus tokens equal the AR tokens (expected for every prompt in fp32: lossless).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

LOOP_PERIOD, LOOP_SPAN = 32, 64


def loops(ids: list[int], max_period: int = LOOP_PERIOD, span: int = LOOP_SPAN) -> bool:
    """True when some period p <= max_period holds for `span` consecutive positions (see module docstring)."""
    for p in range(1, max_period + 1):
        run = 0
        for j in range(len(ids) - p):
            run = run + 1 if ids[j] == ids[j + p] else 0
            if run >= span:
                return True
    return False


def summarize(results, indices: list[int]) -> dict:
    """Acceptance figures of the Orthrus `results` over the prompts at `indices`."""
    committed = sum(len(results[i].token_ids) for i in indices)
    iters = sum(results[i].stats.iterations for i in indices)
    diff = sum(results[i].stats.diffusion_passes for i in indices)
    per_prompt = [results[i].stats.mean_acceptance_length for i in indices if results[i].stats.iterations]
    return {
        "prompts": len(indices),
        "committed_tokens": committed,
        "iterations": iters,
        "mean_acceptance_length": round(committed / iters, 3) if iters else 0.0,
        "mean_of_per_prompt_acceptance": round(sum(per_prompt) / len(per_prompt), 3) if per_prompt else 0.0,
        "tokens_per_forward": round(committed / (iters + diff), 3) if iters else 0.0,
        "tpf_with_prefill": round(committed / (iters + diff + len(indices)), 3) if iters else 0.0,
    }


def encode_prompts(model_dir: Path, texts: list[str]) -> list[list[int]]:
    """Token ids as the pipeline makes them from raw text (special tokens in chat rows parsed)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def evaluate(model_dir: Path, prompts_path: Path, block_sizes: list[int], max_new_tokens: int, dtype: str,
             device: str, batch_size: int, limit: int | None = None, log=print) -> dict:
    import pyarrow.parquet as pq

    from workers.engine import Engine, SamplingParams

    table = pq.read_table(str(prompts_path)).to_pylist()[:limit]
    ids = encode_prompts(model_dir, [r["prompt"] for r in table])
    longest = max(map(len, ids))
    engine = Engine.from_pretrained(str(model_dir), device=device, dtype=dtype, max_batch_size=batch_size,
                                    max_model_len=longest + max_new_tokens + 1)
    t = time.time()
    ar = engine.generate(ids, SamplingParams(max_new_tokens=max_new_tokens), mode="ar")
    report: dict = {"model": str(model_dir), "prompts_file": str(prompts_path), "prompts": len(ids), "dtype": dtype,
                    "device": device, "max_new_tokens": max_new_tokens, "ar_seconds": round(time.time() - t, 1),
                    "loop_definition": f"period <= {LOOP_PERIOD} tokens repeating over > {LOOP_SPAN} tokens"}
    looping = [loops(r.token_ids) for r in ar]
    kinds = sorted({r.get("kind", "code") for r in table})
    report["loop_rate"] = round(sum(looping) / len(looping), 3)
    report["loop_rate_by_kind"] = {k: round(sum(l for l, r in zip(looping, table) if r.get("kind", "code") == k)
                                             / max(1, sum(r.get("kind", "code") == k for r in table)), 3) for k in kinds}
    report["mean_continuation_tokens"] = round(sum(len(r.token_ids) for r in ar) / len(ar), 1)
    log(f"[eval] AR done in {report['ar_seconds']}s, loop rate {report['loop_rate']}")
    everyone = list(range(len(ids)))
    clean = [i for i in everyone if not looping[i]]
    report["by_block_size"] = {}
    for k in block_sizes:
        t = time.time()
        res = engine.generate(ids, SamplingParams(max_new_tokens=max_new_tokens, block_size=k), mode="orthrus")
        exact = sum(a.token_ids == b.token_ids for a, b in zip(res, ar))
        entry = {"all": summarize(res, everyone), "non_looping": summarize(res, clean),
                 "by_kind": {kd: summarize(res, [i for i in everyone if table[i].get("kind", "code") == kd]) for kd in kinds},
                 "exact_match_with_ar": exact, "seconds": round(time.time() - t, 1)}
        report["by_block_size"][str(k)] = entry
        log(f"[eval] K={k}: acceptance {entry['all']['mean_acceptance_length']} (non-looping "
            f"{entry['non_looping']['mean_acceptance_length']}), TPF {entry['all']['tokens_per_forward']}, "
            f"exact {exact}/{len(ids)}, {entry['seconds']}s")
    best = max(report["by_block_size"].items(), key=lambda kv: kv[1]["all"]["mean_acceptance_length"])
    report["best_block_size"] = int(best[0])
    report["all_exact"] = all(e["exact_match_with_ar"] == len(ids) for e in report["by_block_size"].values())
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo/model")
    ap.add_argument("--prompts", default="demo/prompts.parquet")
    ap.add_argument("--out", default="demo/eval.json")
    ap.add_argument("--block-sizes", default="4,8,16,32")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=None, help="first N prompts only (smoke runs)")
    args = ap.parse_args(argv)
    report = evaluate(Path(args.model), Path(args.prompts), [int(k) for k in args.block_sizes.split(",")],
                      args.max_new_tokens, args.dtype, args.device, args.batch_size, args.limit)
    report["command"] = "python -m jobs.eval_demo " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "by_block_size"}, indent=1))
    return 0 if report["all_exact"] or args.dtype != "float32" else 1


if __name__ == "__main__":
    raise SystemExit(main())
