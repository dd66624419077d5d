"""Self-distillation data: the frozen base model's own continuations of corpus prefixes.

The Orthrus recipe trains the diffusion view on the base model's own outputs (ORTHRUS.md): at
decode time the drafts are checked against the AR model's argmax given the model's own earlier
tokens, so rows the model itself would write are the inputs the heads must learn to draft on.
Greedy rows match greedy decoding exactly; sampled rows add variety.

All prompts of one call have the same length, so every row sits at the same position and the
cache needs no padding or per-row masks: a static cache [B, KVH, P+N, D] per layer, written by
position; a decode step's single query sees every key written so far.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from workers.heads_training import _expand_kv
from workers.model import Qwen3Orthrus


class _StaticCache:
    """Per-layer keys/values [B, KVH, S, D], written by position; `attend` reads up to the write end."""

    def __init__(self, model: Qwen3Orthrus, batch: int, length: int, device) -> None:
        c = model.config
        self.shape = (batch, c.num_key_value_heads, length, c.head_dim)
        self.k: list[torch.Tensor | None] = [None] * c.num_hidden_layers
        self.v: list[torch.Tensor | None] = [None] * c.num_hidden_layers
        self.start = 0

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t = k.shape[2]
        end = self.start + t
        if self.k[layer] is None:  # allocated at the first write: the dtype autocast gives k and v
            self.k[layer] = torch.empty(self.shape, dtype=k.dtype, device=k.device)
            self.v[layer] = torch.empty(self.shape, dtype=v.dtype, device=v.device)
        self.k[layer][:, :, self.start:end] = k
        self.v[layer][:, :, self.start:end] = v
        b, h, _, d = q.shape
        kvh = k.shape[1]
        if t == 1:  # one new token sees every cached key: fold each KV group's heads into a query axis
            out = F.scaled_dot_product_attention(q.view(b, kvh, h // kvh, d), self.k[layer][:, :, :end],
                                                 self.v[layer][:, :, :end])  # [B, KVH, G, D], no key copies
            return out.view(b, h, 1, d)
        # prefill from an empty cache: plain causal (query and key lengths match)
        keys, values = _expand_kv(self.k[layer][:, :, :end], h), _expand_kv(self.v[layer][:, :, :end], h)
        return F.scaled_dot_product_attention(q, keys, values, is_causal=True)


@torch.no_grad()
def continue_prompts(model: Qwen3Orthrus, prompts: torch.Tensor, new_tokens: int, temperature: float = 0.0,
                     seed: int = 0) -> torch.Tensor:
    """Append `new_tokens` tokens to every row of `prompts` [B, P]; returns [B, P + new_tokens].

    temperature 0 = greedy. Generation does not stop at end-of-text: what the model writes after
    it (a new file) is as much its own output as anything else.
    """
    b, p = prompts.shape
    dev = prompts.device
    cache = _StaticCache(model, b, p + new_tokens, dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    out = torch.empty((b, p + new_tokens), dtype=prompts.dtype, device=dev)
    out[:, :p] = prompts
    ids, pos = prompts, torch.arange(p, device=dev)[None].expand(b, -1)
    for step in range(new_tokens):
        hidden = model(ids, pos, view="ar", attend=cache.attend)  # [B, T, H]
        cache.start += ids.shape[1]
        logits = model.logits(hidden[:, -1]).float()  # [B, V]
        if temperature > 0:
            probs = (logits / temperature).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
        else:
            nxt = logits.argmax(-1)
        out[:, p + step] = nxt
        ids, pos = nxt[:, None], torch.full((b, 1), p + step, device=dev)
    return out


def distill_rows(model: Qwen3Orthrus, prompts: torch.Tensor, new_tokens: int, batch_size: int,
                 temperatures: tuple[float, ...] = (0.0, 0.8), seed: int = 0) -> torch.Tensor:
    """Continue `prompts` [N, P] in batches, cycling through `temperatures` batch by batch: [N, P+new]."""
    rows = []
    for i, start in enumerate(range(0, prompts.shape[0], batch_size)):
        temp = temperatures[i % len(temperatures)]
        rows.append(continue_prompts(model, prompts[start:start + batch_size], new_tokens, temp, seed + i))
    return torch.cat(rows)
