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

from workers.attention import PagedAttend, Tiles
from workers.kv_cache import PagedKVCache
from workers.model import Qwen3Orthrus
from workers.sampler import accept, draft_tokens


@dataclass
class SlotState:
    """Decoding state of every slot, on the device. Rows are slots; `out`/`hist` have a spare
    last column that absorbs the writes of rows with nothing to write (no branches on values).
    `tally` is shared by all slots: drafts judged / passed at each block index (draft_length.py)."""

    length: torch.Tensor  # [S] int64: tokens with K/V in the cache
    anchor: torch.Tensor  # [S] int64
    generated: torch.Tensor  # [S] int64: completion tokens committed
    budget: torch.Tensor  # [S] int64: completion tokens allowed (max_new_tokens, max_model_len)
    active: torch.Tensor  # [S] bool: decoding (a free or prefilling slot is inactive)
    stopped: torch.Tensor  # [S] bool: ended by a stop token
    iterations: torch.Tensor  # [S] int64: verify passes
    accepted: torch.Tensor  # [S] int64: committed drafts
    diffusion: torch.Tensor  # [S] int64: diffusion passes (iterations with K > 1)
    drafted: torch.Tensor  # [S] int64: drafts proposed (K - 1 per such iteration)
    greedy: torch.Tensor  # [S] bool
    temperature_or_one: torch.Tensor  # [S] float32 (1 for greedy rows, so warping is defined)
    top_k: torch.Tensor  # [S] int64
    top_p: torch.Tensor  # [S] float32
    seed: torch.Tensor  # [S] int64
    request: torch.Tensor  # [S] int64: the request id in the slot (benchmark drafters look rows up by it)
    stop_ids: torch.Tensor  # [S, n_stop] int64, padded with -1
    out: torch.Tensor  # [S, width + 1] int64: committed tokens
    hist: torch.Tensor  # [S, width + 1] int64: tokens committed by each iteration
    tally: torch.Tensor  # [2, max_block] int64: drafts judged, drafts passed, per block index

    COUNTERS = ("iterations", "accepted", "diffusion", "drafted")

    @classmethod
    def allocate(cls, slots: int, width: int, n_stop: int, max_block: int, device) -> "SlotState":
        z = lambda dtype, *shape: torch.zeros(*(shape or (slots,)), dtype=dtype, device=device)  # noqa: E731
        return cls(
            length=z(torch.long), anchor=z(torch.long), generated=z(torch.long), budget=z(torch.long),
            active=z(torch.bool), stopped=z(torch.bool), iterations=z(torch.long), accepted=z(torch.long),
            diffusion=z(torch.long), drafted=z(torch.long),
            greedy=z(torch.bool), temperature_or_one=z(torch.float32) + 1, top_k=z(torch.long),
            top_p=z(torch.float32) + 1, seed=z(torch.long), request=z(torch.long), stop_ids=z(torch.long, slots, n_stop) - 1,
            out=z(torch.long, slots, width + 1), hist=z(torch.long, slots, width + 1),
            tally=z(torch.long, 2, max_block),
        )

    def load(self, req) -> None:
        """Put a request (workers/request.py) into its slot: parameters, and its progress so far
        when it comes back after a preemption. A few small host-to-device copies, once per row."""
        i, p = req.slot, req.params
        values = {"length": req.length, "anchor": req.tokens[-1], "budget": req.budget, "generated": len(req.output),
                  "active": True, "stopped": False, "greedy": p.temperature == 0,
                  "temperature_or_one": p.temperature or 1.0, "top_k": p.top_k, "top_p": p.top_p, "seed": p.seed,
                  "request": req.request_id, **{name: req.counters.get(name, 0) for name in self.COUNTERS}}
        for name, value in values.items():
            getattr(self, name)[i] = value
        self.stop_ids[i] = torch.tensor(list(req.stop_ids) + [-1] * (self.stop_ids.shape[1] - len(req.stop_ids)))
        if req.output:
            self.out[i, : len(req.output)] = torch.tensor(req.output)
            self.hist[i, : len(req.hist)] = torch.tensor(req.hist)

    def save(self, req) -> None:
        """Copy a request's progress off its slot (one host sync), then idle the slot: an idle slot
        reads and writes only the trash pages."""
        i = req.slot
        req.output = self.out[i, : int(self.generated[i])].tolist()
        req.hist = self.hist[i, : int(self.iterations[i])].tolist()
        req.counters = {name: int(getattr(self, name)[i]) for name in self.COUNTERS}
        req.stopped = bool(self.stopped[i])
        self.active[i], self.length[i] = False, 0

    def view(self, B: int) -> "SlotState":
        """The first B slots, as views: in-place updates reach the full state."""
        return SlotState(**{f.name: getattr(self, f.name) if f.name == "tally" else getattr(self, f.name)[:B]
                            for f in fields(self)})


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
    live = s.active.long()
    s.iterations += live
    if K > 1:
        s.diffusion += live
        s.drafted += live * (K - 1)
        # drafts judged at block index j: those up to the first rejection; passed: the accepted ones
        j = torch.arange(K - 1, device=tokens.device)
        judged = (j < torch.minimum(a + 1, torch.full_like(a, K - 1))[:, None]) & s.active[:, None]  # [B, K-1]
        s.tally[0, : K - 1] += judged.long().sum(0)
        s.tally[1, : K - 1] += ((j < a[:, None]) & s.active[:, None]).long().sum(0)
    s.accepted += (n - 1).clamp(min=0)
    s.generated += n
    stop_hit = s.active & (first_stop < n)
    finished = s.active & (stop_hit | (s.generated >= s.budget))
    s.stopped |= stop_hit
    s.length += n
    s.anchor.copy_(torch.where(n > 0, tokens.gather(1, (n - 1).clamp(min=0)[:, None]).squeeze(1), s.anchor))
    s.active &= ~finished
    return finished


