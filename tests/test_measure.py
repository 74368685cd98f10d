"""labkit.measure: fitting and comparing are checked on synthetic times; the real runs on their structure only."""

import numpy as np
import pytest

from labkit import comm, cost, measure
from labkit.comm import mpirun
from labkit.viz import plots

LINK = cost.Link(alpha=20e-6, beta=1 / 5e9, gamma=1 / 20e9)


def synthetic(p=4) -> measure.Measurement:
    sizes = [1 << 10, 1 << 16, 1 << 20]
    one_way = {n: LINK.alpha + n * LINK.beta for n in sizes}
    ar = {(a, n): cost.allreduce_time(a, n, p, LINK) for a in ("ring", "tree") for n in sizes}
    return measure.Measurement("shm", p, one_way, dict(one_way), LINK.gamma, ar)


def test_fit_recovers_the_link_and_the_model_error_is_zero():
    m = synthetic()
    for kind in ("pingpong", "exchange"):
        link = m.link(kind)
        assert link.alpha == pytest.approx(LINK.alpha, rel=1e-6)
        assert link.beta == pytest.approx(LINK.beta, rel=1e-6)
        assert link.gamma == LINK.gamma
    assert m.link("pingpong", with_gamma=False).gamma == 0
    rows = m.compare()
    assert len(rows) == 6 and all(abs(r["error"]) < 1e-6 for r in rows)


def test_model_error_is_relative_to_the_measurement():
    m = synthetic()
    m.allreduce[("ring", 1 << 20)] *= 2  # measured twice the model
    row = next(r for r in m.compare() if r["algorithm"] == "ring" and r["bytes"] == 1 << 20)
    assert row["error"] == pytest.approx(-0.5)


def test_plot_measured_draws_dots_and_model_lines():
    fig, errors = plots.plot_measured(synthetic(2), synthetic(4))
    assert set(errors) == {"shm, p = 2", "shm, p = 4"}
    assert all(e == pytest.approx(0, abs=1e-6) for e in errors.values())
    ax = fig.axes[0]
    assert ax.get_xlabel() == "message size (bytes)" and "measured" in ax.get_title()
    assert len(ax.get_lines()) == 4  # two algorithms: dots and a line each


def test_reduce_gamma_is_a_positive_time_per_byte():
    g = measure.reduce_gamma(nbytes=1 << 16, repeats=3)
    assert np.isfinite(g) and g > 0


def test_a_link_needs_a_known_kind_and_two_sizes():
    m = measure.Measurement("shm", 2, {1024: 1e-5, 65536: 3e-5}, exchange={1024: 4e-6})
    assert m.link("pingpong", with_gamma=False).beta > 0
    with pytest.raises(ValueError, match="unknown kind 'send'"):
        m.link("send")  # the sender's side of a message is the benchmarks' (benchmarks/fitting.py)
    with pytest.raises(ValueError, match="exchange times for 1 size"):
        m.link("exchange")


def test_timings_are_the_slowest_ranks_and_every_rank_agrees():
    def both(c):
        sizes = (1 << 10, 1 << 16)
        return measure.pingpong_times(c, sizes, repeats=2), measure.exchange_times(c, sizes, repeats=2)

    values = comm.run(both, 3, transport="shm").values  # a third rank joins the barriers and the exchange
    assert values[0] == values[1] == values[2]
    for times in values[0]:
        assert set(times) == {1 << 10, 1 << 16} and all(t > 0 for t in times.values())


def test_a_timed_call_runs_warmup_plus_repeats_times_on_every_rank():
    def count(c):
        calls = []
        times = measure.timed(c, lambda: calls.append(1), repeats=3, warmup=2)
        return len(calls), len(times)

    assert comm.run(count, 2, transport="sim").values == [(5, 3), (5, 3)]


def test_a_wrong_all_reduce_is_caught_while_measuring(monkeypatch):
    from labkit import collectives

    monkeypatch.setattr(collectives, "allreduce", lambda x, c, algorithm, out: out.fill(0) or out)
    with pytest.raises(comm.CommError, match="ring all-reduce gave 0.0, not 3.0"):
        comm.run(lambda c: measure.allreduce_times(c, ["ring"], [64], repeats=1), 2, transport="sim")


def test_measure_shm_returns_every_algorithm_and_size():
    m = measure.measure_shm(2, algorithms=("ring", "ps"), sizes=(4096,), pingpong_sizes=(1024, 65536), repeats=2)
    assert m.transport == "shm" and m.p == 2
    assert set(m.allreduce) == {("ring", 4096), ("ps", 4096)}
    assert set(m.pingpong) == set(m.exchange) == {1024, 65536}
    assert all(t > 0 for t in [*m.allreduce.values(), *m.pingpong.values(), *m.exchange.values()])
    assert [(r["algorithm"], r["bytes"]) for r in m.compare()] == [("ps", 4096), ("ring", 4096)]
    with pytest.raises(ValueError, match="p >= 2"):
        measure.measure_shm(1)


@pytest.mark.mpi
@pytest.mark.skipif(mpirun.mpiexec() is None, reason="no mpiexec: pip install mpi4py mpich")
def test_measure_mpi_runs_the_same_code_under_mpiexec():
    m = measure.measure_mpi(2, algorithms=("tree",), sizes=(4096, 65536), pingpong_sizes=(1024, 65536), repeats=2)
    assert m.transport == "mpi" and set(m.allreduce) == {("tree", 4096), ("tree", 65536)}
    assert set(m.pingpong) == set(m.exchange) == {1024, 65536}  # int keys again after the JSON
    assert np.isfinite(m.gamma) and m.gamma > 0
    assert all(t > 0 for t in [*m.allreduce.values(), *m.pingpong.values(), *m.exchange.values()])
