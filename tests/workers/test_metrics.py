"""The decoding figures on numbers worked out by hand (workers/metrics.py)."""
from __future__ import annotations

import math

from workers import metrics
from workers.params import RequestStats


def test_histograms_add_elementwise():
    assert metrics.add_histograms([1, 2], [0, 1, 5]) == [1, 3, 5]
    assert metrics.add_histograms([], []) == []
    assert metrics.sum_histograms([[1], None, [0, 2]]) == [1, 2]
    assert metrics.histogram([2, 2, 1, 3]) == [1, 2, 1] and metrics.histogram([]) == []


def test_one_rule_for_figures_over_nothing():
    assert metrics.ratio(3, 4) == 0.75 and metrics.ratio(3, 0) == 0.0 and math.isnan(metrics.ratio(0, 0, math.nan))
    assert metrics.mean_acceptance_length(10, 4) == 2.5 and metrics.tokens_per_forward(10, 8) == 1.25
    assert math.isnan(metrics.histogram_mean([])) and metrics.histogram_mean([1, 1]) == 1.5


def test_block_size_and_ar_share():
    # 3 Orthrus iterations at K = 4 (3 drafts each) and 1 AR iteration: mean K 4, a quarter AR
    assert metrics.mean_block_size(drafted_tokens=9, diffusion_passes=3) == 4.0
    assert metrics.ar_share(iterations=4, diffusion_passes=3) == 0.25
    assert metrics.mean_block_size(0, 0) == 0.0 and metrics.ar_share(5, 0) == 1.0


def test_request_stats_use_the_same_formula():
    s = RequestStats(iterations=4, accepted_tokens=6)
    assert s.mean_acceptance_length == metrics.mean_acceptance_length(10, 4) == 2.5
    assert RequestStats().mean_acceptance_length == 0.0


def test_histogram_shares():
    assert metrics.histogram_shares([1, 0, 3]) == "1:25% 3:75%" and metrics.histogram_shares([]) == "-"