def iterate(model: Qwen3Orthrus, cache: PagedKVCache, st: SlotState, B: int, K: int, n_keys: int,
            sampling: bool, kernel=None, drafter=None) -> torch.Tensor:
    """One draft/verify/accept/commit round for slots 0..B-1; returns finished [B].

    Rows that are not decoding (free or prefilling slots inside the bucket) write their K/V into the
    trash pages and commit nothing. `drafter(state, positions, drafts) -> drafts` replaces the drafts
    after the diffusion pass (benchmarks: synthetic acceptance; the pass still runs and costs the same)."""
    s = st.view(B)
    table = cache.block_table[:B]  # [B, P]
    offsets = torch.arange(K, device=s.length.device)
    pos = s.length[:, None] + offsets  # [B, K]
    slots = torch.where(s.active[:, None], cache.slots(table, pos), offsets)  # [B, K]: trash for idle rows
    if K > 1:
        block = torch.where(pos == s.length[:, None], s.anchor[:, None], model.config.mask_token_id)  # [B, K]
        sees_block = (s.length + K)[:, None].expand(B, K)  # diffusion: the prefix and the whole block
        draft_attend = PagedAttend(cache, table, slots, sees_block, n_keys, kernel=kernel)
        # contiguous: a strided [B, K-1, H] view sends the LM-head GEMM down a slow cuBLAS path
        hidden = model(block, pos, "diffusion", draft_attend)[:, : K - 1].contiguous()  # [B, K-1, H]
        drafts, q = draft_tokens(model.logits(hidden), s, pos[:, 1:], sampling)  # [B, K-1]
        if drafter is not None:
            drafts = drafter(s, pos[:, 1:], drafts)
    else:
        drafts, q = s.anchor.new_zeros(B, 0), None
    verify = torch.cat([s.anchor[:, None], drafts], 1)  # [B, K]
    verify_attend = PagedAttend(cache, table, slots, pos + 1, n_keys, kernel=kernel)  # causal
    logits = model.logits(model(verify, pos, "ar", verify_attend))  # [B, K, V]
    a, tokens = accept(logits, drafts, q, s, pos + 1, sampling)
    return commit(s, a, tokens)


def prefill(model: Qwen3Orthrus, cache: PagedKVCache, pieces: list[tuple[int, list[int], int]],
            kernel=None, tile: int = 16) -> None:
    """Write K/V for packed pieces of prompts in one forward, without padding.

    pieces: (slot, tokens, first position) per row segment; the slot's block table already holds
    its pages. Every token sees its own row's keys up to itself (earlier chunks' keys are already in
    the cache). No LM head runs."""
    device = cache.k.device
    toks, pos, owner, rows, starts, counts = [], [], [], [], [], []
    for slot, seg, first in pieces:
        at = len(toks)
        toks += seg
        pos += range(first, first + len(seg))
        owner += [slot] * len(seg)
        step = tile if kernel is not None else len(seg)  # kernel tiles hold at most `tile` queries
        for o in range(0, len(seg), step):
            rows.append(slot)
            starts.append(at + o)
            counts.append(min(step, len(seg) - o))
    long = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    i32 = lambda x: torch.tensor(x, dtype=torch.int32, device=device)  # noqa: E731
    positions = long(pos)  # [N]
    slots = cache.slots_of_rows(long(owner), positions)[None]  # [1, N]
    tiles = Tiles(row=i32(rows), start=i32(starts), count=i32(counts), batch=torch.zeros(len(rows), dtype=torch.int32,
                  device=device), max_count=max(counts))
    attend = PagedAttend(cache, cache.block_table, slots, positions[None] + 1, 0, tiles=tiles, kernel=kernel)
    model(long(toks)[None], positions[None], "ar", attend)
