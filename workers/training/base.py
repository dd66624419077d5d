"""A small Qwen3-architecture base model (AR view only), trained on a packed token stream.

The stream is a 1-D tensor of token ids (documents joined with `<|endoftext|>`); each step reads
`batch_size` random windows of `seq_len + 1` tokens (next-token targets included).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from workers.config import ModelConfig
from workers.model import Qwen3Orthrus
from workers.training.diffusion_loss import causal_attend
from workers.training.loop import Schedule, autocast_for, sample_windows, train_loop


def init_model(raw_config: dict, device: str | torch.device, std: float = 0.02) -> Qwen3Orthrus:
    """A fresh AR-only model: normal(0, std) weights, output projections scaled by 1/sqrt(2 * layers)."""
    cfg = ModelConfig.from_dict({**raw_config, "architectures": ["Qwen3ForCausalLM"]})
    model = Qwen3Orthrus(cfg, orthrus=False)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            scale = std / math.sqrt(2 * cfg.num_hidden_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
            torch.nn.init.normal_(p, 0.0, scale)
    return model.to(device)


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


def train_base(model: Qwen3Orthrus, tokens: torch.Tensor, *, schedule: Schedule, batch_size: int, seq_len: int,
               val_tokens: torch.Tensor | None = None, weight_decay: float = 0.1, grad_clip: float = 1.0,
               seed: int = 0, log_every: int = 50, log=print) -> list[dict]:
    """Train `model` (all parameters, AR view) in place; returns the logged history."""
    torch.set_flush_denormal(True)  # CPU: tiny Adam moments turn denormal and slow steps 10x+
    model.train()

    def step_fn(step: int, gen: torch.Generator):
        loss = lm_loss(model, sample_windows(tokens, batch_size, seq_len + 1, gen))
        return loss, lambda: {"loss": round(float(loss.detach()), 4)}

    history = train_loop(list(model.parameters()), step_fn, schedule=schedule, weight_decay=weight_decay,
                         grad_clip=grad_clip, seed=seed, log_every=log_every, log_first=1, log=log,
                         describe=lambda r: f"[base] step {r['step']} t={r['elapsed_s']}s lr={r['lr']:.2e} loss={r['loss']:.4f}")
    final = history[-1]
    final["tokens_seen"] = final["step"] * batch_size * seq_len
    if val_tokens is not None and val_tokens.numel() > seq_len + 1:
        final["val_loss"] = round(eval_loss(model, val_tokens, batch_size, seq_len, 4, autocast_for(tokens.device)), 4)
    log(f"[base] done: {final}")
    return history
