"""Training math for the Orthrus diffusion heads (arXiv 2605.12825; README "Demo model").

Vocabulary, as in the engine: a *block* of size K is `[anchor, MASK x (K-1)]` at positions
`a .. a+K-1`, where the *anchor* `a` is a clean token of the row. The diffusion logits at block
index i (i = 0..K-2) draft the token at position a+i+1, so their target is the frozen AR
distribution at position a+i of the clean row (which predicts token a+i+1). Every block is fully
masked (one denoising step, as at decode time).

One training step over a batch of clean rows [B, T]:
1. teacher: one causal AR pass over the rows, frozen; it records every layer's post-RoPE keys and
   values (the "AR cache" a block will read) and gives the target logits;
2. student: one diffusion pass over all N blocks of every row at once, [B, N*K] tokens. Each block
   attends to the AR keys strictly before its anchor plus its own block's diffusion keys,
   bidirectionally -- exactly what it sees at decode time -- and nothing of other blocks
   (`packed_blocks_mask`: the visibility of N blocks packed into one pass; not the engine's
   attention masks, which see one block per row on top of a cache);
3. loss: forward KL(p_AR || p_diff) on the K-1 drafting positions of every block, optionally
   weighted per block index (an error at index i voids every later draft of its block).
Many anchors per row (N = T // K, tiled from a random offset) make one teacher pass feed many
blocks. Only the six `*_diff` tensors per layer get gradients; the base is frozen.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workers.model import Qwen3Orthrus

def _expand_kv(k: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, KVH, S, D] -> [B, H, S, D]; explicit, so every SDPA backend (masked ones too) takes GQA."""
    return k.repeat_interleave(n_heads // k.shape[1], dim=1) if k.shape[1] != n_heads else k


def causal_attend(record: list | None = None):
    """An `attend` for a plain causal pass over whole rows (no cache: query and key lengths match,
    so `is_causal` is aligned correctly). With `record`, each layer's (k, v) is appended, detached."""

    def attend(layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if record is not None:
            record.append((k.detach(), v.detach()))
        h = q.shape[1]
        return F.scaled_dot_product_attention(q, _expand_kv(k, h), _expand_kv(v, h), is_causal=True)

    return attend


@dataclass(frozen=True)
class BlockLayout:
    """Where the N blocks of size K sit in a clean row of length T (same for every row of a batch)."""

    anchors: torch.Tensor  # [N] anchor positions, increasing
    block_size: int
    row_len: int

    @property
    def num_blocks(self) -> int:
        return int(self.anchors.numel())

    def positions(self) -> torch.Tensor:
        """Absolute positions of the diffusion tokens: [N*K]."""
        k = torch.arange(self.block_size, device=self.anchors.device)
        return (self.anchors[:, None] + k).reshape(-1)

    def target_positions(self) -> torch.Tensor:
        """Clean-row positions whose AR logits are the targets of block indices 0..K-2: [N, K-1]."""
        k = torch.arange(self.block_size - 1, device=self.anchors.device)
        return self.anchors[:, None] + k


def tile_blocks(row_len: int, block_size: int, offset: int, device: torch.device | str = "cpu") -> BlockLayout:
    """Blocks of size K tiled from `offset`: anchors offset, offset+K, ... while the block fits in the row.

    offset >= 1 keeps every anchor after at least one AR key, as at decode time (the first anchor
    follows the prompt). Varying the offset between steps lets every position be an anchor.
    """
    if not 1 <= offset <= row_len - block_size:
        raise ValueError(f"offset must be in [1, {row_len - block_size}], got {offset}")
    anchors = torch.arange(offset, row_len - block_size + 1, block_size, device=device)
    return BlockLayout(anchors=anchors, block_size=block_size, row_len=row_len)


def packed_blocks_mask(layout: BlockLayout) -> torch.Tensor:
    """Boolean attention mask [N*K, T + N*K] (True = attend) for the diffusion pass.

    Keys are cat(AR keys of the clean row [T], the blocks' diffusion keys [N*K]). A query of block
    b sees AR keys at positions < anchor_b and all keys of block b; nothing of other blocks.
    """
    n, kb, t = layout.num_blocks, layout.block_size, layout.row_len
    dev = layout.anchors.device
    block_of_query = torch.arange(n, device=dev).repeat_interleave(kb)  # [N*K]
    ar_visible = torch.arange(t, device=dev)[None, :] < layout.anchors[block_of_query][:, None]  # [N*K, T]
    own_block = block_of_query[:, None] == block_of_query[None, :]  # [N*K, N*K]
    return torch.cat([ar_visible, own_block], dim=1)


def packed_blocks_attend(ar_kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor):
    """An `attend` for the diffusion pass: keys = cat(the layer's recorded AR keys, the block keys)."""

    def attend(layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ar_k, ar_v = ar_kv[layer_idx]  # [B, KVH, T, D]
        h = q.shape[1]
        keys = _expand_kv(torch.cat([ar_k.to(k.dtype), k], dim=2), h)  # [B, H, T+N*K, D]
        values = _expand_kv(torch.cat([ar_v.to(v.dtype), v], dim=2), h)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)

    return attend


def block_inputs(tokens: torch.Tensor, layout: BlockLayout, mask_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffusion-pass tokens [B, N*K] (anchor, then MASK x (K-1), per block) and positions [B, N*K]."""
    b = tokens.shape[0]
    n, kb = layout.num_blocks, layout.block_size
    ids = torch.full((b, n, kb), mask_token_id, dtype=tokens.dtype, device=tokens.device)
    ids[:, :, 0] = tokens[:, layout.anchors]  # [B, N]
    positions = layout.positions()[None].expand(b, -1)
    return ids.reshape(b, n * kb), positions


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar: mean forward KL over all drafting positions
    agreement: torch.Tensor  # [K-1]: how often the diffusion argmax equals the AR argmax, per block index
    accept_length: torch.Tensor  # scalar: mean over blocks of 1 + (leading agreeing drafts): greedy proxy
    kl_by_index: torch.Tensor  # [K-1]: mean KL per block index (detached)


def diffusion_kl_step(model: Qwen3Orthrus, tokens: torch.Tensor, layout: BlockLayout, mask_token_id: int,
                      index_decay: float = 1.0) -> StepOutput:
    """Teacher AR pass, student diffusion pass over all blocks, forward KL; see the module docstring.

    `accept_length` is the greedy acceptance length these blocks would get if the clean row were
    the AR model's own greedy output (true for greedy self-distilled rows): a draft counts only
    if every earlier draft of its block agreed too.

    `index_decay` = g weighs block index i by g**i (normalised to mean 1): with g < 1 the early
    drafts, on which every later one depends, count more. g = 1 is the plain mean.
    """
    b, t = tokens.shape
    positions = torch.arange(t, device=tokens.device)[None].expand(b, -1)
    ar_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        hidden = model(tokens, positions, view="ar", attend=causal_attend(ar_kv))  # [B, T, H]
        tgt_pos = layout.target_positions().reshape(-1)  # [N*(K-1)]
        teacher = model.logits(hidden[:, tgt_pos]).float().log_softmax(-1)  # [B, N*(K-1), V]
    ids, dpos = block_inputs(tokens, layout, mask_token_id)
    dhidden = model(ids, dpos, view="diffusion", attend=packed_blocks_attend(ar_kv, packed_blocks_mask(layout)))  # [B, N*K, H]
    n, kb = layout.num_blocks, layout.block_size
    dhidden = dhidden.view(b, n, kb, -1)[:, :, : kb - 1].reshape(b, n * (kb - 1), -1)  # drop each block's last slot
    student = model.logits(dhidden).float().log_softmax(-1)  # [B, N*(K-1), V]
    kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)  # [B, N*(K-1)]
    with torch.no_grad():
        agree = (student.argmax(-1) == teacher.argmax(-1)).view(b, n, kb - 1).float()  # [B, N, K-1]
        accept = 1.0 + agree.cumprod(-1).sum(-1).mean()
        kl_by_index = kl.detach().view(b, n, kb - 1).mean(dim=(0, 1))  # [K-1]
    if index_decay == 1.0:
        loss = kl.mean()
    else:
        w = index_decay ** torch.arange(kb - 1, device=kl.device, dtype=kl.dtype)  # [K-1]
        loss = (kl.view(b, n, kb - 1) * (w / w.mean())).mean()
    return StepOutput(loss=loss, agreement=agree.mean(dim=(0, 1)), accept_length=accept, kl_by_index=kl_by_index)
