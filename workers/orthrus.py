"""One batched Orthrus iteration: draft (diffusion view) -> verify (AR view) -> accept -> commit.

Per slot: `length` tokens have K/V in the cache; `anchor` (the last committed token, not yet in
the cache) sits at position `length`. An iteration with block size K:
  1. diffusion pass over [anchor, MASK x (K-1)] at positions length..length+K-1 drafts
     d_1..d_{K-1} (its K/V go to the cache and are overwritten by step 2);
  2. verify pass over [anchor, d_1..d_{K-1}] at the same positions (causal) writes the AR K/V;
  3. accept a drafts (sampler.py) and commit anchor + a drafts: length += a + 1; the
     recovered/bonus token becomes the next anchor. Nothing is copied or cropped.
AR mode is K = 1: no diffusion pass, the verify pass over [anchor] is one AR step.
Everything stays on the device; the caller reads back only the [B] `finished` vector.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from workers.attention import CachedAttend, block_mask, causal_mask
from workers.kv_cache import KVCache
from workers.model import Qwen3Orthrus
from workers.sampler import accept, draft_tokens


@dataclass
class SlotState:
    """Decoding state of every slot, on the device. Rows are slots; `out`/`hist` have a spare
    last column that absorbs the writes of rows with nothing to write (no branches on values)."""

    length: torch.Tensor  # [S] int64: tokens with K/V in the cache
    anchor: torch.Tensor  # [S] int64
    generated: torch.Tensor  # [S] int64: completion tokens committed
    budget: torch.Tensor  # [S] int64: completion tokens allowed (max_new_tokens, max_model_len)
    active: torch.Tensor  # [S] bool
    stopped: torch.Tensor  # [S] bool: ended by a stop token
    iterations: torch.Tensor  # [S] int64: verify passes
    accepted: torch.Tensor  # [S] int64: committed drafts
    greedy: torch.Tensor  # [S] bool
    temperature_or_one: torch.Tensor  # [S] float32 (1 for greedy rows, so warping is defined)
    top_k: torch.Tensor  # [S] int64
    top_p: torch.Tensor  # [S] float32
    seed: torch.Tensor  # [S] int64
    stop_ids: torch.Tensor  # [S, n_stop] int64, padded with -1
    out: torch.Tensor  # [S, width + 1] int64: committed tokens
    hist: torch.Tensor  # [S, width + 1] int64: tokens committed by each iteration

    @classmethod
    def allocate(cls, slots: int, width: int, n_stop: int, device) -> "SlotState":
        z = lambda dtype, *shape: torch.zeros(*(shape or (slots,)), dtype=dtype, device=device)  # noqa: E731
        return cls(
            length=z(torch.long), anchor=z(torch.long), generated=z(torch.long), budget=z(torch.long),
            active=z(torch.bool), stopped=z(torch.bool), iterations=z(torch.long), accepted=z(torch.long),
            greedy=z(torch.bool), temperature_or_one=z(torch.float32) + 1, top_k=z(torch.long),
            top_p=z(torch.float32) + 1, seed=z(torch.long), stop_ids=z(torch.long, slots, n_stop) - 1,
            out=z(torch.long, slots, width + 1), hist=z(torch.long, slots, width + 1),
        )

    def view(self, B: int) -> "SlotState":
        """The first B slots, as views: in-place updates reach the full state."""
        return SlotState(**{f.name: getattr(self, f.name)[:B] for f in fields(self)})


def commit(s: SlotState, a: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Commit up to a + 1 tokens per active row, cut at the first stop token and at the budget.

    a: [B] accepted drafts; tokens: [B, K] = accepted drafts then the recovered/bonus token.
    Returns finished [B]: rows that ended in this iteration."""
    B, K = tokens.shape
    idx = torch.arange(K, device=tokens.device)
    is_stop = (tokens[..., None] == s.stop_ids[:, None, :]).any(-1) & (idx <= a[:, None])  # [B, K]
    first_stop = torch.where(is_stop.any(1), is_stop.long().argmax(1), K)  # [B]
    n = torch.minimum(torch.minimum(a + 1, first_stop + 1), s.budget - s.generated)
    n = torch.where(s.active, n, 0)  # [B]: tokens committed by this iteration
    dump = s.out.shape[1] - 1
    cols = torch.where(idx < n[:, None], s.generated[:, None] + idx, dump)  # [B, K]
    s.out.scatter_(1, cols, tokens)
    s.hist.scatter_(1, torch.where(s.active, s.iterations, dump)[:, None], n[:, None])
    s.iterations += s.active.long()
    s.accepted += (n - 1).clamp(min=0)
    s.generated += n
    stop_hit = s.active & (first_stop < n)
    finished = s.active & (stop_hit | (s.generated >= s.budget))
    s.stopped |= stop_hit
    s.length += n
    s.anchor.copy_(torch.where(n > 0, tokens.gather(1, (n - 1).clamp(min=0)[:, None]).squeeze(1), s.anchor))
    s.active &= ~finished
    return finished


