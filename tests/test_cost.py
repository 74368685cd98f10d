"""labkit.cost: closed forms against numbers worked out by hand, fits, bandwidth figures, presets."""

import math

import numpy as np
import pytest

from labkit import cost
from labkit.cost import Link

# α = 10 µs, β = 1 ns/byte (1 GB/s), γ = 0.5 ns/byte; n = 1 MB. So α + nβ = 1.01 ms and nγ = 0.5 ms.
LINK = Link(alpha=1e-5, beta=1e-9, gamma=5e-10)
N = 1e6

HAND = {  # (algorithm, p): seconds, each worked out from the table in DESIGN.md
    ("ps", 8): 14 * 1.01e-3 + 7 * 0.5e-3,
    ("ring", 8): 14e-5 + 2 * 7 / 8 * 1e-3 + 7 / 8 * 0.5e-3,
    ("tree", 8): 6 * 1.01e-3 + 3 * 0.5e-3,
    ("recursive_doubling", 8): 3 * (1e-5 + 1e-3 + 0.5e-3),
    ("halving_doubling", 8): 6e-5 + 2 * 7 / 8 * 1e-3 + 7 / 8 * 0.5e-3,
    # p = 6 is not a power of two: tree takes ⌈lg 6⌉ = 3 rounds; the doublings work on 4 ranks plus a fold
    ("ps", 6): 10 * 1.01e-3 + 5 * 0.5e-3,
    ("ring", 6): 10e-5 + 2 * 5 / 6 * 1e-3 + 5 / 6 * 0.5e-3,
    ("tree", 6): 6 * 1.01e-3 + 3 * 0.5e-3,
    ("recursive_doubling", 6): 2 * (1e-5 + 1e-3 + 0.5e-3) + 2 * 1.01e-3 + 0.5e-3,
    ("halving_doubling", 6): 4e-5 + 2 * 3 / 4 * 1e-3 + 3 / 4 * 0.5e-3 + 2 * 1.01e-3 + 0.5e-3,
}


@pytest.mark.parametrize("algorithm, p", sorted(HAND))
def test_allreduce_time_matches_hand_computed(algorithm, p):
    assert cost.allreduce_time(algorithm, N, p, LINK) == pytest.approx(HAND[algorithm, p], rel=1e-12)


@pytest.mark.parametrize("algorithm", cost.ALGORITHMS)
def test_one_rank_costs_nothing_and_times_are_vectorised(algorithm):
    assert cost.allreduce_time(algorithm, N, 1, LINK) == 0.0
    sizes = np.array([0.0, 1.0, 1e3, 1e9])
    many = cost.allreduce_time(algorithm, sizes, 5, LINK)
    assert isinstance(many, np.ndarray) and many.shape == sizes.shape
    assert many == pytest.approx([cost.allreduce_time(algorithm, n, 5, LINK) for n in sizes], rel=1e-15)


def test_bad_names_and_world_sizes_are_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match="ring"):
        cost.allreduce_time("butterfly", N, 4, LINK)
    with pytest.raises(ValueError, match=">= 1"):
        cost.allreduce_time("ring", N, 0, LINK)


def test_bytes_sent_per_rank():
    assert cost.bytes_sent_per_rank("ring", 1000, 4) == 1500  # 2(p−1)/p·n
    assert cost.bytes_sent_per_rank("halving_doubling", 1000, 4) == 1500
    assert cost.bytes_sent_per_rank("ps", 1000, 4) == 3000  # the master sends the result to p−1 ranks
    assert cost.bytes_sent_per_rank("tree", 1000, 8) == 3000  # the root sends to lg p children
    assert cost.bytes_sent_per_rank("recursive_doubling", 1000, 8) == 3000
    assert cost.bytes_sent_per_rank("recursive_doubling", 1000, 6) == 3000  # 2 exchanges + fold-out
    assert list(cost.bytes_sent_per_rank("ring", np.array([4.0, 8.0]), 2)) == [4.0, 8.0]


def test_algbw_and_busbw_follow_nccl_tests():
    # nccl-tests (PERFORMANCE.md): algbw = S / t; all-reduce busbw = algbw · 2(n−1)/n
    assert cost.algbw(1e9, 0.1) == pytest.approx(1e10)
    assert cost.busbw(1e9, 0.1, 8) == pytest.approx(1e10 * 2 * 7 / 8)
    assert cost.busbw(1e9, 0.1, 8, collective="allgather") == pytest.approx(1e10 * 7 / 8)
    assert cost.busbw(1e9, 0.1, 8, collective="broadcast") == pytest.approx(1e10)
    # the ring's modelled busbw approaches the link bandwidth for large messages
    n = 1e10
    assert cost.busbw(n, cost.allreduce_time("ring", n, 8, Link(1e-5, 1e-9)), 8) == pytest.approx(1e9, rel=1e-4)
    with pytest.raises(ValueError, match="allreduce"):
        cost.busbw(1e9, 0.1, 8, collective="alltoall")


def test_fit_link_recovers_alpha_and_beta():
    rng = np.random.default_rng(0)
    sizes = np.repeat(np.logspace(0, 8, 17), 5)
    times = 5e-6 + sizes / 1e10
    noisy = times * (1 + 0.01 * rng.standard_normal(times.size))
    exact = cost.fit_link(sizes, times)
    assert exact.alpha == pytest.approx(5e-6, rel=1e-6) and exact.beta == pytest.approx(1e-10, rel=1e-9)
    fitted = cost.fit_link(sizes, noisy)
    assert fitted.beta == pytest.approx(1e-10, rel=0.02)
    assert fitted.alpha >= 0


