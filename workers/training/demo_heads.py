"""New diffusion heads for an existing demo checkpoint: its base and tokenizer kept, the same corpus.

Two stages, so that several head recipes can train side by side on one GPU from one data set:
- prep: the build's corpus split (checked against the checkpoint's build.json: the same held-out
  packages, or the run stops), its token stream encoded with the checkpoint's own tokenizer,
  self-distilled rows from the checkpoint's base (a time budget), and a validation prompt set
  from held-out files that demo/prompts.parquet does not use (to choose between recipes without
  looking at the evaluation prompts); saved to one file;
- train: heads from that file (continuing the checkpoint's heads, or from the AR twins), for a
  wall-clock budget; writes <out>/model (every base tensor byte for byte from the checkpoint)
  and <out>/heads.json (recipe, data sizes, loss history).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from workers.training.checkpoint import diff_state, write_orthrus_checkpoint
from workers.training.demo_build import _chat_docs, _pack, read_corpus
from workers.training.heads import distill_from_stream, load_for_heads, train_heads
from workers.training.loop import Schedule
from workers.training.prompts import build_prompt_rows, write_prompts
from workers.training.tokenizer import encode_documents


def prepare(args, log) -> dict:
    """The prep stage (module docstring): writes args.prep and args.val_prompts."""
    t0 = time.time()
    src = Path(args.heads_only)
    train_texts, held_texts, corpus = read_corpus(args)
    build_json = src.parent / "build.json"
    if args.check_split and build_json.is_file():
        expected = json.loads(build_json.read_text())["corpus"]["heldout_packages"]
        if corpus["heldout_packages"] != expected:
            raise SystemExit(f"the held-out packages differ from {build_json}: another machine image? "
                             f"new {corpus['heldout_packages'][:5]}..., expected {expected[:5]}...")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    chat = _chat_docs(train_texts[: args.chat_files], args.chat_docs, args.seed, args.cpu_workers)
    docs = train_texts + chat
    random.Random(args.seed).shuffle(docs)
    stream = _pack(encode_documents(tok, docs, tok.token_to_id("<|endoftext|>")))
    log(f"[heads-only] corpus and {stream.size:,} tokens in {time.time() - t0:.0f}s")

    used = {r["source"] for r in pq.read_table(str(args.prompts)).to_pylist()} if Path(args.prompts).is_file() else set()
    val = build_prompt_rows([(rel, t) for rel, t in held_texts if rel not in used], args.val_code, args.val_chat,
                            args.seed + 1)
    write_prompts(val, args.val_prompts)

    dev = torch.device(args.device)
    train_t = torch.from_numpy(stream.astype(np.int64)).to(dev)
    model = load_for_heads(src, args.device, "ar")  # the base is all distillation needs
    t = time.time()
    rows = distill_from_stream(model, train_t, args.distill_rows, args.prompt_len, args.seq_len,
                               batch_size=args.distill_batch, seed=args.seed, seconds=args.distill_s)
    record = {"corpus": corpus, "tokens": int(stream.size), "chat_docs": len(chat), "distill_rows": int(rows.shape[0]),
              "distill_s": round(time.time() - t, 1), "val_prompts": len(val), "prep_s": round(time.time() - t0, 1)}
    log(f"[heads-only] self-distilled {rows.shape[0]} rows in {record['distill_s']}s")
    torch.save({"stream": torch.from_numpy(stream.astype(np.int16)), "rows": rows.to(torch.int16).cpu(),
                "record": record}, args.prep)
    return record


def train(args, log) -> dict:
    """The train stage (module docstring): heads from the prep file, <out>/model and <out>/heads.json."""
    t0 = time.time()
    src, out = Path(args.heads_only), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prep = torch.load(args.prep)
    dev = torch.device(args.device)
    stream = prep["stream"].to(dev, torch.int64)
    rows = prep["rows"].to(dev, torch.int64)
    heads = load_for_heads(src, args.device, args.init)
    cfg = heads.config
    blocks = tuple(int(k) for k in args.block_sizes.split(","))
    seconds = args.heads_s - (time.time() - t0) - args.save_s
    history = train_heads(heads, mask_token_id=cfg.mask_token_id, schedule=Schedule(args.heads_lr, args.heads_steps, seconds),
                          block_sizes=blocks, batch_size=args.heads_batch_size, seq_len=args.seq_len, rows=rows,
                          stream=stream, rows_share=args.rows_share, index_decay=args.index_decay, seed=args.seed, log=log)
    write_orthrus_checkpoint(src, diff_state(heads), out / "model", block_size=args.block_size,
                             mask_token_id=cfg.mask_token_id, eos_token_ids=list(cfg.eos_token_ids))
    record = {"args": vars(args), "prep": prep["record"], "heads_history": history,
              "train_s": round(time.time() - t0, 1)}
    (out / "heads.json").write_text(json.dumps(record, indent=1, default=str))
    log(f"[heads-only] {history[-1]['step']} steps; wrote {out / 'model'}")
    return record
