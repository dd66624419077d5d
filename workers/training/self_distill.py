"""Self-distillation data: the frozen base model's own continuations of corpus prefixes.

The Orthrus recipe (arXiv 2605.12825) trains the diffusion view on the base model's own outputs: at
decode time the drafts are checked against the AR model's argmax given the model's own earlier
tokens, so rows the model itself would write are the inputs the heads must learn to draft on.
Greedy rows match greedy decoding exactly; sampled rows add variety.

Generation is our engine in AR mode (one decode loop in the project, batched, CUDA-graphed on a
GPU), run on a copy of the model: the engine fuses projections for inference, which renames the
parameters that head training needs.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from workers.engine import Engine, SamplingParams
from workers.model import Qwen3Orthrus


@torch.no_grad()
def distill_rows(model: Qwen3Orthrus, prompts: torch.Tensor, new_tokens: int, batch_size: int,
                 temperatures: tuple[float, ...] = (0.0, 0.8), seed: int = 0, seconds: float | None = None) -> torch.Tensor:
    """Append `new_tokens` tokens to every row of `prompts` [N, P]; returns [N', P + new_tokens].

    Rows are taken `batch_size` at a time, cycling through `temperatures` (0 = greedy) batch by
    batch; row i samples with seed `seed + i`. Generation does not stop at end-of-text: what the
    model writes after it (a new file) is as much its own output as anything else. With `seconds`,
    no new batch starts once that much time has passed (at least one batch runs): N' <= N rows,
    each the same as without the budget (results do not depend on batching)."""
    n, p = prompts.shape
    dtype = torch.bfloat16 if prompts.device.type == "cuda" else torch.float32
    frozen = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
    engine = Engine(frozen, Path("<self-distillation>"), max_batch_size=min(batch_size, n), max_model_len=p + new_tokens)
    params = [SamplingParams(max_new_tokens=new_tokens, temperature=temperatures[(i // batch_size) % len(temperatures)],
                             seed=seed + i, stop_token_ids=()) for i in range(n)]
    t0, done = time.time(), 0
    out: list[list[int]] = []
    while done < n and (seconds is None or done == 0 or time.time() - t0 < seconds):
        # the whole set at once without a budget: the engine's own batching; else one batch per call
        end = n if seconds is None else min(n, done + batch_size)
        out += [r.token_ids for r in engine.generate(prompts[done:end].tolist(), params[done:end], mode="ar")]
        done = end
    return torch.cat([prompts[:done], torch.tensor(out, dtype=prompts.dtype, device=prompts.device)], 1)
