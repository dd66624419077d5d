"""The elementwise pieces of a layer, as single kernels on CUDA.

At batch 1 a decode step is ~60 tiny kernels per layer; their fixed cost, not the weight reads,
is what separates an eager step from the weight-read floor. RMSNorm (7 ops), head-norm + RoPE
(~12 ops) and SiLU-and-multiply (3 ops) are each compiled by torch.compile into one Triton kernel
(dynamic shapes, so one compile serves every batch and block size). On the CPU they run eagerly;
the formulas are the same either way, so outputs do not depend on the switch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """fp32 statistics, cast back before the weight, as the reference Qwen3 does."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def norm_rope(x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Per-head RMSNorm then rotary embedding (half-split layout). x: [B, T, H, D]; cos/sin: [B, T, 1, D]."""
    x = rms_norm(x, weight, eps)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


class Ops:
    """The functions the model calls; `use_compiled` swaps in their compiled versions."""

    rms_norm = staticmethod(rms_norm)
    norm_rope = staticmethod(norm_rope)
    silu_mul = staticmethod(silu_mul)
    compiled = False

    @classmethod
    def use_compiled(cls) -> None:
        if cls.compiled:
            return
        opts = dict(dynamic=True, fullgraph=True)
        cls.rms_norm = staticmethod(torch.compile(rms_norm, **opts))
        cls.norm_rope = staticmethod(torch.compile(norm_rope, **opts))
        cls.silu_mul = staticmethod(torch.compile(silu_mul, **opts))
        cls.compiled = True
