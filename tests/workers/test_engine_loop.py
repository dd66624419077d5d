"""The decode loop with drafts that often pass: a scripted model makes acceptance predictable.

The "counting" model's AR view always continues t -> (5t + 3) mod 56. Its diffusion view
drafts that chain from the anchor, but gets the token wrong wherever position % 5 == 4, so
acceptance lengths vary between 1 and K and every path of accept/commit is exercised.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.config import ModelConfig
from workers.engine import Engine, SamplingParams
from workers.tiny import tiny_config

V, MASK = 64, 61


def step(t):
    return (5 * t + 3) % 56


class CountingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = ModelConfig.from_dict(tiny_config(vocab_size=V, mask_token_id=MASK, eos_token_id=(58,)))
        self.dummy = nn.Parameter(torch.zeros(1))
        self.calls = {"ar": 0, "diffusion": 0}
        self.log: list[tuple[str, int]] = []  # ("prefill", tokens) or (view, rows) per forward

    def forward(self, input_ids, positions, view, attend):
        self.calls[view] += 1
        self.log.append(("prefill", input_ids.shape[1]) if attend.tiles is not None else (view, input_ids.shape[0]))
        if view == "ar":
            nxt = step(input_ids)
        else:  # block index i drafts the token at position + 1 from the anchor alone
            nxt, t = torch.empty_like(input_ids), input_ids[:, 0]
            for i in range(input_ids.shape[1]):
                t = step(t)
                nxt[:, i] = torch.where((positions[:, i] + 1) % 5 == 4, (t + 1) % 56, t)
        return nxt

    def logits(self, nxt):
        return torch.nn.functional.one_hot(nxt, V).float() * 10


def chain(start, n):
    out, t = [], start
    for _ in range(n):
        t = step(t)
        out.append(t)
    return out


def engine(max_batch_size=3):
    return Engine(CountingModel(), "counting", max_batch_size=max_batch_size, max_model_len=200)


@pytest.mark.parametrize("K", [2, 4, 8, 32])
def test_long_acceptances_commit_exactly_the_ar_chain(K):
    prompts = [[1, 2, 3], [9], [4] * 40, [7, 8], [30, 31, 32, 33]]
    budgets = [50, 7, 13, 100, 1]
    eng = engine()
    res = eng.generate(prompts, [SamplingParams(max_new_tokens=n, stop_token_ids=(), block_size=K) for n in budgets])
    for p, n, r in zip(prompts, budgets, res):
        assert r.token_ids == chain(p[-1], n)
        assert r.finish_reason == "length"
        assert len(r.token_ids) == r.stats.accepted_tokens + r.stats.iterations
    lengths = [x for r in res for x in r.stats.acceptance_lengths]
    assert max(lengths) == min(K, 5)  # a wrong draft every 5 positions caps acceptance at 5
    its = sum(r.stats.iterations for r in res)
    assert eng.model.calls["diffusion"] < its  # one pass serves every row of the batch


def test_stop_token_inside_an_accepted_block_ends_the_row_there():
    eng = engine()
    expected = chain(9, 60)
    stop = expected[10]
    assert stop not in expected[:10]
    r = eng.generate([[9]], SamplingParams(max_new_tokens=60, stop_token_ids=(stop, 57), block_size=8))[0]
    assert r.token_ids == expected[:11]
    assert r.finish_reason == "stop"


def test_budget_ending_mid_block_and_more_prompts_than_slots():
    eng = engine(max_batch_size=2)
    prompts = [[i] for i in range(9)]
    res = eng.generate(prompts, [SamplingParams(max_new_tokens=3 + i, stop_token_ids=(), block_size=16) for i in range(9)])
    assert [r.token_ids for r in res] == [chain(i, 3 + i) for i in range(9)]


def test_ar_mode_is_one_verify_pass_per_token():
    eng = engine()
    r = eng.generate([[5, 6]], SamplingParams(max_new_tokens=20, stop_token_ids=()), mode="ar")[0]
    assert r.token_ids == chain(6, 20)
    assert r.stats.iterations == 20 and r.stats.diffusion_passes == 0 and r.stats.acceptance_lengths == [1] * 20
    assert eng.model.calls == {"ar": 21, "diffusion": 0}  # prefill + 20 steps


def test_prefill_is_packed_in_chunks_while_decoding_goes_on():
    """A long prompt arriving while a row decodes is prefilled `prefill_chunk` tokens per step,
    and the decoding row takes an iteration in every one of those steps (no stall, no padding)."""
    eng = Engine(CountingModel(), "counting", max_batch_size=3, max_model_len=200, prefill_chunk=7, prefill_step_tokens=7)
    params = SamplingParams(max_new_tokens=30, stop_token_ids=(), block_size=4)
    first = eng.add_request([1, 2, 3], params)
    eng.step()  # prefills 2 tokens and runs the first iteration
    second = eng.add_request(list(range(40)), params)
    results = {}
    while eng.has_unfinished():
        results.update(eng.step())
    log = eng.model.log
    chunks = [n for kind, n in log if kind == "prefill"]
    assert chunks == [2, 7, 7, 7, 7, 7, 4]  # 39 tokens of the long prompt, never more than 7 a forward
    first_chunk = log.index(("prefill", 7))
    last_chunk = len(log) - 1 - log[::-1].index(("prefill", 4))
    between = [e for e in log[first_chunk:last_chunk] if e[0] == "ar"]
    assert len(between) == 5  # one verify pass of the decoding row after each of the 5 full chunks
    assert results[first].token_ids == chain(3, 30) and results[second].token_ids == chain(39, 30)


def test_long_prompts_prefill_in_chunks_and_stay_lossless(orthrus_ckpt):
    """Prompts longer than the prefill chunk and groups split by the budget give the same tokens."""
    from tests.workers.conftest import random_prompts

    prompts = random_prompts(5, seed=9, max_len=60)
    params = SamplingParams(max_new_tokens=12, stop_token_ids=())
    whole = Engine.from_pretrained(orthrus_ckpt, max_batch_size=5, max_model_len=128).generate(prompts, params)
    chunked = Engine.from_pretrained(orthrus_ckpt, max_batch_size=5, max_model_len=128, prefill_chunk=7).generate(prompts, params)
    assert [r.token_ids for r in chunked] == [r.token_ids for r in whole]


def fail_once(eng, at_call: int) -> None:
    """Make the engine's model raise a (simulated) out-of-memory error on its at_call-th forward."""
    real_forward, calls = eng.model.forward, {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise MemoryError("out of memory (simulated)")
        return real_forward(*args)

    eng.model.forward = flaky


def test_engine_is_usable_after_a_failed_generate():
    """An error inside a step (a CUDA OOM, say) propagates; the next call starts clean and exact."""
    eng = engine(max_batch_size=2)
    fail_once(eng, at_call=5)
    with pytest.raises(MemoryError, match="simulated"):
        eng.generate([[1], [2], [3]], SamplingParams(max_new_tokens=30, stop_token_ids=(), block_size=4))
    res = eng.generate([[7], [8]], SamplingParams(max_new_tokens=20, stop_token_ids=(), block_size=4))
    assert [r.token_ids for r in res] == [chain(7, 20), chain(8, 20)]


def test_engine_loop_fails_the_calls_in_flight_on_a_step_error_and_goes_on():
    """An out-of-memory error inside a step (simulated) reaches every caller with rows in flight
    (the actor then halves its batch: workers/batch.py); the loop resets the engine and serves the
    next calls exactly."""
    from workers.batch import generate_in_halves
    from workers.engine_loop import EngineLoop

    eng = engine(max_batch_size=4)
    fail_once(eng, at_call=6)
    loop = EngineLoop(eng)
    params = [SamplingParams(max_new_tokens=20, stop_token_ids=(), block_size=4)] * 3
    with pytest.raises(MemoryError, match="simulated"):
        loop.generate([[1], [2], [3]], params)
    out = generate_in_halves(loop, [[7], [8]], params[:2], "orthrus")
    assert [r.token_ids for r in out] == [chain(7, 20), chain(8, 20)]
    assert eng.cache.pool.used == 0
