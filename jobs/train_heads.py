"""Add Orthrus diffusion heads to a Qwen3 checkpoint: freeze it, train the six `*_diff` tensors per layer.

    python -m jobs.train_heads --base path/to/qwen3 --out path/to/orthrus --tokens corpus.npy \
        --distill-rows 4096 --block-sizes 4,8,16,32 --minutes 10
    (installed: orthrus-batch-train-heads ...; data may also be --text 'docs/*.txt')

What it does (ORTHRUS.md "Training the diffusion view"; the math is workers/heads_training.py):
the base is loaded and frozen; each `X_diff` starts as a copy of its AR twin `X`; optional
self-distillation continues `--distill-rows` random corpus prefixes with the base model itself
(greedy and sampled, alternating); each step then trains on rows drawn from those and from the
corpus, with one block size K per step cycling through `--block-sizes` (mixed K: one head for
every K the engine may use), blocks tiled from a random anchor offset, forward KL to the frozen
AR view on every masked position. The checkpoint written is in the exact Orthrus format with
every base tensor copied byte for byte (jobs/orthrus_checkpoint.py). Runs on the CPU for tiny
models and on one GPU (bf16 autocast, fp32 head weights) for real ones; logs loss and the greedy
acceptance-length proxy per K.
"""
from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import numpy as np
import torch

from jobs.train_base import Schedule, autocast_for, sample_windows
from workers.config import ModelConfig
from workers.heads_training import add_diffusion_heads, diffusion_kl_step, freeze_base, tile_blocks
from workers.loader import load_model
from workers.model import Qwen3Orthrus


def load_for_heads(base_dir: str | Path, device: str, init: str = "ar") -> Qwen3Orthrus:
    """The checkpoint as an Orthrus model in fp32: `*_diff` copied from the AR twins (init="ar") or,
    for an Orthrus checkpoint with init="checkpoint", its own heads (to continue training)."""
    model, _ = load_model(base_dir, device=device, dtype=torch.float32)
    if model.orthrus and init == "checkpoint":
        return model
    if model.orthrus:  # start over from the AR twins: drop the stored heads first
        base = Qwen3Orthrus(model.config, orthrus=False).to(device)
        base.load_state_dict({k: v for k, v in model.state_dict().items() if "_diff" not in k}, strict=True)
        base.inv_freq = model.inv_freq
        model = base
    return add_diffusion_heads(model)


def train_heads(model: Qwen3Orthrus, *, mask_token_id: int, schedule: Schedule, block_sizes: tuple[int, ...],
                batch_size: int, seq_len: int, rows: torch.Tensor | None = None, stream: torch.Tensor | None = None,
                rows_share: float = 0.5, seed: int = 0, log_every: int = 50, log=print) -> list[dict]:
    """Train the `*_diff` tensors of `model` in place; returns the logged history.

    Each batch takes round(rows_share * batch_size) rows of `rows` [N, seq_len] (self-distilled)
    and the rest as random windows of `stream` (1-D corpus tokens); either source may be absent.
    """
    if rows is None and stream is None:
        raise ValueError("give rows (self-distilled) and/or stream (corpus tokens)")
    if rows is not None and rows.shape[1] != seq_len:
        raise ValueError(f"rows have length {rows.shape[1]}, expected seq_len={seq_len}")
    n_rows = batch_size if stream is None else (0 if rows is None else round(rows_share * batch_size))
    params = freeze_base(model)
    dev = params[0].device
    amp = autocast_for(dev)
    opt = torch.optim.AdamW(params, lr=schedule.peak_lr, betas=(0.9, 0.95), weight_decay=0.0, fused=dev.type == "cuda")
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    t0, step = time.time(), 0
    while True:
        progress = schedule.progress(step, time.time() - t0)
        if progress >= 1.0:
            break
        lr = schedule.lr(progress)
        for g in opt.param_groups:
            g["lr"] = lr
        kb = block_sizes[step % len(block_sizes)]
        parts = []
        if n_rows:
            parts.append(rows[torch.randint(0, rows.shape[0], (n_rows,), generator=gen).to(rows.device)])
        if batch_size - n_rows:
            parts.append(sample_windows(stream, batch_size - n_rows, seq_len, gen))
        batch = torch.cat(parts).to(dev)
        offset = int(torch.randint(1, kb + 1, (1,), generator=gen))
        layout = tile_blocks(seq_len, kb, offset, device=dev)
        with amp():
            out = diffusion_kl_step(model, batch, layout, mask_token_id)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % log_every == 0 or step <= len(block_sizes):
            rec = {"step": step, "elapsed_s": round(time.time() - t0, 1), "lr": lr, "block_size": kb,
                   "kl": round(float(out.loss.detach()), 4), "accept_proxy": round(float(out.accept_length), 3),
                   "agree_first": round(float(out.agreement[0]), 3)}
            history.append(rec)
            log(f"[heads] step {step} t={rec['elapsed_s']}s K={kb} lr={lr:.2e} kl={rec['kl']} "
                f"accept~{rec['accept_proxy']} agree[0]={rec['agree_first']}")
    history.append({"step": step, "elapsed_s": round(time.time() - t0, 1)})
    return history