def iterate(model: Qwen3Orthrus, cache: KVCache, st: SlotState, B: int, K: int, n_keys: int,
            sampling: bool, drafter=None) -> torch.Tensor:
    """One draft/verify/accept/commit round for slots 0..B-1; returns finished [B].

    `drafter(state, positions, drafts) -> drafts` replaces the drafts after the diffusion pass
    (benchmarks use it to set acceptance synthetically; the pass still runs and costs the same)."""
    s = st.view(B)
    rows = torch.arange(B, device=s.length.device)
    pos = s.length[:, None] + torch.arange(K, device=rows.device)  # [B, K]
    if K > 1:
        block = torch.where(pos == s.length[:, None], s.anchor[:, None], model.config.mask_token_id)  # [B, K]
        draft_attend = CachedAttend(cache, rows, pos, block_mask(s.length, K, n_keys), n_keys, True)
        # contiguous: a strided [B, K-1, H] view sends the LM-head GEMM down a slow cuBLAS path
        hidden = model(block, pos, "diffusion", draft_attend)[:, : K - 1].contiguous()  # [B, K-1, H]
        drafts, q = draft_tokens(model.logits(hidden), s, pos[:, 1:], sampling)  # [B, K-1]
        if drafter is not None:
            drafts = drafter(s, pos[:, 1:], drafts)
    else:
        drafts, q = s.anchor.new_zeros(B, 0), None
    verify = torch.cat([s.anchor[:, None], drafts], 1)  # [B, K]
    verify_attend = CachedAttend(cache, rows, pos, causal_mask(pos, n_keys), n_keys, True)
    logits = model.logits(model(verify, pos, "ar", verify_attend))  # [B, K, V]
    a, tokens = accept(logits, drafts, q, s, pos + 1, sampling)
    return commit(s, a, tokens)


def prefill(model: Qwen3Orthrus, cache: KVCache, rows: list[int], prompts: list[list[int]], chunk: int) -> None:
    """Write the K/V of each prompt but its last token (which becomes the anchor) into its slot.

    Prompts are padded to a common length and processed `chunk` positions at a time; pad
    positions write garbage beyond the row's length, which nothing reads. No LM head runs."""
    device = cache.k.device
    body = [p[:-1] for p in prompts]
    T = max(len(b) for b in body)
    if T == 0:
        return
    toks = torch.zeros(len(body), T, dtype=torch.long)
    for i, b in enumerate(body):
        toks[i, : len(b)] = torch.tensor(b, dtype=torch.long)
    toks, slot_ids = toks.to(device), torch.tensor(rows, dtype=torch.long, device=device)
    for start in range(0, T, chunk):
        C = min(chunk, T - start)
        pos = (start + torch.arange(C, device=device)).expand(len(rows), C)  # [b, C]
        attend = CachedAttend(cache, slot_ids, pos, causal_mask(pos, start + C), start + C, False)
        model(toks[:, start : start + C], pos, "ar", attend)
