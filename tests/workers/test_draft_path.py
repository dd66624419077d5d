"""The draft path against a naive reference: the engine's diffusion-pass logits, in fp32.

Orthrus == AR tests cannot see a draft-side bug (verification hides it: output stays lossless,
only acceptance drops). Here every diffusion pass the engine runs, for ragged rows, K from 2 to 32
and slots reused by later rows, is recomputed from the checkpoint's tensors by a per-row loop
written from the method's definition (ORTHRUS: the block [anchor, MASK x (K-1)] attends to the AR
view's keys/values of the prefix plus its own diffusion keys/values, both ways, through the *_diff
projections and norms) and must match.

Planted bugs this fails on (checked by hand): diffusion queries that see only the prefix, not the
anchor and the block; a causal mask inside the block; the AR q/k norms in the diffusion view.
"""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tests.workers.conftest import random_prompts
from workers.engine import Engine, SamplingParams
from workers.loader import tensor_files


def load_tensors(ckpt) -> dict[str, torch.Tensor]:
    out = {}
    for name, path in tensor_files(ckpt).items():
        with safe_open(str(path), framework="pt") as f:
            out[name] = f.get_tensor(name).float()
    return out


class NaiveOrthrus:
    """Qwen3 + diffusion view, one row at a time, from the raw tensors (no engine code)."""

    def __init__(self, ckpt, cfg) -> None:
        self.w, self.cfg = load_tensors(ckpt), cfg
        d = cfg.head_dim
        self.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2).float() / d))

    def norm(self, x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg.rms_norm_eps))

    def rope(self, x, pos):  # x [T, heads, D]
        f = pos.float()[:, None] * self.inv_freq  # [T, D/2]
        cos, sin = torch.cat([f, f], -1).cos()[:, None], torch.cat([f, f], -1).sin()[:, None]
        h = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin

    def qkv(self, i, x, pos, suffix):
        c, w, p = self.cfg, self.w, f"model.layers.{i}.self_attn."
        T = x.shape[0]
        q = (x @ w[p + f"q_proj{suffix}.weight"].T).view(T, c.num_attention_heads, c.head_dim)
        k = (x @ w[p + f"k_proj{suffix}.weight"].T).view(T, c.num_key_value_heads, c.head_dim)
        v = (x @ w[p + f"v_proj{suffix}.weight"].T).view(T, c.num_key_value_heads, c.head_dim)
        q = self.rope(self.norm(q, w[p + f"q_norm{suffix}.weight"]), pos)
        k = self.rope(self.norm(k, w[p + f"k_norm{suffix}.weight"]), pos)
        return q, k, v

    def attend(self, q, k, v, visible):  # q [T, H, D]; k, v [S, KVH, D]; visible [T, S]
        G = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
        s = torch.einsum("thd,shd->hts", q, k) / q.shape[-1] ** 0.5
        s = s.masked_fill(~visible, float("-inf"))
        return torch.einsum("hts,shd->thd", s.softmax(-1), v).reshape(q.shape[0], -1)

    def layer_rest(self, i, h, attn, suffix):
        w, p = self.w, f"model.layers.{i}."
        h = h + attn @ w[p + f"self_attn.o_proj{suffix}.weight"].T
        x = self.norm(h, w[p + "post_attention_layernorm.weight"])
        gate, up = x @ w[p + "mlp.gate_proj.weight"].T, x @ w[p + "mlp.up_proj.weight"].T
        return h + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T

    def draft_logits(self, prefix: list[int], anchor: int, K: int) -> torch.Tensor:
        """Logits [K, V] of the diffusion pass over [anchor, MASK x (K-1)] after `prefix`."""
        c, w = self.cfg, self.w
        L = len(prefix)
        ar = w["model.embed_tokens.weight"][torch.tensor(prefix, dtype=torch.long)]
        blk = w["model.embed_tokens.weight"][torch.tensor([anchor] + [c.mask_token_id] * (K - 1))]
        pa, pb = torch.arange(L), torch.arange(L, L + K)
        for i in range(c.num_hidden_layers):
            ln = w[f"model.layers.{i}.input_layernorm.weight"]
            xa, xb = self.norm(ar, ln), self.norm(blk, ln)
            qa, ka, va = self.qkv(i, xa, pa, "")
            qb, kb, vb = self.qkv(i, xb, pb, "_diff")
            causal = torch.arange(L)[None, :] <= torch.arange(L)[:, None]
            new_ar = self.layer_rest(i, ar, self.attend(qa, ka, va, causal), "")
            keys, vals = torch.cat([ka, kb]), torch.cat([va, vb])
            blk = self.layer_rest(i, blk, self.attend(qb, keys, vals, torch.ones(K, L + K, dtype=torch.bool)), "_diff")
            ar = new_ar
        head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        return self.norm(blk, w["model.norm.weight"]) @ head.T


@pytest.mark.parametrize("K", [2, 5, 8, 32])
def test_diffusion_logits_equal_a_naive_reference(orthrus_ckpt, K):
    prompts = random_prompts(7, seed=21, max_len=24)
    budgets = [9, 30, 4, 17, 25, 12, 6]
    engine = Engine.from_pretrained(orthrus_ckpt, max_batch_size=3, max_model_len=128)  # 7 rows, 3 slots
    seen = []  # (request id, anchor position, engine logits [K, V]) for every decoding row of every pass
    model_forward = engine.model.forward

    def spy(ids, positions, view, attend):
        hidden = model_forward(ids, positions, view, attend)
        if view == "diffusion":
            logits = engine.model.logits(hidden)
            for req in engine.scheduler.decoding:
                seen.append((req.request_id, int(positions[req.slot, 0]), int(ids[req.slot, 0]), logits[req.slot].clone()))
        return hidden

    engine.model.forward = spy
    params = [SamplingParams(max_new_tokens=n, stop_token_ids=(), block_size=K) for n in budgets]
    results = engine.generate(prompts, params)
    naive = NaiveOrthrus(orthrus_ckpt, engine.config)
    rows = {rid for rid, *_ in seen}
    assert rows == set(range(7)) and len(seen) >= 7  # every row drafted, in reused slots too
    for rid, L, anchor, got in seen:
        full = prompts[rid] + results[rid].token_ids
        assert full[L] == anchor
        want = naive.draft_logits(full[:L], anchor, K)
        torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)
