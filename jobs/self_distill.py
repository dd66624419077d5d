"""Self-distillation data: the frozen base model's own continuations of corpus prefixes.

The Orthrus recipe trains the diffusion view on the base model's own outputs (ORTHRUS.md): at
decode time the drafts are checked against the AR model's argmax given the model's own earlier
tokens, so rows the model itself would write are the inputs the heads must learn to draft on.
Greedy rows match greedy decoding exactly; sampled rows add variety.

Generation is our engine in AR mode (one decode loop in the project, batched, CUDA-graphed on a
GPU), run on a copy of the model: the engine fuses projections for inference, which renames the
parameters that head training needs.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from workers.engine import Engine, SamplingParams
from workers.model import Qwen3Orthrus


@torch.no_grad()
def distill_rows(model: Qwen3Orthrus, prompts: torch.Tensor, new_tokens: int, batch_size: int,
                 temperatures: tuple[float, ...] = (0.0, 0.8), seed: int = 0) -> torch.Tensor:
    """Append `new_tokens` tokens to every row of `prompts` [N, P]; returns [N, P + new_tokens].

    Rows are taken `batch_size` at a time, cycling through `temperatures` (0 = greedy) batch by
    batch; row i samples with seed `seed + i`. Generation does not stop at end-of-text: what the
    model writes after it (a new file) is as much its own output as anything else."""
    n, p = prompts.shape
    dtype = torch.bfloat16 if prompts.device.type == "cuda" else torch.float32
    frozen = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
    engine = Engine(frozen, Path("<self-distillation>"), max_batch_size=min(batch_size, n), max_model_len=p + new_tokens)
    params = [SamplingParams(max_new_tokens=new_tokens, temperature=temperatures[(i // batch_size) % len(temperatures)],
                             seed=seed + i, stop_token_ids=()) for i in range(n)]
    results = engine.generate(prompts.tolist(), params, mode="ar")
    return torch.cat([prompts, torch.tensor([r.token_ids for r in results], dtype=prompts.dtype, device=prompts.device)], 1)
