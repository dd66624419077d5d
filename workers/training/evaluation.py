"""Measure an Orthrus checkpoint on a prompt set: greedy acceptance length and tokens per forward per K.

Greedy decoding of every prompt once in AR mode and once per K in Orthrus mode, with our engine.
Definitions (arXiv 2605.12825 and README "Demo model"):
- mean acceptance length = committed tokens / Orthrus iterations, summed over prompts (each
  iteration commits its accepted drafts plus one AR token; the bonus token counts);
- tokens per forward (TPF) = committed tokens / (diffusion + verify passes); prefill excluded,
  and also given with one prefill forward per prompt counted (`tpf_with_prefill`);
- loops and empty completions: loops.py (every figure is also given over non-looping prompts:
  looping text is easy to draft);
- exact: the Orthrus tokens equal the AR tokens (expected for every prompt in fp32: lossless).
The report keeps per-prompt figures (`per_prompt`: AR token count and digest, loops, empty, and
Orthrus iterations per K), so a subset can be recomputed and checked against it (the demo tests).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from workers.config import ModelConfig
from workers.metrics import LOOP_DEFINITION, is_empty, loops


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


def digest(ids: list[int]) -> str:
    """A short fingerprint of a token id list (per-prompt records compare completions by it)."""
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:16]


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 3) if flags else 0.0


def evaluate(model_dir: Path, prompts_path: Path, block_sizes: list[int], max_new_tokens: int, dtype: str,
             device: str, batch_size: int, limit: int | None = None, log=print) -> dict:
    import pyarrow.parquet as pq
    import torch

    from workers.engine import Engine, SamplingParams

    table = pq.read_table(str(prompts_path)).to_pylist()[:limit]
    ids = encode_prompts(model_dir, [r["prompt"] for r in table])
    longest = max(map(len, ids))
    engine = Engine.from_pretrained(str(model_dir), device=device, dtype=dtype, max_batch_size=batch_size,
                                    max_model_len=longest + max_new_tokens + 1)
    stops = list(ModelConfig.from_dict(json.loads((model_dir / "config.json").read_text())).eos_token_ids)
    t = time.time()
    ar = engine.generate(ids, SamplingParams(max_new_tokens=max_new_tokens), mode="ar")
    report: dict = {"model": str(model_dir), "prompts_file": str(prompts_path), "prompts": len(ids), "dtype": dtype,
                    "device": device, "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                    "torch": torch.__version__, "max_new_tokens": max_new_tokens,
                    "ar_seconds": round(time.time() - t, 1), "loop_definition": LOOP_DEFINITION,
                    "empty_definition": f"first generated token is a stop token {stops}"}
    looping = [loops(r.token_ids) for r in ar]
    empty = [is_empty(r.token_ids, stops) for r in ar]
    kind_of = [r.get("kind", "code") for r in table]
    kinds = sorted(set(kind_of))
    report["loop_rate"] = _rate(looping)
    report["loop_rate_by_kind"] = {k: _rate([f for f, kd in zip(looping, kind_of) if kd == k]) for k in kinds}
    report["empty_rate"] = _rate(empty)
    report["empty_rate_by_kind"] = {k: _rate([f for f, kd in zip(empty, kind_of) if kd == k]) for k in kinds}
    report["mean_continuation_tokens"] = round(sum(len(r.token_ids) for r in ar) / len(ar), 1)
    log(f"[eval] AR done in {report['ar_seconds']}s, loop rate {report['loop_rate']}, empty rate {report['empty_rate']}")
    everyone = list(range(len(ids)))
    clean = [i for i in everyone if not looping[i]]
    per_prompt = [{"id": r.get("id", str(i)), "kind": kind_of[i], "tokens": len(a.token_ids), "digest": digest(a.token_ids),
                   "loops": looping[i], "empty": empty[i], "iterations": {}} for i, (r, a) in enumerate(zip(table, ar))]
    report["by_block_size"] = {}
    for k in block_sizes:
        t = time.time()
        res = engine.generate(ids, SamplingParams(max_new_tokens=max_new_tokens, block_size=k), mode="orthrus")
        exact = sum(a.token_ids == b.token_ids for a, b in zip(res, ar))
        entry = {"all": summarize(res, everyone), "non_looping": summarize(res, clean),
                 "by_kind": {kd: summarize(res, [i for i in everyone if kind_of[i] == kd]) for kd in kinds},
                 "exact_match_with_ar": exact, "seconds": round(time.time() - t, 1)}
        report["by_block_size"][str(k)] = entry
        for rec, r in zip(per_prompt, res):
            rec["iterations"][str(k)] = r.stats.iterations
        log(f"[eval] K={k}: acceptance {entry['all']['mean_acceptance_length']} (non-looping "
            f"{entry['non_looping']['mean_acceptance_length']}), TPF {entry['all']['tokens_per_forward']}, "
            f"exact {exact}/{len(ids)}, {entry['seconds']}s")
    best = max(report["by_block_size"].items(), key=lambda kv: kv[1]["all"]["mean_acceptance_length"])
    report["best_block_size"] = int(best[0])
    report["all_exact"] = all(e["exact_match_with_ar"] == len(ids) for e in report["by_block_size"].values())
    report["per_prompt"] = per_prompt
    return report
