"""Build the demo model from nothing but this machine's Python source, inside one time budget.

    PYTHONUNBUFFERED=1 python -m jobs.build_demo --out demo --budget-s 560     # one H200: ~9.5 min

Stages (each logged with its wall time):
1. corpus (jobs/corpus.py): stdlib + site-packages .py files, whole packages held out;
2. tokenizer (jobs/demo_tokenizer.py): byte-level BPE trained on a sample of the training files;
3. tokens: training files plus chat rows made from their documented functions
   (jobs/demo_prompts.py), packed into one stream; a held-out stream for the validation loss;
4. base model (jobs/train_base.py): Qwen3 architecture, AR view, for whatever time is left after
   reserving the later stages; saved in bf16 -- the heads then train against the bf16 base exactly
   as shipped;
5. heads (jobs/train_heads.py): self-distilled rows from the base, then KL training with mixed
   block sizes; the Orthrus checkpoint goes to <out>/model;
6. prompts: <out>/prompts.parquet, code prefixes and chat requests from distinct held-out files.
<out>/build.json records the corpus split, sizes, timings and loss histories. The evaluation is a
separate step (jobs/eval_demo.py). On a machine with other packages installed the corpus, and so
the model, differ; on the same machine image the selection is the same (sorted, seeded).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from jobs import corpus as corpus_mod
from jobs.demo_prompts import build_prompt_rows, chat_document, function_requests, write_prompts
from jobs.demo_tokenizer import encode_documents, save_hf_tokenizer, train_bpe
from jobs.orthrus_checkpoint import diff_state, write_base_checkpoint, write_orthrus_checkpoint
from jobs.train_base import Schedule, init_model, train_base
from jobs.train_heads import distill_from_stream, load_for_heads, train_heads
from workers.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


def model_config(vocab: int, args, special: dict[str, int]) -> dict:
    """The demo model's Qwen3 config: tiny_config's fields at the demo's sizes."""
    cfg = tiny_config(orthrus=False, vocab_size=vocab, hidden_size=args.hidden, layers=args.layers, heads=args.heads,
                      kv_heads=args.kv_heads, head_dim=args.hidden // args.heads, intermediate_size=args.intermediate,
                      tie=True, eos_token_id=[special["<|im_end|>"], special["<|endoftext|>"]],
                      max_position_embeddings=args.max_positions)
    cfg["pad_token_id"] = special["<|endoftext|>"]
    return cfg


def _chat_docs(texts: list[str], limit: int, seed: int, workers: int) -> list[str]:
    with Pool(workers) as pool:
        found = pool.map(function_requests, texts, chunksize=16)
    pairs = [p for per_file in found for p in per_file]
    random.Random(seed).shuffle(pairs)
    return [chat_document(r, c) for r, c in pairs[:limit]]


def _pack(docs) -> np.ndarray:
    """Concatenate token-id lists into one uint16 stream (vocabularies here are < 65,536)."""
    return np.concatenate([np.asarray(ids, dtype=np.uint16) for ids in docs])


