"""benchmarks/allreduce.py: its fit, its check that no α-β model can fit two sizes, and its interleaving."""

import allreduce
import pytest

from labkit.cost import Link


def test_the_benchmark_fits_links_and_gamma_on_each_side_of_the_cache():
    """benchmarks/allreduce.py's fit: ping-pong and exchange lines, γ from (reduce step − exchange) per byte, and
    per regime (footprint 2pm of an exchange of m bytes) a link and a γ of its own."""
    bench, p, cache = allreduce, 2, 32 << 20
    inside, outside = Link(10e-6, 1 / 12e9, 1 / 20e9), Link(10e-6, 1 / 5e9, 1 / 8e9)
    pingpong = Link(8e-6, 1 / 15e9)
    medians = {}
    for n in bench.PINGPONG:  # float32 values, as the benchmark measures them
        m = 4 * n
        link = inside if 2 * p * m <= cache else outside
        medians[("ping-pong", n)] = pingpong.message_time(m)
        medians[("exchange", n)] = link.message_time(m)
        medians[("reduce", n)] = link.message_time(m) + m * link.gamma
    links = bench.fit(medians, p, cache)
    for name, want in (("cache", inside), ("memory", outside)):
        got = links[name]
        assert got.alpha == pytest.approx(want.alpha, rel=1e-6) and got.beta == pytest.approx(want.beta, rel=1e-9)
        assert got.gamma == pytest.approx(want.gamma, rel=1e-6)
    assert links["ping-pong"].beta == pytest.approx(pingpong.beta, rel=1e-9)
    assert "cache" not in bench.fit(medians, p, None)  # the cache's size unknown: one line each, no regimes
    assert bench._slope([(1.0, 2.0)]) == 0.0 and bench._slope([(1.0, 2.0), (2.0, 1.0)]) == 0.0  # never negative
    assert bench._slope([(1.0, 5.0), (2.0, 7.0)]) == pytest.approx(2.0)  # the fixed 3 s stays out of γ


def test_the_benchmark_says_when_no_alpha_beta_model_can_fit_two_sizes():
    """benchmarks/allreduce.py's check: α' + β'n grows at most in proportion to n, so a time that grows faster
    than (1 + 20 %)/(1 − 20 %) · n₂/n₁ leaves one of the two sizes outside ±20 % for every α', β' ≥ 0."""
    bench = allreduce

    def rows(times):
        return [{"p": 2, "bytes": n, "time_s": t} for n, t in times.items()]

    linear = rows({2**20: 1e-4 + 2**20 * 1e-10, 2**24: 1e-4 + 2**24 * 1e-10})  # an α-β line fits it exactly
    (line,) = bench.unreachable(linear)
    assert "some α-β-γ model" in line
    cliff = rows({2**22: 4e-4, 40 * 10**6: 16.8 * 4e-4})  # measured here: 16.8× the time for 9.5× the bytes
    (line,) = bench.unreachable(cliff)
    assert "no α-β-γ model" in line and "16.8×" in line and "at most 14.3×" in line
    assert bench.unreachable(rows({2**20: 1e-3})) == []  # one size: nothing to compare
    # the model columns: each round's prediction of its own time, the round with the median error shown
    model, error = bench._median_error([(1.5, 1.0), (0.8, 1.0), (2.2, 2.0)])  # errors +50 %, −20 %, +10 %
    assert (model, error) == (2.2, pytest.approx(0.1))
    assert bench._median_error([(1.0, 2.0), (3.0, 2.0)]) == (1.0, -0.5)  # two rounds: the lower median
    assert bench._median_error([]) == (None, None)


def test_the_benchmark_interleaves_every_measurement_over_the_same_turns():
    """benchmarks/allreduce.py's world: each measurement's repeats are split over the turns, and every turn goes
    through all measurements, so a link and the all-reduce it predicts sample the same minutes of the machine."""
    bench, calls = allreduce, []

    def job(name):
        return lambda k: calls.append((name, k)) or [name] * k

    got = bench.interleave({"ring|4": (job("a"), 5), ("exchange", 4): (job("b"), 2)}, turns=3)
    assert calls == [("a", 2), ("b", 1), ("a", 2), ("b", 1), ("a", 1)]  # 5 = 2 + 2 + 1 and 2 = 1 + 1 + 0
    assert got == {"ring|4": ["a"] * 5, ("exchange", 4): ["b"] * 2}