def distill_from_stream(model: Qwen3Orthrus, stream: torch.Tensor, n: int, prompt_len: int, seq_len: int,
                        batch_size: int, seed: int = 0) -> torch.Tensor:
    """`n` self-distilled rows [n, seq_len]: random corpus prefixes of `prompt_len` tokens, continued by the model."""
    from jobs.self_distill import distill_rows

    gen = torch.Generator().manual_seed(seed)
    prompts = sample_windows(stream, n, prompt_len, gen)
    return distill_rows(model, prompts, seq_len - prompt_len, batch_size, seed=seed)


def _load_stream(args, base_dir: Path) -> torch.Tensor | None:
    if args.tokens:
        return torch.from_numpy(np.load(args.tokens).astype(np.int64))
    if args.text:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
        eot = tok.token_to_id("<|endoftext|>")
        ids: list[int] = []
        for path in sorted(p for pattern in args.text for p in glob.glob(pattern)):
            ids += tok.encode(Path(path).read_text(encoding="utf-8", errors="replace"), add_special_tokens=False).ids
            ids += [eot] if eot is not None else []
        return torch.tensor(ids, dtype=torch.int64)
    return None


def _mask_token_id(args, base_dir: Path, cfg: ModelConfig) -> int:
    if args.mask_token_id is not None:
        return args.mask_token_id
    if cfg.mask_token_id is not None:
        return cfg.mask_token_id
    tok_file = base_dir / "tokenizer.json"
    if tok_file.is_file():
        from tokenizers import Tokenizer

        tid = Tokenizer.from_file(str(tok_file)).token_to_id("<|mask|>")
        if tid is not None:
            return tid
    raise SystemExit("no mask token: pass --mask-token-id (an unused row of the embedding; 151669 for Qwen3)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="Qwen3 (or Orthrus) checkpoint folder")
    ap.add_argument("--out", required=True, help="folder for the Orthrus checkpoint")
    ap.add_argument("--tokens", help="corpus as a 1-D .npy array of token ids")
    ap.add_argument("--text", nargs="*", help="corpus as text files (globs), tokenized with the base tokenizer")
    ap.add_argument("--distill-rows", type=int, default=0, help="self-distilled rows to generate first (0 = none)")
    ap.add_argument("--prompt-len", type=int, default=64, help="corpus prefix length of a self-distilled row")
    ap.add_argument("--distill-batch", type=int, default=1024, help="rows generated at once (one static cache)")
    ap.add_argument("--rows-share", type=float, default=0.75, help="share of each batch from self-distilled rows")
    ap.add_argument("--block-sizes", default="4,8,16,32", help="block sizes K trained, cycled per step")
    ap.add_argument("--block-size", type=int, default=None, help="block_size written to config.json (default: the largest)")
    ap.add_argument("--mask-token-id", type=int, default=None)
    ap.add_argument("--init", choices=("ar", "checkpoint"), default="ar", help="heads from the AR twins, or continue an Orthrus checkpoint's")
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.minutes is None and args.steps is None:
        ap.error("give --minutes or --steps")
    from jobs.orthrus_checkpoint import diff_state, write_orthrus_checkpoint

    base_dir = Path(args.base)
    model = load_for_heads(base_dir, args.device, args.init)
    mask_id = _mask_token_id(args, base_dir, model.config)
    stream = _load_stream(args, base_dir)
    if stream is not None:
        stream = stream.to(args.device)
    rows = None
    if args.distill_rows:
        if stream is None:
            raise SystemExit("--distill-rows needs a corpus (--tokens or --text) to take prefixes from")
        t = time.time()
        rows = distill_from_stream(model, stream, args.distill_rows, args.prompt_len, args.seq_len,
                                   batch_size=args.distill_batch, seed=args.seed)
        print(f"[heads] self-distilled {rows.shape[0]} rows x {rows.shape[1]} tokens in {time.time() - t:.1f}s", flush=True)
    blocks = tuple(int(k) for k in args.block_sizes.split(","))
    sched = Schedule(peak_lr=args.lr, steps=args.steps, seconds=args.minutes * 60 if args.minutes else None)
    history = train_heads(model, mask_token_id=mask_id, schedule=sched, block_sizes=blocks, batch_size=args.batch_size,
                          seq_len=args.seq_len, rows=rows, stream=stream, rows_share=args.rows_share, seed=args.seed)
    out = write_orthrus_checkpoint(base_dir, diff_state(model), args.out, block_size=args.block_size or max(blocks),
                                   mask_token_id=mask_id, eos_token_ids=list(model.config.eos_token_ids))
    (out / "train_heads_history.json").write_text(json.dumps(history, indent=1))
    print(f"[heads] wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