def build(args, log) -> dict:
    t0 = time.time()
    out = Path(args.out)
    work = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"args": vars(args)}
    stamp = lambda name: summary.setdefault("timings_s", {}).__setitem__(name, round(time.time() - t0, 1))  # noqa: E731

    roots = [Path(r) for r in args.roots] if args.roots else corpus_mod.default_roots()
    files = corpus_mod.list_files(roots, exclude=(REPO,))
    split = corpus_mod.split_by_package(files, min_heldout_files=args.min_heldout_files, seed=args.seed)
    chosen = corpus_mod.sample_files(split.train, args.train_bytes, args.seed)
    with ThreadPoolExecutor(16) as ex:
        train_texts = [t for t in ex.map(corpus_mod.read_text, chosen) if t]
        held_texts = [(f.relpath, t) for f, t in zip(split.heldout, ex.map(corpus_mod.read_text, split.heldout)) if t]
    summary["corpus"] = {"roots": [str(r) for r in roots], "files": len(files), "train_files": len(split.train),
                         "train_files_used": len(train_texts), "train_bytes_used": sum(map(len, train_texts)),
                         "heldout_files": len(split.heldout), "heldout_packages": split.heldout_packages}
    stamp("corpus")
    log(f"[build] corpus {summary['corpus'] | {'heldout_packages': len(split.heldout_packages)}}")

    chat = _chat_docs(train_texts[: args.chat_files], args.chat_docs, args.seed, args.cpu_workers)
    tok = train_bpe(train_texts[: args.tokenizer_files] + chat[:2000], vocab_size=args.vocab)
    special = save_hf_tokenizer(tok, work / "tokenizer")
    stamp("tokenizer")
    docs = train_texts + chat
    random.Random(args.seed).shuffle(docs)
    eot = special["<|endoftext|>"]
    stream = _pack(encode_documents(tok, docs, eot))
    val_docs = [t for _, t in held_texts[: args.val_files]]
    val = _pack(encode_documents(tok, val_docs, eot))
    summary["tokens"] = {"train": int(stream.size), "val": int(val.size), "chat_docs": len(chat),
                         "bytes_per_token": round(sum(map(len, docs)) / max(1, stream.size), 3)}
    if args.export_tokens:  # a sample of the stream, for a later heads-only run without rebuilding the corpus
        np.save(work / "train_sample.npy", stream[: args.export_tokens])
    stamp("tokens")
    log(f"[build] tokens {summary['tokens']} at {time.time() - t0:.0f}s")

    dev = torch.device(args.device)
    train_t = torch.from_numpy(stream.astype(np.int64)).to(dev)
    val_t = torch.from_numpy(val.astype(np.int64)).to(dev)
    raw = model_config(tok.get_vocab_size(), args, special)
    torch.manual_seed(args.seed)
    model = init_model(raw, dev)
    summary["params"] = {"base": sum(p.numel() for p in model.parameters())}
    base_s = args.budget_s - (time.time() - t0) - args.heads_s - args.reserve_s
    if base_s < 10:
        raise SystemExit(f"no time left for the base model ({base_s:.0f}s): raise --budget-s")
    log(f"[build] base model {summary['params']['base']:,} params, training {base_s:.0f}s")
    summary["base_history"] = train_base(model, train_t, schedule=Schedule(args.base_lr, args.base_steps, base_s),
                                         batch_size=args.batch_size, seq_len=args.seq_len, val_tokens=val_t,
                                         seed=args.seed, log=log)
    base_dir = write_base_checkpoint(model, raw, work / "base", work / "tokenizer")
    del model
    stamp("base")

    heads = load_for_heads(base_dir, args.device)
    t = time.time()
    rows = distill_from_stream(heads, train_t, args.distill_rows, args.prompt_len, args.seq_len,
                               batch_size=args.distill_batch, seed=args.seed) if args.distill_rows else None
    summary["distill_s"] = round(time.time() - t, 1)
    log(f"[build] self-distilled {args.distill_rows} rows in {summary['distill_s']}s")
    heads_s = args.budget_s - (time.time() - t0) - args.save_s
    blocks = tuple(int(k) for k in args.block_sizes.split(","))
    summary["heads_history"] = train_heads(heads, mask_token_id=special["<|mask|>"],
                                           schedule=Schedule(args.heads_lr, args.heads_steps, heads_s),
                                           block_sizes=blocks, batch_size=args.heads_batch_size, seq_len=args.seq_len,
                                           rows=rows, stream=train_t, rows_share=args.rows_share, seed=args.seed, log=log)
    summary["params"]["orthrus"] = sum(p.numel() for p in heads.parameters())
    write_orthrus_checkpoint(base_dir, diff_state(heads), out / "model", block_size=args.block_size,
                             mask_token_id=special["<|mask|>"], eos_token_ids=raw["eos_token_id"])
    stamp("heads")

    rows_p = build_prompt_rows(held_texts, args.code_prompts, args.chat_prompts, args.seed)
    write_prompts(rows_p, out / "prompts.parquet")
    summary["prompts"] = {"code": sum(r["kind"] == "code" for r in rows_p), "chat": sum(r["kind"] == "chat" for r in rows_p)}
    stamp("done")
    (out / "build.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"[build] done in {time.time() - t0:.0f}s: {summary['params']} prompts {summary['prompts']}")
    return summary


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--out", default="demo", help="demo folder: model/, prompts.parquet, build.json")
    a("--work", default="/tmp/orthrus-demo-work", help="scratch: tokenizer, bf16 base checkpoint")
    a("--roots", nargs="*", help="source folders (default: this interpreter's stdlib and site-packages)")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a("--seed", type=int, default=0)
    a("--budget-s", type=float, default=560, help="wall-clock budget of the whole build")
    a("--heads-s", type=float, default=150, help="time reserved for self-distillation + head training")
    a("--reserve-s", type=float, default=25, help="time reserved for saving and the prompt set")
    a("--save-s", type=float, default=15, help="time kept after head training")
    a("--min-heldout-files", type=int, default=1000)
    a("--train-bytes", type=int, default=200_000_000)
    a("--tokenizer-files", type=int, default=3000, help="training files the BPE is learnt from")
    a("--chat-files", type=int, default=20000, help="training files scanned for documented functions")
    a("--chat-docs", type=int, default=30000, help="chat rows added to the training corpus")
    a("--val-files", type=int, default=300)
    a("--cpu-workers", type=int, default=16)
    a("--vocab", type=int, default=4096)
    a("--hidden", type=int, default=256)
    a("--layers", type=int, default=8)
    a("--heads", type=int, default=4)
    a("--kv-heads", type=int, default=2)
    a("--intermediate", type=int, default=768)
    a("--max-positions", type=int, default=4096)
    a("--seq-len", type=int, default=512)
    a("--batch-size", type=int, default=128)
    a("--base-lr", type=float, default=2e-3)
    a("--base-steps", type=int, default=None, help="cap on base steps (tests); the budget decides otherwise")
    a("--distill-rows", type=int, default=8192)
    a("--distill-batch", type=int, default=1024)
    a("--prompt-len", type=int, default=64)
    a("--block-sizes", default="4,8,16,32")
    a("--block-size", type=int, default=16, help="block_size written to config.json (the engine's default K)")
    a("--heads-lr", type=float, default=1e-3)
    a("--heads-steps", type=int, default=None)
    a("--heads-batch-size", type=int, default=64)
    a("--rows-share", type=float, default=0.75, help="share of each head batch from self-distilled rows")
    a("--export-tokens", type=int, default=4_000_000, help="tokens of the stream saved to <work>/train_sample.npy")
    a("--code-prompts", type=int, default=300)
    a("--chat-prompts", type=int, default=40)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    build(args, log=lambda msg: print(msg, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
