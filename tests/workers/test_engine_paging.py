"""The paged cache on the CPU: preemption, page reuse and the stepping API keep output exact."""
from __future__ import annotations

import pytest

from tests.workers.conftest import random_prompts
from workers.engine import Engine, SamplingParams

PROMPTS = random_prompts(10, seed=8)


def params(sampling: bool, K: int = 8) -> list[SamplingParams]:
    extra = dict(temperature=0.9, top_k=20, top_p=0.95) if sampling else {}
    return [SamplingParams(max_new_tokens=40 + 7 * i, stop_token_ids=(), block_size=K, seed=100 + i, **extra)
            for i in range(len(PROMPTS))]


@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampled"])
def test_preempted_rows_finish_with_the_tokens_they_would_have_produced(orthrus_ckpt, sampling):
    """A pool of 320 tokens for 8 slots of rows growing to ~100 tokens runs dry mid-decode: rows are
    preempted, re-prefilled with prompt + generated tokens, and end exactly as with a roomy pool."""
    roomy = Engine.from_pretrained(orthrus_ckpt, max_batch_size=8, max_model_len=128)
    tight = Engine.from_pretrained(orthrus_ckpt, max_batch_size=8, max_model_len=128, kv_cache_tokens=320)
    want = roomy.generate(PROMPTS, params(sampling))
    got = tight.generate(PROMPTS, params(sampling))
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert sum(r.stats.preemptions for r in got) > 0 and sum(r.stats.preemptions for r in want) == 0
    for r in got:  # the counters survive preemption: every committed token is counted once
        assert len(r.token_ids) == r.stats.accepted_tokens + r.stats.iterations == sum(r.stats.acceptance_lengths)
    assert tight.cache.pool.used == 0  # every page came back


def test_ar_mode_preempts_too(orthrus_ckpt):
    want = Engine.from_pretrained(orthrus_ckpt, max_batch_size=8, max_model_len=128).generate(
        PROMPTS, params(False), mode="ar")
    tight = Engine.from_pretrained(orthrus_ckpt, max_batch_size=8, max_model_len=128, kv_cache_tokens=200)
    got = tight.generate(PROMPTS, params(False), mode="ar")
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert sum(r.stats.preemptions for r in got) > 0


def test_pool_smaller_than_one_row_is_refused(orthrus_ckpt):
    with pytest.raises(ValueError, match="kv_cache_tokens=100 cannot hold one row of max_model_len=128"):
        Engine.from_pretrained(orthrus_ckpt, max_model_len=128, kv_cache_tokens=100)


def test_stepping_api_returns_each_request_once(orthrus_ckpt):
    """add_request/step/has_unfinished: requests added while others run finish once each, with the
    same tokens as a generate call; pages freed by finished rows are reused by later ones."""
    eng = Engine.from_pretrained(orthrus_ckpt, max_batch_size=3, max_model_len=128, kv_cache_tokens=400)
    want = Engine.from_pretrained(orthrus_ckpt, max_batch_size=3, max_model_len=128).generate(PROMPTS, params(False))
    ids = [eng.add_request(p, sp) for p, sp in zip(PROMPTS[:4], params(False)[:4])]
    done: dict[int, list[int]] = {}
    steps = 0
    while eng.has_unfinished():
        for rid, res in eng.step():
            assert rid not in done
            done[rid] = res.token_ids
        steps += 1
        if steps == 3:  # late arrivals join the running batch
            ids += [eng.add_request(p, sp) for p, sp in zip(PROMPTS[4:], params(False)[4:])]
    assert [done[i] for i in ids] == [r.token_ids for r in want]
    assert eng.cache.pool.used == 0


def test_identical_prompts_sample_independently_by_default(orthrus_ckpt):
    """SamplingParams() without a seed gives each request its own (its id); explicit seeds repeat."""
    eng = Engine.from_pretrained(orthrus_ckpt, max_model_len=128)
    p = SamplingParams(max_new_tokens=20, temperature=1.0, stop_token_ids=())
    a, b = eng.generate([[1, 2, 3]] * 2, p)
    assert a.token_ids != b.token_ids
    fixed = SamplingParams(max_new_tokens=20, temperature=1.0, stop_token_ids=(), seed=7)
    c, d = eng.generate([[1, 2, 3]] * 2, fixed)
    assert c.token_ids == d.token_ids


def test_seed_out_of_range_is_refused_where_params_are_built():
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\), got 9223372036854775808"):
        SamplingParams(seed=2**63)
    with pytest.raises(ValueError, match="seed must be an integer"):
        SamplingParams(seed=True)
