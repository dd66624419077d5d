r"""Train a small Qwen3-architecture base model (AR view only) on a packed token stream.

    python -m jobs.train_base --tokens train.npy --val-tokens val.npy --config config.json \
        --tokenizer tok/ --out base/ --minutes 5 --batch-size 128 --seq-len 512

`--tokens` is a 1-D numpy array of token ids (documents joined with `<|endoftext|>`); each step
reads `batch-size` random windows of `seq-len + 1` tokens. The schedule is cosine with warm-up
over a wall-clock budget (`--minutes`) or a step count (`--steps`), whichever ends first: a
device call has a hard time limit, so the run must end on time whatever the step speed. The
training code is workers/training/base.py; jobs/build_demo.py runs it as one stage of the demo build.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from workers.training.base import init_model, train_base
from workers.training.checkpoint import write_base_checkpoint
from workers.training.loop import HelpFormatter, add_loop_options, schedule_from


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--tokens", required=True, help="1-D .npy array of training token ids")
    ap.add_argument("--val-tokens", help="1-D .npy array of held-out token ids (for a final val loss)")
    ap.add_argument("--config", required=True, help="config.json of the model to train (Qwen3 fields)")
    ap.add_argument("--tokenizer", help="folder whose tokenizer files are copied into the checkpoint")
    ap.add_argument("--out", required=True, help="folder for the base checkpoint (bf16 safetensors)")
    add_loop_options(ap, batch_size=128, seq_len=512, lr=2e-3)
    args = ap.parse_args(argv)
    schedule = schedule_from(ap, args)
    raw = json.loads(Path(args.config).read_text())
    torch.manual_seed(args.seed)
    model = init_model(raw, args.device)
    tokens = torch.from_numpy(np.load(args.tokens).astype(np.int64)).to(args.device)
    val = torch.from_numpy(np.load(args.val_tokens).astype(np.int64)).to(args.device) if args.val_tokens else None
    history = train_base(model, tokens, schedule=schedule, batch_size=args.batch_size, seq_len=args.seq_len,
                         val_tokens=val, seed=args.seed)
    out = write_base_checkpoint(model, raw, args.out, Path(args.tokenizer) if args.tokenizer else None)
    (out / "train_base_history.json").write_text(json.dumps(history, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
