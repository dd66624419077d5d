r"""Add Orthrus diffusion heads to a Qwen3 checkpoint: freeze it, train the six `*_diff` tensors per layer.

    python -m jobs.train_heads --base path/to/qwen3 --out path/to/orthrus --tokens corpus.npy \
        --distill-rows 4096 --block-sizes 4,8,16,32 --minutes 10
    (installed: orthrus-batch-train-heads ...; data may also be --text 'docs/*.txt')

What it does (the recipe of the Orthrus paper, arXiv 2605.12825, section on training the
diffusion view; README "Demo model"; the code is workers/training/heads.py and the math
workers/training/diffusion_loss.py): the base is loaded and frozen; each `X_diff` starts as a
copy of its AR twin `X` (or, with --init checkpoint, keeps an Orthrus checkpoint's own heads);
optional self-distillation continues `--distill-rows` random corpus prefixes with the base model
itself (greedy and sampled, alternating per batch); each step then trains on rows drawn from those
and from the corpus, with one block size K per step cycling through `--block-sizes` (mixed K: one
head for every K the engine may use), blocks tiled from a random anchor offset, forward KL to the
frozen AR view on every masked position. The checkpoint written is in the exact Orthrus format
with every base tensor copied byte for byte. Runs on the CPU for tiny models and on one GPU
(bf16 autocast, fp32 head weights) for real ones; logs the KL and the greedy acceptance-length
proxy per K.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workers.training.checkpoint import diff_state, write_orthrus_checkpoint
from workers.training.heads import (distill_from_stream, find_mask_token_id, load_for_heads, load_token_stream,
                                    train_heads)
from workers.training.loop import HelpFormatter, add_loop_options, schedule_from


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="orthrus-batch-train-heads", description=__doc__, formatter_class=HelpFormatter)
    a = ap.add_argument
    a("--base", required=True, help="Qwen3 (or Orthrus) checkpoint folder")
    a("--out", required=True, help="folder for the Orthrus checkpoint (may be --base itself)")
    a("--tokens", help="corpus as a 1-D .npy array of token ids")
    a("--text", nargs="*", help="corpus as text files (globs), tokenized with the base tokenizer")
    a("--distill-rows", type=int, default=0, help="self-distilled rows to generate first (0 = none)")
    a("--distill-seconds", type=float, default=None, help="stop self-distillation after the batch running then (none = all rows)")
    a("--prompt-len", type=int, default=64, help="corpus prefix length of a self-distilled row")
    a("--distill-batch", type=int, default=1024, help="rows generated at once (one engine batch)")
    a("--rows-share", type=float, default=0.75, help="share of each batch from self-distilled rows")
    a("--block-sizes", default="4,8,16,32", help="block sizes K trained, cycled per step (repeat one to weigh it)")
    a("--block-size", type=int, default=None, help="block_size written to config.json (none = the largest trained)")
    a("--index-decay", type=float, default=1.0, help="weigh the KL at block index i by this**i (1 = plain mean)")
    a("--mask-token-id", type=int, default=None,
      help="mask token id (none = the checkpoint config's mask_token_id, else the tokenizer's <|mask|>)")
    a("--init", choices=("ar", "checkpoint"), default="ar",
      help="heads start as copies of the AR twins, or continue an Orthrus checkpoint's own heads")
    add_loop_options(ap, batch_size=64, seq_len=512, lr=1e-3)
    return ap, ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ap, args = parse_args(argv)
    schedule = schedule_from(ap, args)
    base_dir = Path(args.base)
    model = load_for_heads(base_dir, args.device, args.init)
    mask_id = find_mask_token_id(args.mask_token_id, base_dir, model.config.mask_token_id)
    stream = load_token_stream(args.tokens, args.text, base_dir)
    if stream is not None:
        stream = stream.to(args.device)
    rows = None
    if args.distill_rows:
        if stream is None:
            raise SystemExit("--distill-rows needs a corpus (--tokens or --text) to take prefixes from")
        t = time.time()
        rows = distill_from_stream(model, stream, args.distill_rows, args.prompt_len, args.seq_len,
                                   batch_size=args.distill_batch, seed=args.seed, seconds=args.distill_seconds)
        print(f"[heads] self-distilled {rows.shape[0]} rows x {rows.shape[1]} tokens in {time.time() - t:.1f}s", flush=True)
    blocks = tuple(int(k) for k in args.block_sizes.split(","))
    history = train_heads(model, mask_token_id=mask_id, schedule=schedule, block_sizes=blocks,
                          batch_size=args.batch_size, seq_len=args.seq_len, rows=rows, stream=stream,
                          rows_share=args.rows_share, index_decay=args.index_decay, seed=args.seed)
    out = write_orthrus_checkpoint(base_dir, diff_state(model), args.out, block_size=args.block_size or max(blocks),
                                   mask_token_id=mask_id, eos_token_ids=list(model.config.eos_token_ids))
    (out / "train_heads_history.json").write_text(json.dumps(history, indent=1))
    print(f"[heads] wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
