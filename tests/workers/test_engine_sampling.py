"""Sampling is lossless: Orthrus mode draws from the same distribution as AR mode.

A 16-token model keeps every cell of the histograms well filled. The first token is tested
against the exact warped AR distribution; tokens 2-3 (which pass through draft acceptance,
the residual max(0, p - q) and the bonus token) against AR mode's own samples.
"""
from __future__ import annotations

import pytest
import torch

from workers.engine import Engine, SamplingParams
from workers.sampler import uniform, warp
from workers.tiny import write_tiny_checkpoint

N = 4000
PROMPT = [3, 1, 4, 1, 5]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    ckpt = write_tiny_checkpoint(tmp_path_factory.mktemp("v16"), vocab_size=16, mask_token_id=15, eos_token_id=(14,),
                                 init_std=0.25, seed=5, tokenizer=False)
    return Engine.from_pretrained(ckpt, max_batch_size=1000, max_model_len=16)


def chi2_pvalue(stat: float, dof: int) -> float:
    if dof == 0:  # a single cell: both samples put everything on one token
        return 1.0
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)))


def goodness_of_fit(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    keep = expected > 5
    other_e, other_c = expected[~keep].sum(), counts[~keep].sum()
    e = torch.cat([expected[keep], other_e[None]]) if other_e > 0 else expected[keep]
    c = torch.cat([counts[keep], other_c[None]]) if other_e > 0 else counts[keep]
    return chi2_pvalue(float(((c - e) ** 2 / e).sum()), len(e) - 1)


def two_sample(a: torch.Tensor, b: torch.Tensor) -> float:
    """Chi-square test that two histograms come from one distribution (cells with few counts pooled)."""
    small = (a + b) < 10
    a = torch.cat([a[~small], a[small].sum()[None]])
    b = torch.cat([b[~small], b[small].sum()[None]])
    n, m = a.sum(), b.sum()
    k1, k2 = (m / n).sqrt(), (n / m).sqrt()
    used = (a + b) > 0
    stat = (((k1 * a - k2 * b) ** 2) / (a + b))[used].sum()
    return chi2_pvalue(float(stat), int(used.sum()) - 1)


def draw(engine, mode, **kw):
    params = [SamplingParams(max_new_tokens=3, stop_token_ids=(), seed=s, block_size=4 if mode == "orthrus" else None, **kw) for s in range(N)]
    res = engine.generate([PROMPT] * N, params, mode=mode)
    return torch.tensor([r.token_ids for r in res])  # [N, 3]


def hist(tokens: torch.Tensor, vocab: int = 16) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).double()


@pytest.mark.parametrize("warping", [dict(temperature=0.6), dict(temperature=1.0), dict(temperature=1.0, top_k=4),
                                     dict(temperature=1.5, top_p=0.8)], ids=["t0.6", "t1", "topk4", "topp0.8"])
def test_orthrus_samples_match_ar_distribution(engine, warping):
    ortho, ar = draw(engine, "orthrus", **warping), draw(engine, "ar", **warping)
    # token 1: against the exact distribution of the AR view after warping
    from transformers import Qwen3ForCausalLM

    hf = Qwen3ForCausalLM.from_pretrained(engine.model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(torch.tensor([PROMPT])).logits[:, -1:]  # [1, 1, V]
    p = warp(logits, torch.tensor([warping["temperature"]]), torch.tensor([warping.get("top_k", 0)]),
             torch.tensor([warping.get("top_p", 1.0)]))[0, 0].double()
    assert goodness_of_fit(hist(ar[:, 0]), p) > 1e-3
    assert goodness_of_fit(hist(ortho[:, 0]), p) > 1e-3
    # tokens 2 and 3, and the pair (token 2, token 3): Orthrus against AR
    assert two_sample(hist(ortho[:, 1]), hist(ar[:, 1])) > 1e-3
    assert two_sample(hist(ortho[:, 2]), hist(ar[:, 2])) > 1e-3
    assert two_sample(hist(ortho[:, 1] * 16 + ortho[:, 2], 256), hist(ar[:, 1] * 16 + ar[:, 2], 256)) > 1e-3
    if "top_k" in warping or "top_p" in warping:  # the filter holds, and leaves a real choice
        assert 2 < (p > 0).sum() < 16
        assert set(ortho[:, 0].tolist()) <= set(torch.nonzero(p).flatten().tolist())


def test_the_tests_can_see_a_bias(engine):
    """A wrong temperature must fail the same checks, or they prove nothing."""
    a, b = draw(engine, "orthrus", temperature=0.6), draw(engine, "ar", temperature=1.0)
    assert two_sample(hist(a[:, 1]), hist(b[:, 1])) < 1e-6


def test_sampling_is_reproducible_per_row(engine):
    params = [SamplingParams(max_new_tokens=8, temperature=1.0, seed=s, stop_token_ids=()) for s in (11, 12, 13)]
    together = engine.generate([PROMPT, [2, 2], PROMPT], params)
    alone = [engine.generate([p], [sp])[0] for p, sp in zip([PROMPT, [2, 2], PROMPT], params)]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert together[0].token_ids != together[2].token_ids  # different seeds, same prompt


def test_uniforms_are_uniform_and_distinct_per_stream():
    seeds = torch.arange(20000)
    pos = torch.zeros(20000, 1, dtype=torch.long)
    u = uniform(seeds, pos, 1).flatten()
    assert 0 < u.min() and u.max() < 1
    assert two_sample(torch.histc(u, 20, 0, 1).double(), torch.full((20,), 1000.0).double()) > 1e-3
    assert not torch.equal(u, uniform(seeds, pos, 2).flatten())


def test_top_k_survives_float_rounding_of_the_cumulative_mass():
    """Regression: with top_p = 1 the cumulative mass of the top-k tokens rounds to just under
    1, which used to let the top-p step keep the cut tokens (the first Orthrus-vs-AR check
    with top_k=4 caught it)."""
    logits = torch.randn(64, 8, 16, generator=torch.Generator().manual_seed(0)) * 3
    B = logits.shape[0]
    probs = warp(logits, torch.ones(B), torch.full((B,), 4), torch.ones(B))
    assert ((probs > 0).sum(-1) == 4).all()