def test_fit_link_needs_two_sizes_and_growing_times():
    with pytest.raises(ValueError, match="2 different message sizes"):
        cost.fit_link([1000, 1000, 1000], [1e-5, 1.1e-5, 0.9e-5])
    with pytest.raises(ValueError, match="larger messages"):
        cost.fit_link([1, 10, 100], [3e-6, 2e-6, 1e-6])
    with pytest.raises(ValueError, match="same length"):
        cost.fit_link([1, 2], [1.0])


@pytest.mark.parametrize("link", [Link(1e-5, 1e-9), LINK, cost.preset("InfiniBand HDR")])
def test_crossover_is_where_the_two_formulas_are_equal(link):
    n = cost.crossover("tree", "ring", 8, link)
    assert n is not None and 1 <= n <= 1e11
    assert cost.allreduce_time("tree", n, 8, link) == pytest.approx(cost.allreduce_time("ring", n, 8, link), rel=1e-9)
    # tree wins below (fewer latencies), ring above (fewer bytes per rank)
    assert cost.allreduce_time("tree", n / 2, 8, link) < cost.allreduce_time("ring", n / 2, 8, link)
    assert cost.allreduce_time("tree", n * 2, 8, link) > cost.allreduce_time("ring", n * 2, 8, link)


def test_crossover_is_none_when_they_never_cross_in_range():
    assert cost.crossover("ps", "tree", 2, LINK) is None  # the same formula at p = 2
    assert cost.crossover("ring", "halving_doubling", 8, LINK) is None  # parallel lines: hd is always faster
    assert cost.crossover("tree", "ring", 8, Link(1e-5, 1e-9), hi=10.0) is None  # crosses far above 10 bytes


def test_presets_load_and_every_row_has_sources():
    links = cost.presets()
    for name in ["PCIe 4.0 x16", "PCIe 5.0 x16", "NVLink 4 (H100)", "InfiniBand HDR", "InfiniBand NDR", "10 GbE",
                 "25 GbE", "100 GbE", "shared memory"]:  # fmt: skip
        assert isinstance(links[name], Link)
        assert links[name].alpha > 0 and links[name].bandwidth > 1e8
    sources = cost.preset_sources()
    assert set(sources) == set(links)
    for bandwidth_source, latency_source in sources.values():
        assert len(bandwidth_source) > 20 and len(latency_source) > 10
    assert links["NVLink 4 (H100)"].bandwidth == pytest.approx(450e9)  # 900 GB/s is both directions together
    assert links["10 GbE"].bandwidth == pytest.approx(1.25e9)


def test_default_link_is_the_10gbe_preset():
    assert cost.DEFAULT_LINK == cost.preset("10 gbe")


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="InfiniBand HDR"):
        cost.preset("token ring")


def test_link_validates_and_reads_well():
    with pytest.raises(ValueError, match="alpha"):
        Link(alpha=-1e-6, beta=1e-9)
    with pytest.raises(ValueError, match="beta"):
        Link(alpha=1e-6, beta=math.nan)
    with pytest.raises(ValueError, match="GB/s"):
        Link.from_bandwidth(1e-6, 0)
    link = Link.from_bandwidth(5e-6, 12.5, gamma=1e-10)
    assert link.beta == pytest.approx(1 / 12.5e9) and link.bandwidth == pytest.approx(12.5e9)
    assert link.message_time(1e6) == pytest.approx(5e-6 + 1e6 / 12.5e9)
    assert repr(link) == "Link(alpha=5 µs, bandwidth=12.5 GB/s, gamma=10 GB/s reduced)"
    assert repr(Link(0, 0)) == "Link(alpha=0 s, bandwidth=inf GB/s, gamma=0)"


@pytest.mark.parametrize("p", [2, 3, 4, 6, 8, 16, 100])
def test_lower_bound_is_the_closed_forms_and_no_algorithm_beats_it(p):
    link = Link(alpha=7e-6, beta=3e-10, gamma=1e-10)
    n = np.array([1.0, 1e3, 1e6, 1e9])
    by_hand = math.ceil(math.log2(p)) * 7e-6 + (p - 1) / p * n * (2 * 3e-10 + 1e-10)
    assert np.allclose(cost.lower_bound(n, p, link), by_hand, rtol=1e-12)
    for algorithm in cost.ALGORITHMS:
        assert np.all(cost.allreduce_time(algorithm, n, p, link) >= cost.lower_bound(n, p, link) * (1 - 1e-12))
    # ring and halving-doubling meet the bandwidth and computation bounds: their n-terms are the bound's
    slope = lambda a: (cost.allreduce_time(a, 2e9, p, link) - cost.allreduce_time(a, 1e9, p, link)) / 1e9  # noqa: E731
    bound_slope = (cost.lower_bound(2e9, p, link) - cost.lower_bound(1e9, p, link)) / 1e9
    assert math.isclose(slope("ring"), bound_slope, rel_tol=1e-9)
    if p & (p - 1) == 0:
        assert math.isclose(slope("halving_doubling"), bound_slope, rel_tol=1e-9)
        assert math.isclose(cost.allreduce_time("recursive_doubling", 0, p, link), cost.lower_bound(0, p, link))


def test_lower_bound_of_one_rank_is_zero():
    assert cost.lower_bound(1e6, 1, Link(alpha=1e-6, beta=1e-9)) == 0.0
