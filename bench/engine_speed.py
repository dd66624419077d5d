"""Engine speed on one GPU at the Qwen3-8B shape (random bf16 weights: a pass costs the same whatever
the weights), with the baselines measured in the same run. Public engine entry points only.

    python bench/engine_speed.py --out bench/results/engine_speed_h200.json

Sections (--sections, comma list; the JSON holds one key per section):
  floor      weight-read floor of one forward at the measured read bandwidth
  hf         transformers generate; a batch-1 loop shaped like the public Orthrus code
  pass       ms per iteration (K = 1: AR step; K > 1: diffusion + verify) per context and batch;
             graph captures and their seconds
  ar         AR end to end (512-token prompts, 256 new tokens) at each batch, prefill included
  ragged     AR at batch 256 with prompts of 64..2,048 tokens
  stream     2,048 prompts fed through add_request/step against the same in 256-row generate calls
  capacity   rows of 4k tokens in flight at max_model_len 32,768 (the pool after the warm-up)
  rule       Orthrus with the per-batch K rule (this run's pass costs) against AR, synthetic
             acceptance (drafts = AR's own continuation, each corrupted with probability
             `mismatch`; labelled synthetic), the second of two calls, graph captures included
  long       batch 64, 7,680-token prompts, 512 new tokens, synthetic mismatch 0.15, rule vs AR
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from workers.config import ModelConfig
from workers.draft_length import PassCosts
from workers.engine import Engine, SamplingParams
from workers.model import Qwen3Orthrus
from workers.model_source import is_diff_tensor
from workers.sampler import uniform
from workers.tiny import tiny_config

SHAPES = {
    "8b": dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, layers=36, heads=32, kv_heads=8,
               head_dim=128, tie=False, block_size=32, mask_token_id=151669, eos_token_id=(151645, 151643)),
    "1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, layers=28, heads=16, kv_heads=8,
                 head_dim=128, tie=True, block_size=32, mask_token_id=151669, eos_token_id=(151645, 151643)),
}


def random_model(shape: str, dtype=torch.bfloat16, fused: bool = True) -> Qwen3Orthrus:
    """fused: the engine's inference layout (workers/loader.FUSED); False: the checkpoint's names."""
    cfg = ModelConfig.from_dict(tiny_config(**SHAPES[shape], max_position_embeddings=40960))
    with torch.device("meta"):
        model = Qwen3Orthrus(cfg, fused=fused)
    model = model.to_empty(device="cuda").to(dtype)
    g = torch.Generator(device="cuda").manual_seed(0)
    for _, p in model.named_parameters():
        p.data.normal_(0, 0.02, generator=g) if p.dim() > 1 else p.data.fill_(1.0)
    # A "copy" model: unit-scale embeddings, small layer outputs and lm_head = embeddings make the
    # next token the current one by a wide logit margin, so bf16 numerics of a 1-token and a
    # K-token forward agree and replayed drafts (synthetic acceptance) are judged as intended.
    model.model.embed_tokens.weight.data.normal_(0, 1.0, generator=g)
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.data.mul_(0.01)
        layer.mlp.down_proj.weight.data.mul_(0.01)
    if not model.config.tie_word_embeddings:
        model.lm_head.weight.data.copy_(model.model.embed_tokens.weight.data)
    model.inv_freq = model.rope_frequencies("cuda")
    return model.eval().requires_grad_(False)


def read_bandwidth() -> float:
    x = torch.ones(2 << 30, dtype=torch.bfloat16, device="cuda")
    times = []
    for _ in range(10):
        torch.cuda.synchronize()
        t = time.perf_counter()
        x.sum(dtype=torch.float32)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return x.numel() * 2 / sorted(times)[5]


def prompts_for(n: int, length: int | list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = length if isinstance(length, list) else [length] * n
    return [torch.randint(0, 150000, (k,), generator=g).tolist() for k in lengths]


def timed(engine: Engine, prompts, params, mode: str, warm: bool = True) -> tuple[float, list]:
    if warm:
        engine.generate(prompts, params, mode=mode)  # first call: graph captures, rule exploration
    torch.cuda.synchronize()
    t = time.perf_counter()
    res = engine.generate(prompts, params, mode=mode)
    torch.cuda.synchronize()
    return time.perf_counter() - t, res


def replay_drafter(reference: dict[int, list[int]], mismatch: float, width: int):
    """Drafts = the AR continuation at those positions, each replaced by a wrong token with
    probability `mismatch`. reference: request id -> prompt + AR output."""
    table = torch.zeros(max(reference) + 1, width, dtype=torch.long)
    for rid, seq in reference.items():
        table[rid, : len(seq)] = torch.tensor(seq[:width])
    table = table.cuda()

    def drafter(s, pos, drafts):
        ref = table[s.request].gather(1, pos.clamp(max=width - 1))  # [B, K-1]
        wrong = uniform(s.request, pos, 99) < mismatch
        return torch.where(wrong, (ref + 1) % 150000, ref)
    return drafter


class Bench:
    def __init__(self, args) -> None:
        self.args, self.model = args, random_model(args.shape)
        self.result = {"command": "python bench/engine_speed.py " + " ".join(args.argv),
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "python": platform.python_version(), "shape": args.shape, "dtype": "bfloat16"}
        self.costs: PassCosts | None = None

    def save(self) -> None:
        Path(self.args.out).write_text(json.dumps(self.result, indent=1))

    def engine(self, **kw) -> Engine:
        gc.collect()
        torch.cuda.empty_cache()
        kw.setdefault("max_batch_size", 256)
        kw.setdefault("max_model_len", 8192 + 640)
        return Engine(self.model, Path(f"random-{self.args.shape}"), **kw)

    def floor(self) -> None:
        bw = read_bandwidth()
        wb = sum(p.numel() * p.element_size() for n, p in self.model.named_parameters() if not is_diff_tensor(n))
        wb -= self.model.model.embed_tokens.weight.numel() * 2
        self.result["floor"] = {"read_bandwidth_TBps": round(bw / 1e12, 3), "ar_weight_bytes": wb,
                                "ms_per_forward": round(wb / bw * 1e3, 3),
                                "kv_bytes_per_token": 2 * 36 * 8 * 128 * 2}
        print("floor", self.result["floor"], flush=True)

    def passes(self) -> None:
        eng = self.engine(max_batch_size=256)
        batches = [int(b) for b in self.args.batches.split(",")]
        blocks = [int(k) for k in self.args.blocks.split(",")]
        contexts = [int(c) for c in self.args.contexts.split(",")]
        t = time.perf_counter()
        rows = eng.measure_pass_costs(batches, blocks, contexts)
        self.result["pass_costs"] = rows
        self.result["pass_graphs"] = {"captures": eng.run_step.captures, "capture_seconds": round(eng.run_step.capture_seconds, 2),
                                      "section_seconds": round(time.perf_counter() - t, 1)}
        self.costs = PassCosts.from_rows(rows)
        for r in rows:
            print(f"pass ctx={r['context']:5d} B={r['batch']:4d} K={r['block_size']:3d}: {r['ms_per_iteration']:8.2f} ms", flush=True)
        print("graphs", self.result["pass_graphs"], flush=True)

    def ar(self) -> None:
        out = []
        eng = self.engine(max_batch_size=256, max_model_len=1024)
        for B in [int(b) for b in self.args.batches.split(",")]:
            prompts = prompts_for(B, 512)
            secs, res = timed(eng, prompts, SamplingParams(max_new_tokens=256, stop_token_ids=()), "ar")
            tok = sum(len(r.token_ids) for r in res)
            out.append({"batch": B, "seconds": round(secs, 3), "tokens": tok, "tok_per_s": round(tok / secs, 1)})
            print("ar e2e", out[-1], flush=True)
        self.result["ar_e2e"] = out

    def ragged(self) -> None:
        eng = self.engine(max_batch_size=256, max_model_len=2048 + 320)
        g = torch.Generator().manual_seed(1)
        lengths = torch.randint(64, 2049, (256,), generator=g).tolist()
        secs, res = timed(eng, prompts_for(256, lengths), SamplingParams(max_new_tokens=256, stop_token_ids=()), "ar")
        tok = sum(len(r.token_ids) for r in res)
        self.result["ragged"] = {"batch": 256, "prompt_tokens": sum(lengths), "seconds": round(secs, 3), "tokens": tok,
                                 "tok_per_s": round(tok / secs, 1)}
        print("ragged", self.result["ragged"], flush=True)

    def stream(self) -> None:
        eng = self.engine(max_batch_size=256, max_model_len=1024)
        prompts, p = prompts_for(2048, 512, seed=3), SamplingParams(max_new_tokens=256, stop_token_ids=())
        eng.generate(prompts[:256], p, mode="ar")  # graphs for every bucket
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, 2048, 256):
            eng.generate(prompts[i : i + 256], p, mode="ar")
        torch.cuda.synchronize()
        calls = time.perf_counter() - t
        t = time.perf_counter()
        for q in prompts:
            eng.add_request(q, p, mode="ar")
        n = 0
        while eng.has_unfinished():
            n += sum(len(r.token_ids) for _, r in eng.step())
        torch.cuda.synchronize()
        stepping = time.perf_counter() - t
        self.result["stream"] = {"prompts": 2048, "tokens": n, "generate_calls_s": round(calls, 2),
                                 "stepping_s": round(stepping, 2), "stepping_tok_per_s": round(n / stepping, 1),
                                 "calls_tok_per_s": round(n / calls, 1)}
        print("stream", self.result["stream"], flush=True)

    def capacity(self) -> None:
        eng = self.engine(max_batch_size=256, max_model_len=32768)
        self.result["capacity"] = {"max_model_len": 32768, "kv_pool_tokens": eng.cache.tokens,
                                   "kv_pool_GiB": round(eng.cache.nbytes / 2**30, 1),
                                   "rows_of_4k_tokens": eng.cache.tokens // 4096,
                                   "static_cache_rows_at_32k": eng.cache.tokens // 32768}
        print("capacity", self.result["capacity"], flush=True)

    def rule_vs_ar(self, B: int, ctx: int, new: int, mismatches, key: str) -> None:
        prompts = prompts_for(B, ctx, seed=7)
        params = SamplingParams(max_new_tokens=new, stop_token_ids=())
        base = self.engine(max_batch_size=max(B, 1), max_model_len=ctx + new + 64)
        secs_ar, res_ar = timed(base, prompts, params, "ar")
        ref = {i: p + r.token_ids for i, (p, r) in enumerate(zip(prompts, res_ar))}
        del base
        tokens = sum(len(r.token_ids) for r in res_ar)
        for m in mismatches:
            # request ids: the warm-up call takes 0..B-1, the timed call B..2B-1: both replay `ref`
            both = {**ref, **{i + B: s for i, s in ref.items()}}
            eng = self.engine(max_batch_size=max(B, 1), max_model_len=ctx + new + 64, pass_costs=self.costs,
                              drafter=replay_drafter(both, m, ctx + new + 64))
            secs, res = timed(eng, prompts, params, "orthrus")
            its = sum(r.stats.iterations for r in res)
            diff = sum(r.stats.diffusion_passes for r in res)
            row = {"synthetic": True, "batch": B, "context": ctx, "new_tokens": new, "mismatch": m,
                   "ar_tok_per_s": round(tokens / secs_ar, 1), "orthrus_tok_per_s": round(tokens / secs, 1),
                   "speedup_vs_ar": round(secs_ar / secs, 3), "mean_acceptance_length": round(tokens / its, 3),
                   "orthrus_iterations_share": round(diff / its, 3),
                   "mean_K": round(1 + sum(r.stats.drafted_tokens for r in res) / max(diff, 1), 2) if diff else 1,
                   "rows_equal_to_ar": sum(a.token_ids == b.token_ids for a, b in zip(res, res_ar)) / len(res),
                   "graph_captures": eng.run_step.captures, "capture_seconds": round(eng.run_step.capture_seconds, 2)}
            self.result.setdefault(key, []).append(row)
            print(key, row, flush=True)
            del eng
            self.save()

    def rule(self) -> None:
        for B in [int(b) for b in self.args.rule_batches.split(",")]:
            self.rule_vs_ar(B, 512, 256, (0.02, 0.1, 0.3, 0.6), "rule")

    def long(self) -> None:
        self.rule_vs_ar(64, 7680, 512, (0.15,), "long")

    def hf(self) -> None:
        from transformers import Qwen3Config, Qwen3ForCausalLM

        c = self.model.config
        cfg = Qwen3Config(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                          num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                          num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim,
                          tie_word_embeddings=c.tie_word_embeddings, rope_theta=c.rope_theta, attn_implementation="sdpa")
        with torch.device("cuda"):
            hf = Qwen3ForCausalLM(cfg).to(torch.bfloat16).eval()
        rows = []
        for B in (1, 64):
            ids = torch.tensor(prompts_for(B, 512), device="cuda")
            gen = lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, min_new_tokens=64,  # noqa: E731
                                      do_sample=False, pad_token_id=0)
            gen()
            torch.cuda.synchronize()
            t = time.perf_counter()
            gen()
            torch.cuda.synchronize()
            secs = time.perf_counter() - t
            rows.append({"baseline": "transformers generate", "batch": B, "tok_per_s": round(B * 64 / secs, 1),
                         "ms_per_step": round(secs / 64 * 1e3, 2)})
            print("hf", rows[-1], flush=True)
        self.result["baselines"] = rows
        del hf
        torch.cuda.empty_cache()


def main(argv=None) -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="8b", choices=sorted(SHAPES))
    ap.add_argument("--sections", default="floor,hf,pass,ar,ragged,stream,capacity,rule,long")
    ap.add_argument("--batches", default="1,4,16,64,256")
    ap.add_argument("--blocks", default="1,2,4,8,16,32")
    ap.add_argument("--contexts", default="512,8192")
    ap.add_argument("--rule-batches", default="1,16,64,256")
    ap.add_argument("--costs", default="", help="pass costs JSON of an earlier run, for rule/long without pass")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    torch.backends.cuda.matmul.allow_tf32 = True
    bench = Bench(args)
    if args.costs:
        bench.costs = PassCosts.from_bench(args.costs)
        bench.result["costs_from"] = args.costs
    for section in args.sections.split(","):
        t = time.perf_counter()
        getattr(bench, {"pass": "passes"}.get(section, section))()
        bench.result.setdefault("section_seconds", {})[section] = round(time.perf_counter() - t, 1)
        bench.save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
