"""The block-size rule: exact arithmetic on small tables."""
from __future__ import annotations

import json

import pytest

from workers.draft_length import AcceptanceTracker, PassCosts, choose_block_size, expected_committed

# Shaped like the H200 8B measurements: an iteration costs ~2.3 AR steps at batch 1, many at 64.
COSTS = PassCosts({(1, 1): 8.0, (1, 4): 18.0, (1, 32): 20.0, (64, 1): 11.0, (64, 4): 60.0, (64, 32): 167.0})


def test_expected_committed():
    assert expected_committed([0.5], 1) == 1.0
    assert expected_committed([0.5], 4) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert expected_committed([1.0, 0.5, 0.0], 5) == pytest.approx(1 + 1 + 0.5)
    assert expected_committed([], 8) == 1.0


def test_choose_prefers_ar_when_drafts_rarely_pass_and_at_large_batches():
    assert choose_block_size(COSTS, 1, [0.2]) == 1
    assert choose_block_size(COSTS, 1, [0.9]) == 32  # E(32) ~ 9.6 tokens for 20 ms vs 1 for 8 ms
    assert choose_block_size(COSTS, 1, [0.9, 0.9, 0.9, 0.1]) == 4  # E(4) = 3.44 / 18 beats E(32) = 3.52 / 20
    assert choose_block_size(COSTS, 64, [0.9]) == 1  # 3.44 tokens for 60 ms loses to 5.45 AR steps


def test_interpolation_in_log_batch():
    assert COSTS.time(8, 1) == pytest.approx(8.0 + 0.5 * 3.0)  # halfway between 1 and 64 in log space
    assert COSTS.time(256, 4) == 60.0 and COSTS.time(1, 32) == 20.0


def test_costs_from_bench_json(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"pass_costs": [{"batch": 1, "block_size": 1, "ms_per_iteration": 5.0},
                                               {"batch": 1, "block_size": 8, "ms_per_iteration": 9.0}]}))
    assert PassCosts.from_bench(path).ms == {(0, 1, 1): 5.0, (0, 1, 8): 9.0}  # (context, batch, K); 0 = any context


def test_tracker_counts_tried_and_passed_drafts():
    """The device tally (orthrus.commit) counts drafts judged and passed per block index."""
    import torch

    from workers.orthrus import SlotState, commit

    st = SlotState.allocate(3, 16, 1, 8, "cpu")
    st.active[:], st.budget[:] = True, 16
    a = torch.tensor([0, 2, 7])  # rejected d1; passed d1,d2 rejected d3; all 7 passed
    commit(st, a, torch.zeros(3, 8, dtype=torch.long))
    t = AcceptanceTracker(max_block=8, prior_pass=0, prior_fail=0)
    t.set_counts(st.tally[0].tolist(), st.tally[1].tolist())
    assert t.tried[:7] == [3, 2, 2, 1, 1, 1, 1]
    assert t.passed[:7] == [2, 2, 1, 1, 1, 1, 1]
    assert t.probabilities()[:3] == [2 / 3, 1.0, 0.5]


def test_engine_picks_block_size_per_batch_from_costs_and_acceptance():
    """Scripted model (drafts pass 4 times in 5): after exploring with the checkpoint's K, the
    engine keeps Orthrus where it pays and switches to AR where the table says AR is faster;
    outputs are the same either way."""
    from tests.workers.test_engine_loop import CountingModel, chain
    from workers.engine import Engine, SamplingParams

    costs = PassCosts({(1, 1): 8.0, (1, 8): 12.0, (64, 1): 11.0, (64, 8): 90.0})
    eng = Engine(CountingModel(), "counting", max_batch_size=64, max_model_len=200, pass_costs=costs)
    params = SamplingParams(max_new_tokens=100, stop_token_ids=())
    first = eng.generate([[i] for i in range(16)], params)  # exploration: the checkpoint's K = 8
    assert all(r.stats.diffusion_passes > 0 for r in first)
    assert eng.tracker.tried[0] >= 64
    assert eng.choose_block_size(1) == 8 and eng.choose_block_size(64) == 1
    big = eng.generate([[i] for i in range(64)], params)
    assert all(r.stats.diffusion_passes == 0 for r in big)  # AR at batch 64
    assert [r.token_ids for r in big[:16]] == [r.token_ids for r in first] == [chain(i, 100) for i in range(16)]
    small = eng.generate([[5]], params)[0]
    assert small.stats.diffusion_passes > 0 and small.token_ids == chain(5, 100)


def test_the_k_in_use_stays_unless_another_promises_ten_percent_more():
    """Flapping between two K of nearly equal promise costs a graph capture per flip (seen on the
    H200: captures inside the timed call made Orthrus 0.33x AR at batch 16)."""
    costs = PassCosts({(1, 1): 10.0, (1, 4): 20.0, (1, 8): 21.0})
    p = [0.8]  # E(4) = 2.952 -> 0.1476/ms; E(8) = 4.16 -> 0.1981/ms; AR 0.1/ms
    assert choose_block_size(costs, 1, p) == 8
    assert choose_block_size(costs, 1, p, keep=4) == 8  # 34% better: switch
    near = [0.62]  # E(4) = 2.243 -> 0.1121/ms; E(8) = 2.574 -> 0.1226/ms: 9% apart
    assert choose_block_size(costs, 1, near) == 8
    assert choose_block_size(costs, 1, near, keep=4) == 4
    assert choose_block_size(costs, 1, [0.1], keep=4) == 1  # AR 0.1 vs E(4)=1.11 -> 0.056: switch
