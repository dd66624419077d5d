"""Drafting and acceptance on the device: greedy prefix match and speculative rejection sampling.

Vocabulary (per row, one iteration, block size K):
  drafts    d_1..d_{K-1}: tokens proposed by the diffusion view (argmax of q, or sampled from q).
  target    the AR view's distribution p_i at block index i (it predicts the token after index i).
  accepted  a = length of the longest prefix of drafts that passes (greedy: d_i == argmax p_{i-1};
            sampling: u_i < p_{i-1}(d_i) / q_i(d_i)).
  recovered the token after the accepted prefix: argmax p_a (greedy), or a sample from
            normalize(max(0, p_a - q_a)) after a rejection (sampling).
  bonus     the same token when all K-1 drafts pass: argmax p_{K-1} or a sample from p_{K-1}.
Randomness is counter-based: u = hash(seed, position, stream), so a row's sample depends on its
seed and positions only, never on its batch neighbours, and AR mode (K=1) is the same code.
"""
from __future__ import annotations

import torch

M32 = 0xFFFFFFFF
STREAM_DRAFT, STREAM_ACCEPT, STREAM_TOKEN = 1, 2, 3


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash on int64 lanes; multipliers < 2^27 keep products inside int64."""
    x = ((x ^ (x >> 16)) * 0x045D9F3B) & M32
    x = ((x ^ (x >> 16)) * 0x045D9F3B) & M32
    return x ^ (x >> 16)


def uniform(seed: torch.Tensor, pos: torch.Tensor, stream: int) -> torch.Tensor:
    """Uniforms in (0, 1), float32, one per (row, position). seed: [B] int64; pos: [B, T] int64."""
    s = seed[:, None]
    h = _mix32((pos & M32) ^ _mix32(torch.full_like(pos, stream)))
    h = _mix32(h ^ (s & M32))
    h = _mix32(h ^ ((s >> 32) & M32))
    return ((h >> 8).float() + 0.5) / float(1 << 24)


def warp(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Probabilities after temperature, then top-k, then top-p (nucleus), per row, in fp32.

    logits: [B, T, V]; temperature/top_p: [B] float (temperature > 0); top_k: [B] int (0 = off).
    The same warping is applied to both views, which is what keeps rejection sampling exact.
    """
    B, T, V = logits.shape
    x = logits.float() / temperature[:, None, None]
    sorted_x, _ = x.sort(dim=-1, descending=True)  # [B, T, V]
    k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))[:, None, None]  # [B, 1, 1]
    rank = torch.arange(V, device=x.device)
    sorted_x = sorted_x.masked_fill(rank >= k, float("-inf"))
    probs = sorted_x.softmax(-1)
    # keep the smallest prefix whose mass reaches top_p: token i stays if the mass before it < top_p
    # top_p = 1 keeps everything: the fp32 running mass can reach 1 before the tail (dropping ~1e-8 tokens)
    keep = (((probs.cumsum(-1) - probs) < top_p[:, None, None]) | (top_p[:, None, None] >= 1)) & (rank < k)
    # (& rank < k: the cumsum rounds; never revive a top-k cut)
    n_keep = keep.sum(-1, keepdim=True).clamp(min=1)  # [B, T, 1]
    threshold = sorted_x.gather(-1, n_keep - 1)  # [B, T, 1]
    return x.masked_fill(x < threshold, float("-inf")).softmax(-1)


def sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sample per row. probs: [..., V] (need not be normalised); u: [...] in (0, 1)."""
    cdf = probs.cumsum(-1)
    target = (u * cdf[..., -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def draft_tokens(logits_d: torch.Tensor, st, pos: torch.Tensor, sampling: bool):
    """Drafts [B, K-1] from diffusion logits [B, K-1, V], and q (None unless sampling).

    pos: [B, K-1] absolute positions of the drafted tokens."""
    greedy = logits_d.argmax(-1)
    if not sampling:
        return greedy, None
    q = warp(logits_d, st.temperature_or_one, st.top_k, st.top_p)
    drafted = sample(q, uniform(st.seed, pos, STREAM_DRAFT))
    return torch.where(st.greedy[:, None], greedy, drafted), q


def accept(logits_v: torch.Tensor, drafts: torch.Tensor, q: torch.Tensor | None, st, pos: torch.Tensor,
           sampling: bool):
    """Accepted draft count a [B] and the token sequence [B, K]: drafts[:a], then recovered/bonus.

    logits_v: [B, K, V] from the verify pass; drafts: [B, K-1]; pos: [B, K] positions of the
    tokens being decided (anchor position + 1 ..)."""
    B, K, V = logits_v.shape
    target = logits_v.argmax(-1)  # [B, K]
    match = drafts == target[:, : K - 1]  # [B, K-1]
    a = match.long().cumprod(1).sum(1)  # [B]
    next_tok = target.gather(1, a[:, None])  # [B, 1]
    if sampling:
        p = warp(logits_v, st.temperature_or_one, st.top_k, st.top_p)  # [B, K, V]
        if K > 1:
            p_d = p[:, : K - 1].gather(-1, drafts[..., None]).squeeze(-1)  # [B, K-1]
            q_d = q.gather(-1, drafts[..., None]).squeeze(-1)
            passed = uniform(st.seed, pos[:, : K - 1], STREAM_ACCEPT) * q_d < p_d
            a_s = passed.long().cumprod(1).sum(1)
            q_pad = torch.cat([q, torch.zeros_like(p[:, :1])], 1)  # [B, K, V]: no q after the last draft
        else:
            a_s, q_pad = torch.zeros_like(a), torch.zeros_like(p)
        p_a = p.gather(1, a_s[:, None, None].expand(B, 1, V)).squeeze(1)  # [B, V]
        q_a = q_pad.gather(1, a_s[:, None, None].expand(B, 1, V)).squeeze(1)
        residual = (p_a - q_a).clamp(min=0)
        residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_a)  # p == q: nothing to recover
        u = uniform(st.seed, pos.gather(1, a_s[:, None]), STREAM_TOKEN).squeeze(1)
        tok_s = sample(residual, u)[:, None]
        a = torch.where(st.greedy, a, a_s)
        next_tok = torch.where(st.greedy[:, None], next_tok, tok_s)
    tokens = torch.cat([drafts, torch.zeros_like(next_tok)], 1)  # [B, K]
    return a, tokens.scatter(1, a[:, None], next_tok)
