"""benchmarks/regimes.py: one α and a β on each side of the last-level cache, fitted to synthetic times."""

import numpy as np
import pytest
import regimes

from labkit import cost
from labkit.cost import Link


def test_fit_link_regimes_recovers_a_link_on_each_side_of_the_cache():
    cache, p = 32 << 20, 2
    sizes = np.array([2**k for k in range(10, 27)], dtype=float)  # 1 KiB … 64 MiB messages
    footprints = 2 * p * sizes  # as fitting.exchange_times: every rank's send and receive buffer
    inside, outside = Link(10e-6, 1 / 12e9), Link(10e-6, 1 / 4e9)  # out of cache: the same α, slower per byte
    times = np.where(footprints <= cache, inside.message_time(sizes), outside.message_time(sizes))
    links = regimes.fit_link_regimes(sizes, times, footprints, cache)
    for name, want in (("cache", inside), ("memory", outside)):
        assert links[name].alpha == pytest.approx(want.alpha, rel=1e-6)
        assert links[name].beta == pytest.approx(want.beta, rel=1e-9)
    assert links["cache"].alpha == links["memory"].alpha  # one start-up cost, fitted to every size
    one = cost.fit_link(sizes, times)  # one line through both regimes misses one of them by far more
    assert (
        abs(one.message_time(64 << 20) / outside.message_time(64 << 20) - 1) > 0.2
        or abs(one.message_time(8 << 20) / inside.message_time(8 << 20) - 1) > 0.2
    )


def test_regimes_split_at_the_cache_size_and_need_two_sizes_each():
    assert regimes.regime(32 << 20, 32 << 20) == "cache" and regimes.regime((32 << 20) + 1, 32 << 20) == "memory"
    assert regimes.allreduce_footprint(1 << 20, 4) == 8 << 20
    with pytest.raises(ValueError, match="cache_bytes must be > 0"):
        regimes.regime(1, 0)
    with pytest.raises(ValueError, match="beyond the 1,000-byte cache, got 1: measure larger messages"):
        regimes.fit_link_regimes([10, 100, 1000], [1e-6, 2e-6, 3e-6], [40, 400, 4000], 1000)
    with pytest.raises(ValueError, match="same length"):
        regimes.fit_link_regimes([10, 100], [1e-6, 2e-6], [40], 1000)
    with pytest.raises(ValueError, match="> 0 seconds"):
        regimes.fit_link_regimes([10, 100, 1000, 2000], [1e-6, 0, 3e-6, 4e-6], [40, 400, 4000, 8000], 1000)


def test_fit_link_regimes_shares_alpha_where_separate_lines_would_not():
    """Beyond the cache the times bend (the first sizes there still partly hit it): a line through those alone
    starts far above the real α; the joint fit keeps the α the small messages show."""
    cache = 1 << 20
    sizes = np.array([1e3, 1e4, 1e5, 2e5, 1e6, 2e6, 4e6])
    footprints = 2 * sizes
    times = np.array([11e-6, 20e-6, 110e-6, 210e-6, 2.0e-3, 3.0e-3, 5.0e-3])
    links = regimes.fit_link_regimes(sizes, times, footprints, cache)
    alone = cost.fit_link(sizes[footprints > cache], times[footprints > cache])
    assert alone.alpha > 500e-6 and links["memory"].alpha < 20e-6
    for n, t in zip(sizes, times, strict=True):  # and still within 40 % of every time
        link = links[regimes.regime(2 * n, cache)]
        assert link.message_time(n) == pytest.approx(t, rel=0.4)
