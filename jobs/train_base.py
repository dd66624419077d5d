"""Train a small Qwen3-architecture base model (AR view only) on a packed token stream.

    python -m jobs.train_base --tokens train.npy --val-tokens val.npy --config config.json \
        --tokenizer tok/ --out base/ --minutes 5 --batch-size 128 --seq-len 512

`--tokens` is a 1-D numpy array of token ids (documents joined with `<|endoftext|>`); each step
reads `batch-size` random windows of `seq-len + 1` tokens. The schedule is cosine with warm-up
over a wall-clock budget (`--minutes`) or a step count (`--steps`), whichever ends first: a
device call has a hard time limit, so the run must end on time whatever the step speed.
`jobs/build_demo.py` calls `train_base` directly; this entry point is for re-running one stage.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workers.config import ModelConfig
from workers.heads_training import causal_attend
from workers.model import Qwen3Orthrus


@dataclass(frozen=True)
class Schedule:
    """Cosine learning rate with linear warm-up, over steps or seconds (whichever runs out first)."""

    peak_lr: float
    steps: int | None = None
    seconds: float | None = None
    warmup: float = 0.05  # share of the run
    floor: float = 0.1  # final lr as a share of the peak

    def progress(self, step: int, elapsed: float) -> float:
        parts = [step / self.steps if self.steps else 0.0, elapsed / self.seconds if self.seconds else 0.0]
        return min(1.0, max(parts))

    def lr(self, progress: float) -> float:
        if progress < self.warmup:
            return self.peak_lr * max(progress / self.warmup, 0.01)
        x = (progress - self.warmup) / max(1e-9, 1.0 - self.warmup)
        return self.peak_lr * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * x)))


def sample_windows(tokens: torch.Tensor, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """`batch` random windows [batch, length] of a 1-D token tensor (on its device)."""
    starts = torch.randint(0, tokens.numel() - length, (batch,), generator=gen, device="cpu").to(tokens.device)
    return tokens[starts[:, None] + torch.arange(length, device=tokens.device)]


def lm_loss(model: Qwen3Orthrus, windows: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of the AR view over windows [B, T+1]."""
    x, y = windows[:, :-1], windows[:, 1:]
    pos = torch.arange(x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
    logits = model.logits(model(x, pos, view="ar", attend=causal_attend()))  # [B, T, V]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def eval_loss(model: Qwen3Orthrus, tokens: torch.Tensor, batch: int, length: int, batches: int, amp) -> float:
    """Mean loss over `batches` seeded random windows (same windows every call)."""
    gen = torch.Generator().manual_seed(1234)
    model.eval()
    with amp():
        total = sum(float(lm_loss(model, sample_windows(tokens, batch, length + 1, gen))) for _ in range(batches))
    model.train()
    return total / batches


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (fp32 master weights); plain fp32 on the CPU."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def train_base(model: Qwen3Orthrus, tokens: torch.Tensor, *, schedule: Schedule, batch_size: int, seq_len: int,
               val_tokens: torch.Tensor | None = None, weight_decay: float = 0.1, grad_clip: float = 1.0,
               seed: int = 0, log_every: int = 50, log=print) -> list[dict]:
    """Train `model` (all parameters, AR view) in place; returns the logged history."""
    dev = tokens.device
    amp = autocast_for(dev)
    torch.set_flush_denormal(True)  # CPU: tiny Adam moments turn denormal and slow steps 10x+
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=schedule.peak_lr, betas=(0.9, 0.95), fused=dev.type == "cuda")
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    model.train()
    t0, step, running = time.time(), 0, None
    while True:
        progress = schedule.progress(step, time.time() - t0)
        if progress >= 1.0:
            break
        lr = schedule.lr(progress)
        for g in opt.param_groups:
            g["lr"] = lr
        with amp():
            loss = lm_loss(model, sample_windows(tokens, batch_size, seq_len + 1, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        step += 1
        if step % log_every == 0 or step == 1:
            value = float(loss.detach())  # one host sync per log line, not per step
            running = value if running is None else 0.9 * running + 0.1 * value
            rec = {"step": step, "elapsed_s": round(time.time() - t0, 1), "lr": lr, "loss": round(value, 4)}
            history.append(rec)
            log(f"[base] step {step} t={rec['elapsed_s']}s lr={lr:.2e} loss={value:.4f}")
    final = {"step": step, "elapsed_s": round(time.time() - t0, 1),
             "tokens_seen": step * batch_size * seq_len}
    if val_tokens is not None and val_tokens.numel() > seq_len + 1:
        final["val_loss"] = round(eval_loss(model, val_tokens, batch_size, seq_len, 4, amp), 4)
    history.append(final)
    log(f"[base] done: {final}")
    return history


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", required=True, help="1-D .npy array of training token ids")
    ap.add_argument("--val-tokens", help="1-D .npy array of held-out token ids (for a final val loss)")
    ap.add_argument("--config", required=True, help="config.json of the model to train (Qwen3 fields)")
    ap.add_argument("--tokenizer", help="folder whose tokenizer files are copied into the checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.minutes is None and args.steps is None:
        ap.error("give --minutes or --steps")
    from jobs.orthrus_checkpoint import write_base_checkpoint

    raw = json.loads(Path(args.config).read_text())
    torch.manual_seed(args.seed)
    model = init_model(raw, args.device)
    tokens = torch.from_numpy(np.load(args.tokens).astype(np.int64)).to(args.device)
    val = torch.from_numpy(np.load(args.val_tokens).astype(np.int64)).to(args.device) if args.val_tokens else None
    sched = Schedule(peak_lr=args.lr, steps=args.steps, seconds=args.minutes * 60 if args.minutes else None)
    history = train_base(model, tokens, schedule=sched, batch_size=args.batch_size, seq_len=args.seq_len,
                         val_tokens=val, seed=args.seed)
    out = write_base_checkpoint(model, raw, args.out, Path(args.tokenizer) if args.tokenizer else None)
    (out / "train_base_history.json").write_text(json.dumps(history, indent=1))
    return 0


def init_model(raw_config: dict, device: str | torch.device, std: float = 0.02) -> Qwen3Orthrus:
    """A fresh AR-only model: normal(0, std) weights, output projections scaled by 1/sqrt(2 * layers)."""
    cfg = ModelConfig.from_dict({**raw_config, "architectures": ["Qwen3ForCausalLM"]})
    model = Qwen3Orthrus(cfg, orthrus=False)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            scale = std / math.sqrt(2 * cfg.num_hidden_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
            torch.nn.init.normal_(p, 0.0, scale)
    return model.to(device)


if __name__ == "__main__":
    raise SystemExit(main())
