"""Build the demo model (corpus, tokenizer, base, heads, prompts) inside one wall-clock budget.

    PYTHONUNBUFFERED=1 python -m jobs.build_demo --out demo --budget-s 420 --heads-s 120 --train-bytes 120000000

One H200 takes about 7 minutes for that (README "Demo model"); the stages and what
<out>/build.json records are described in workers/training/demo_build.py. On a machine with other
packages installed the corpus, and so the model, differ; on the same machine image the selection
is the same (sorted, seeded). Measure the result with jobs/eval_demo.py.

New heads for the shipped model (base and tokenizer kept; workers/training/demo_heads.py), data
once, then one or more recipes side by side on one GPU:

    python -m jobs.build_demo --heads-only demo/model --stage prep --prep /tmp/prep.pt --distill-s 80
    python -m jobs.build_demo --heads-only demo/model --stage train --prep /tmp/prep.pt --out /tmp/a --heads-s 240
"""
from __future__ import annotations

import argparse

import torch

from workers.training.demo_build import build
from workers.training.loop import HelpFormatter


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    a = ap.add_argument
    a("--out", default="demo", help="demo folder: model/, prompts.parquet, build.json")
    a("--work", default="/tmp/orthrus-demo-work", help="scratch: tokenizer, bf16 base checkpoint")
    a("--roots", nargs="*", help="source folders (default: this interpreter's stdlib and site-packages)")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda (bf16 autocast) or cpu")
    a("--seed", type=int, default=0, help="seed of the split, the file sample, the init and the data order")
    a("--budget-s", type=float, default=560, help="wall-clock budget of the whole build")
    a("--heads-s", type=float, default=150, help="time reserved for self-distillation + head training")
    a("--reserve-s", type=float, default=25, help="time reserved for saving and the prompt set")
    a("--save-s", type=float, default=15, help="time kept after head training")
    a("--min-heldout-files", type=int, default=1000, help="whole packages are held out until they hold this many files")
    a("--train-bytes", type=int, default=200_000_000, help="source bytes sampled for training")
    a("--tokenizer-files", type=int, default=3000, help="training files the BPE is learnt from")
    a("--chat-files", type=int, default=20000, help="training files scanned for documented functions")
    a("--chat-docs", type=int, default=30000, help="chat rows added to the training corpus")
    a("--val-files", type=int, default=300, help="held-out files in the validation stream")
    a("--cpu-workers", type=int, default=16, help="processes that scan files for documented functions")
    a("--vocab", type=int, default=4096, help="BPE vocabulary size (special tokens included)")
    a("--hidden", type=int, default=256, help="hidden size")
    a("--layers", type=int, default=8, help="decoder layers")
    a("--heads", type=int, default=4, help="attention heads (head_dim = hidden / heads)")
    a("--kv-heads", type=int, default=2, help="key/value heads (GQA)")
    a("--intermediate", type=int, default=768, help="MLP intermediate size")
    a("--max-positions", type=int, default=4096, help="max_position_embeddings in config.json")
    a("--seq-len", type=int, default=512, help="tokens per training row (base and heads)")
    a("--batch-size", type=int, default=128, help="rows per base training step")
    a("--base-lr", type=float, default=2e-3, help="peak learning rate of the base (cosine)")
    a("--base-steps", type=int, default=None, help="cap on base steps (tests); the budget decides otherwise")
    a("--distill-rows", type=int, default=8192, help="self-distilled rows for the heads")
    a("--distill-batch", type=int, default=1024, help="rows generated at once")
    a("--prompt-len", type=int, default=64, help="corpus prefix length of a self-distilled row")
    a("--block-sizes", default="4,8,16,32", help="block sizes K the heads train on, cycled per step")
    a("--block-size", type=int, default=16, help="block_size written to config.json (the engine's default K)")
    a("--heads-lr", type=float, default=1e-3, help="peak learning rate of the heads (cosine)")
    a("--heads-steps", type=int, default=None, help="cap on head steps (tests); the budget decides otherwise")
    a("--heads-batch-size", type=int, default=64, help="rows per head training step")
    a("--rows-share", type=float, default=0.75, help="share of each head batch from self-distilled rows")
    a("--export-tokens", type=int, default=4_000_000, help="tokens of the stream saved to <work>/train_sample.npy")
    a("--code-prompts", type=int, default=300, help="code-prefix prompts in prompts.parquet")
    a("--chat-prompts", type=int, default=40, help="chat prompts in prompts.parquet")
    h = ap.add_argument_group("new heads for an existing checkpoint (--heads-only)")
    h.add_argument("--heads-only", metavar="MODEL", help="keep this checkpoint's base and tokenizer; train heads only")
    h.add_argument("--stage", choices=("prep", "train"), default="train",
                   help="prep: corpus, self-distilled rows and validation prompts to --prep; train: heads from --prep")
    h.add_argument("--prep", default="/tmp/orthrus-demo-prep.pt", help="the prep stage's file")
    h.add_argument("--distill-s", type=float, default=None, help="time budget of self-distillation (none = all rows)")
    h.add_argument("--init", choices=("ar", "checkpoint"), default="checkpoint",
                   help="continue the checkpoint's heads, or start from copies of the AR twins")
    h.add_argument("--index-decay", type=float, default=1.0, help="weigh the KL at block index i by this**i")
    h.add_argument("--prompts", default="demo/prompts.parquet", help="evaluation prompts whose files validation avoids")
    h.add_argument("--val-prompts", default="/tmp/orthrus-demo-val.parquet", help="where prep writes validation prompts")
    h.add_argument("--val-code", type=int, default=160, help="code prompts in the validation set")
    h.add_argument("--val-chat", type=int, default=32, help="chat prompts in the validation set")
    h.add_argument("--no-check-split", dest="check_split", action="store_false",
                   help="do not require the held-out packages of the checkpoint's build.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    if args.heads_only:
        from workers.training import demo_heads

        (demo_heads.prepare if args.stage == "prep" else demo_heads.train)(args, log)
    else:
        build(args, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
