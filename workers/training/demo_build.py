"""Build the demo model from nothing but this machine's Python source, inside one time budget.

Stages (each logged with its wall time):
1. corpus (corpus.py): stdlib + site-packages .py files, whole packages held out;
2. tokenizer (tokenizer.py): byte-level BPE trained on a sample of the training files;
3. tokens: training files plus chat rows made from their documented functions (prompts.py),
   packed into one stream; a held-out stream for the validation loss;
4. base model (base.py): Qwen3 architecture, AR view, for whatever time is left after reserving
   the later stages; saved in bf16 -- the heads then train against the bf16 base exactly as shipped;
5. heads (heads.py): self-distilled rows from the base, then KL training with mixed block sizes;
   the Orthrus checkpoint goes to <out>/model;
6. prompts: <out>/prompts.parquet, code prefixes and chat requests from distinct held-out files.
<out>/build.json records the corpus split, sizes, timings and loss histories. The entry point
is jobs/build_demo.py (its docstring has the command); the evaluation is jobs/eval_demo.py.
"""
from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from workers.tiny import tiny_config
from workers.training import corpus as corpus_mod
from workers.training.base import init_model, train_base
from workers.training.checkpoint import diff_state, write_base_checkpoint, write_orthrus_checkpoint
from workers.training.heads import distill_from_stream, load_for_heads, train_heads
from workers.training.loop import Schedule
from workers.training.prompts import build_prompt_rows, chat_document, function_requests, write_prompts
from workers.training.tokenizer import encode_documents, save_hf_tokenizer, train_bpe

REPO = Path(__file__).resolve().parents[2]


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


def read_corpus(args) -> tuple[list[str], list[tuple[str, str]], dict]:
    """Training texts (a seeded sample of the training files), held-out (relpath, text), and the
    split's record for build.json; corpus.py says how the split is made."""
    roots = [Path(r) for r in args.roots] if args.roots else corpus_mod.default_roots()
    files = corpus_mod.list_files(roots, exclude=(REPO,))
    split = corpus_mod.split_by_package(files, min_heldout_files=args.min_heldout_files, seed=args.seed)
    chosen = corpus_mod.sample_files(split.train, args.train_bytes, args.seed)
    with ThreadPoolExecutor(16) as ex:
        train_texts = [t for t in ex.map(corpus_mod.read_text, chosen) if t]
        held_texts = [(f.relpath, t) for f, t in zip(split.heldout, ex.map(corpus_mod.read_text, split.heldout)) if t]
    record = {"roots": [str(r) for r in roots], "files": len(files), "train_files": len(split.train),
              "train_files_used": len(train_texts), "train_bytes_used": sum(map(len, train_texts)),
              "heldout_files": len(split.heldout), "heldout_packages": split.heldout_packages}
    return train_texts, held_texts, record


def build(args, log) -> dict:
    t0 = time.time()
    out = Path(args.out)
    work = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"args": vars(args)}
    stamp = lambda name: summary.setdefault("timings_s", {}).__setitem__(name, round(time.time() - t0, 1))  # noqa: E731

    train_texts, held_texts, summary["corpus"] = read_corpus(args)
    stamp("corpus")
    log(f"[build] corpus {summary['corpus'] | {'heldout_packages': len(summary['corpus']['heldout_packages'])}}")

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
