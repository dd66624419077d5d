"""Greedy decoding is lossless: Orthrus == AR == transformers' generate, in fp32."""
from __future__ import annotations

import pytest
import torch

from tests.workers.conftest import random_prompts
from workers.engine import Engine, SamplingParams

MAX_NEW = [5, 17, 40, 1, 23, 40, 9, 31]


def hf_greedy(ckpt, prompts, params):
    from transformers import Qwen3ForCausalLM

    model = Qwen3ForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    out = []
    for prompt, p in zip(prompts, params):
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=p.max_new_tokens, do_sample=False,
                             eos_token_id=list(p.stop_token_ids), pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
        out.append(ids[0, len(prompt):].tolist())
    return out


def case(ckpt):
    """Ragged prompts and budgets; half the rows stop on a token taken from the middle of
    their own unstopped continuation, so a stop lands inside a block."""
    prompts = random_prompts(len(MAX_NEW), seed=7)
    free = Engine.from_pretrained(ckpt, max_model_len=128).generate(prompts, SamplingParams(max_new_tokens=40, stop_token_ids=()), mode="ar")
    params = []
    for i, (n, r) in enumerate(zip(MAX_NEW, free)):
        stops = (r.token_ids[min(6, len(r.token_ids) - 1)],) if i % 2 else (58, 56)
        params.append(SamplingParams(max_new_tokens=n, stop_token_ids=stops))
    return prompts, params


@pytest.fixture(scope="module", params=["orthrus_ckpt", "looping_ckpt"])
def reference(request):
    ckpt = request.getfixturevalue(request.param)
    prompts, params = case(ckpt)
    return ckpt, prompts, params, hf_greedy(ckpt, prompts, params)


@pytest.mark.parametrize("K", [2, 3, 4, 8, 16, 32])
def test_orthrus_equals_transformers_generate(reference, K):
    ckpt, prompts, params, expected = reference
    engine = Engine.from_pretrained(ckpt, max_batch_size=3, max_model_len=128)  # 8 prompts, 3 slots
    got = engine.generate(prompts, [SamplingParams(**{**p.__dict__, "block_size": K}) for p in params])
    assert [r.token_ids for r in got] == expected
    assert any(0 < len(e) < p.max_new_tokens for e, p in zip(expected, params)), "no row stopped early"
    for r, e, p in zip(got, expected, params):
        assert r.finish_reason == ("stop" if e[-1] in p.stop_token_ids else "length")


def test_ar_equals_transformers_generate(reference):
    ckpt, prompts, params, expected = reference
    got = Engine.from_pretrained(ckpt, max_batch_size=3, max_model_len=128).generate(prompts, params, mode="ar")
    assert [r.token_ids for r in got] == expected


def test_output_does_not_depend_on_batch_neighbours_or_slot_reuse(orthrus_ckpt):
    prompts = random_prompts(6, seed=3)
    params = SamplingParams(max_new_tokens=25, stop_token_ids=())
    alone = [Engine.from_pretrained(orthrus_ckpt, max_batch_size=1).generate([p], params)[0].token_ids for p in prompts]
    # one slot: every prompt reuses the slot (and stale K/V) of a longer previous row
    serial = Engine.from_pretrained(orthrus_ckpt, max_batch_size=1).generate(prompts[::-1], params)
    batched = Engine.from_pretrained(orthrus_ckpt, max_batch_size=4).generate(prompts, params)
    assert [r.token_ids for r in serial][::-1] == alone
    assert [r.token_ids for r in batched] == alone


def test_max_model_len_is_respected_exactly(orthrus_ckpt):
    engine = Engine.from_pretrained(orthrus_ckpt, max_batch_size=2, max_model_len=32)
    prompts = [list(range(1, 21)), list(range(1, 31)), [5]]
    for mode in ("orthrus", "ar"):
        res = engine.generate(prompts, SamplingParams(max_new_tokens=100, stop_token_ids=()), mode=mode)
        assert [len(r.token_ids) for r in res] == [12, 2, 31]
        assert {r.finish_reason for r in res} == {"length"}


def test_stats_add_up(looping_ckpt):
    prompts = random_prompts(10, seed=11)
    engine = Engine.from_pretrained(looping_ckpt, max_batch_size=4, max_model_len=128)
    for mode, K in (("orthrus", 8), ("orthrus", 3), ("ar", 1)):
        res = engine.generate(prompts, SamplingParams(max_new_tokens=30, block_size=K if mode == "orthrus" else None), mode=mode)
        for prompt, r in zip(prompts, res):
            s = r.stats
            assert len(r.token_ids) == s.accepted_tokens + s.iterations == sum(s.acceptance_lengths)
            assert len(s.acceptance_lengths) == s.iterations
            assert all(1 <= n <= K for n in s.acceptance_lengths)
            assert s.prompt_tokens == len(prompt)
            assert s.drafted_tokens == s.iterations * (K - 1)
            assert s.diffusion_passes == (s.iterations if mode == "orthrus" else 0)
            assert s.accepted_tokens <= s.drafted_tokens
        if mode == "orthrus" and K == 8:
            assert max(max(r.stats.acceptance_lengths) for r in res) > 1  # some drafts did pass


def test_bad_requests_give_clear_errors(orthrus_ckpt):
    engine = Engine.from_pretrained(orthrus_ckpt, max_model_len=16)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([[1], []])
    with pytest.raises(ValueError, match="prompt 0 has 16 tokens; max_model_len=16"):
        engine.generate([list(range(16))])
    with pytest.raises(ValueError, match=r"prompt 0 has token ids outside \[0, 64\)"):
        engine.generate([[1, 99]])
    with pytest.raises(ValueError, match="mode must be"):
        engine.generate([[1]], mode="fast")
    with pytest.raises(ValueError, match="block_size must be in"):
        engine.generate([[1]], SamplingParams(block_size=1))
    with pytest.raises(ValueError, match="got 1 SamplingParams for 2 prompts"):
        engine.generate([[1], [2]], [SamplingParams()])
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        SamplingParams(temperature=float("nan"))
