"""The counter-based uniforms: u = hash(seed, position, stream) must be uniform on (0, 1) over
the whole grid of seeds (below 2^15, around 2^32, up to 2^63) and positions (0 .. 2^31), and
independent across streams, neighbouring positions, neighbouring seeds and seeds 2^32 apart.

Checks: a chi-square fit on equal bins (and a Kolmogorov-Smirnov bound) per stream, per seed
range and per position range; for each pair of (seed, position, stream) lattices, a chi-square
test of independence on an 8 x 8 grid of (u, u') cells, a bound on the Pearson correlation, and
no more than 2 exactly equal values in 20,480 pairs (24-bit values: 0.001 expected).

Planted in a scratch copy of workers/sampler.py `uniform`, one at a time: each failed, the
unmodified function passes (first failing check shown):
  high seed bits ignored (the `s >> 32` mixing line removed)    fit over the seed ranges (p 3e-6);
                                                                seed vs seed + 2^32: 20,480 equal
  stream ignored (`stream` replaced by 1)                       stream 1 vs 2: 20,480 equal
  positions above 2^16 aliased (`pos & 0xFFFF`)                 fit over the large positions (1e-5)
  seed 7 alone ignores its stream (the old test's blind spot)   stream 1 vs 2: 80 equal
  linear counter (pos * 0x9E3779B1 + seed + stream, no hash)    a value of 1.0; fit p = 0
  one bit dropped (`h >> 9`: values in (0, 0.5))                fit p = 0
"""
from __future__ import annotations

import torch

from workers.sampler import STREAM_ACCEPT, STREAM_DRAFT, STREAM_TOKEN, uniform

STREAMS = (STREAM_DRAFT, STREAM_ACCEPT, STREAM_TOKEN)
ALPHA = 1e-3
_rand = torch.randint(0, 2 ** 62, (64,), generator=torch.Generator().manual_seed(1))
SEEDS = {  # 4 x 64 seeds
    "low": torch.arange(64),
    "near 2^32": (1 << 32) - 32 + torch.arange(64),
    "near 2^48": (1 << 48) + 7 * torch.arange(64),
    "random below 2^63": _rand * 2 + 1,
}
POSITIONS = {  # 80 positions
    "0-63": torch.arange(64),
    "large": torch.tensor([4095, 4096, 65535, 65536, 65537, 1 << 20, (1 << 20) + 1, (1 << 24) - 1,
                           1 << 24, 123_456_789, (1 << 30) + 3, (1 << 31) - 2, (1 << 31) - 1, 1 << 31,
                           (1 << 31) + 1, 999_999_999]),
}
ALL_SEEDS = torch.cat(list(SEEDS.values()))  # [256]
ALL_POS = torch.cat(list(POSITIONS.values()))  # [80]


def grid(stream: int, seeds: torch.Tensor = ALL_SEEDS, pos: torch.Tensor = ALL_POS) -> torch.Tensor:
    """u for every (seed, position): [len(seeds), len(pos)] float32."""
    return uniform(seeds, pos.expand(len(seeds), -1).contiguous(), stream)


def chi2_sf(stat: float, dof: int) -> float:
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)))


def fit_pvalue(u: torch.Tensor, bins: int) -> float:
    counts = torch.histc(u.double().flatten(), bins, 0, 1)
    e = u.numel() / bins
    return chi2_sf(float(((counts - e) ** 2 / e).sum()), bins - 1)


def ks_statistic(u: torch.Tensor) -> float:
    x = u.double().flatten().sort().values
    n = x.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - x, x - (i - 1) / n).max())


def independence_pvalue(a: torch.Tensor, b: torch.Tensor, cells: int = 8) -> float:
    """Chi-square test that (a, b) is uniform on the unit square, on a cells x cells grid."""
    ia = (a.flatten().double() * cells).long().clamp(max=cells - 1)
    ib = (b.flatten().double() * cells).long().clamp(max=cells - 1)
    counts = torch.bincount(ia * cells + ib, minlength=cells * cells).double()
    e = a.numel() / cells ** 2
    return chi2_sf(float(((counts - e) ** 2 / e).sum()), cells * cells - 1)


def test_values_lie_in_the_open_unit_interval():
    for s in STREAMS:
        u = grid(s)
        assert u.dtype == torch.float32 and u.shape == (256, 80)
        assert 0 < float(u.min()) and float(u.max()) < 1


def test_uniform_over_every_seed_and_position_range():
    for s in STREAMS:
        u = grid(s)  # [256, 80]
        assert fit_pvalue(u, 64) > ALPHA, s
        assert ks_statistic(u) < 1.95 / u.numel() ** 0.5, s  # KS critical value at alpha = 1e-3
        for name, seeds in SEEDS.items():
            assert fit_pvalue(grid(s, seeds), 16) > ALPHA, (s, name)
        for name, pos in POSITIONS.items():
            assert fit_pvalue(grid(s, ALL_SEEDS, pos), 16) > ALPHA, (s, name)
        assert fit_pvalue(u[:, 0], 8) > ALPHA  # position 0 alone, over 256 seeds


def pairs():
    """(name, u, u') for lattices that must be independent: [256, 80] each."""
    out = []
    for i, a in enumerate(STREAMS):
        for b in STREAMS[i + 1:]:
            out.append((f"stream {a} vs {b}", grid(a), grid(b)))
    for s in STREAMS:
        out.append((f"position +1 (stream {s})", grid(s), grid(s, ALL_SEEDS, ALL_POS + 1)))
        out.append((f"position +2^16 (stream {s})", grid(s), grid(s, ALL_SEEDS, ALL_POS + (1 << 16))))
        out.append((f"seed +1 (stream {s})", grid(s), grid(s, ALL_SEEDS + 1)))
        out.append((f"seed +2^32 (stream {s})", grid(s), grid(s, ALL_SEEDS + (1 << 32))))
        out.append((f"seed + 2^31 (stream {s})", grid(s), grid(s, ALL_SEEDS + (1 << 31))))
    return out


def test_streams_positions_and_seeds_are_uncorrelated():
    for name, a, b in pairs():
        n = a.numel()
        assert int((a == b).sum()) <= 2, name  # 20,480 pairs of 24-bit values: 0.001 equal expected
        assert independence_pvalue(a, b) > ALPHA, name
        r = torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1]
        assert abs(float(r)) < 4.5 / n ** 0.5, name  # |N(0, 1/n)| beyond 4.5 sigma: p = 7e-6


def test_the_same_counter_gives_the_same_value():
    seeds, pos = ALL_SEEDS[:8], torch.arange(5).expand(8, -1).contiguous()
    assert torch.equal(uniform(seeds, pos, STREAM_TOKEN), uniform(seeds.clone(), pos.clone(), STREAM_TOKEN))
    # a row's value depends on its own seed and position only, not on the other rows of the batch
    assert torch.equal(uniform(seeds, pos, STREAM_DRAFT)[3], uniform(seeds[3:4], pos[3:4], STREAM_DRAFT)[0])
