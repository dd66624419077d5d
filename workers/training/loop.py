"""The one training loop (base model and heads alike), its learning-rate schedule and CLI options.

A step function builds one batch and returns its loss; the loop owns the rest: the schedule
(cosine with warm-up over steps or seconds, whichever runs out first: a device call has a hard
time limit, so a run must end on time whatever the step speed), AdamW (0.9, 0.95), gradient
clipping, bf16 autocast on CUDA, and logging with one host sync per log line, not per step.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch


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


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (fp32 master weights); plain fp32 on the CPU."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


# step_fn(step, gen) -> (loss, report): `report()` gives the record's own fields and is called
# only on log steps (it may sync with the host).
StepFn = Callable[[int, torch.Generator], tuple[torch.Tensor, Callable[[], dict]]]


def train_loop(params: list[torch.nn.Parameter], step_fn: StepFn, *, schedule: Schedule, describe: Callable[[dict], str],
               weight_decay: float = 0.0, grad_clip: float = 1.0, seed: int = 0, log_every: int = 50,
               log_first: int = 1, log=print) -> list[dict]:
    """Train `params` with AdamW until the schedule ends; returns the logged records.

    Matrices get `weight_decay`, vectors (norms) none. A step is logged when it is one of the
    first `log_first` or a multiple of `log_every`: {"step", "elapsed_s", "lr", **report()}; the
    last record is {"step": steps run, "elapsed_s"} (callers add their final figures to it).
    """
    dev = params[0].device
    amp = autocast_for(dev)
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=schedule.peak_lr, betas=(0.9, 0.95),
                            fused=dev.type == "cuda")
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
        with amp():
            loss, report = step_fn(step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        step += 1
        if step % log_every == 0 or step <= log_first:
            rec = {"step": step, "elapsed_s": round(time.time() - t0, 1), "lr": lr, **report()}
            history.append(rec)
            log(describe(rec))
    history.append({"step": step, "elapsed_s": round(time.time() - t0, 1)})
    return history


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written (it holds the exact command), and every option's default."""


def add_loop_options(ap: argparse.ArgumentParser, *, batch_size: int, seq_len: int, lr: float) -> None:
    """The options train_base and train_heads share: budget, batch, learning rate, seed, device."""
    a = ap.add_argument
    a("--minutes", type=float, default=None, help="wall-clock training budget (give this and/or --steps)")
    a("--steps", type=int, default=None, help="training step budget; training ends at whichever budget runs out")
    a("--batch-size", type=int, default=batch_size, help="rows per training step")
    a("--seq-len", type=int, default=seq_len, help="tokens per training row")
    a("--lr", type=float, default=lr, help="peak learning rate (cosine schedule, 5%% linear warm-up, floor 10%%)")
    a("--seed", type=int, default=0, help="seed of the data order (and of the model init for train_base)")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda (bf16 autocast) or cpu (fp32)")


def schedule_from(ap: argparse.ArgumentParser, args: argparse.Namespace) -> Schedule:
    """The schedule the shared options ask for (an argparse error when neither budget is given)."""
    if args.minutes is None and args.steps is None:
        ap.error("give --minutes or --steps")
    return Schedule(peak_lr=args.lr, steps=args.steps, seconds=args.minutes * 60 if args.minutes else None)
