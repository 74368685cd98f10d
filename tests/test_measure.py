"""labkit.measure: fitting and comparing are checked on synthetic times; the real runs on their structure only."""

import numpy as np
import pytest

from labkit import comm, cost, measure
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


def test_cache_bytes_reads_the_largest_cache_from_sysfs(tmp_path):
    for index, size in (("index0", "48K"), ("index2", "2048K"), ("index3", "32768K"), ("index9", "garbage")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    (tmp_path / "index4").mkdir()  # no size file: skipped
    assert measure.cache_bytes(tmp_path) == 32 << 20
    assert measure.cache_bytes(tmp_path / "missing") is None
    for index, level in (("index0", 1), ("index2", 2), ("index3", 3)):
        (tmp_path / index / "level").write_text(f"{level}\n")
    assert measure.cache_bytes(tmp_path, level=2) == 2048 << 10  # a core's own cache
    assert measure.cache_bytes(tmp_path, level=5) is None


def test_off_cache_is_recorded_and_checked():
    m = measure.measure_shm(
        2, algorithms=("ring",), sizes=(4096,), pingpong_sizes=(1024, 4096), repeats=2, off_cache=1 << 16
    )
    assert m.off_cache == 1 << 16 and all(t > 0 for t in m.allreduce.values())
    assert measure.evictor(1 << 16).nbytes == 1 << 16 and measure.evictor(0).size == 0
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="off_cache must be a whole number of bytes"):
            measure.evictor(bad)


def test_reduce_gamma_is_a_positive_time_per_byte():
    g = measure.reduce_gamma(nbytes=1 << 16, repeats=3)
    assert 0 < g < 1e-6  # under a microsecond per byte on anything that runs Python


def test_reduce_step_and_exchange_times_are_measured_on_every_rank_at_once():
    def both(c):
        sizes = (1 << 12, 1 << 21)
        return (
            measure.exchange_times(c, sizes, repeats=2),
            measure.reduce_step_times(c, sizes, repeats=2),
        )

    values = comm.run(both, 2, transport="shm").values
    assert values[0] == values[1]  # every rank returns the slowest rank's medians
    for times in values[0]:
        assert set(times) == {1 << 12, 1 << 21} and all(0 < t < 1 for t in times.values())


def test_link_steps_run_back_to_back_and_are_timed_per_step(monkeypatch):
    def both(c):
        kw = {"repeats": 2, "steps": 3}
        return measure.exchange_times(c, [64], **kw), measure.reduce_step_times(c, [64], **kw)

    run = comm.run(both, 3, transport="sim")
    # each of 3 ranks: (2 warm-up + 2 timed repeats) x 3 steps, for the exchange and for the reduce step
    assert len([m for m in run.trace if m.nbytes == 64]) == 2 * 3 * 4 * 3
    monkeypatch.setattr(measure, "timed", lambda c, call, repeats, **kw: [call(), 6.0][1:])  # one call "takes 6 s"
    one = comm.run(lambda c: measure.exchange_times(c, [64], steps=3), 2, transport="sim").values[0]
    assert one == {64: 2.0}  # the time per step
    with pytest.raises(comm.CommError, match="steps must be a whole number >= 1"):
        comm.run(lambda c: measure.reduce_step_times(c, [64], steps=0), 2, transport="sim")


def test_a_link_needs_a_known_kind_and_two_sizes():
    m = measure.Measurement("shm", 2, {1024: 1e-5, 65536: 3e-5}, send={1024: 4e-6})
    assert m.link("pingpong", with_gamma=False).beta > 0
    with pytest.raises(ValueError, match="unknown kind 'ring'"):
        m.link("ring")
    with pytest.raises(ValueError, match="send times for 1 size"):
        m.link("send")


def test_send_times_are_the_senders_own_and_shared_by_every_rank():
    def both(c):
        return measure.send_times(c, (1 << 10, 1 << 20), repeats=3)

    values = comm.run(both, 3, transport="shm").values  # a third rank only joins the barriers
    assert values[0] == values[1] == values[2]
    assert set(values[0]) == {1 << 10, 1 << 20} and all(0 < t < 1 for t in values[0].values())


def test_allgather_times_are_checked_and_shared_by_every_rank():
    def both(c):
        return measure.allgather_times(c, (16, 1 << 12), repeats=3)

    values = comm.run(both, 3, transport="shm").values
    assert values[0] == values[1] == values[2]  # the slowest rank's medians, on every rank
    assert set(values[0]) == {16, 1 << 12} and all(0 < t < 1 for t in values[0].values())
    m = measure.measure_shm(
        2, algorithms=("ring",), sizes=(4096,), pingpong_sizes=(1024, 4096), repeats=2, gather_sizes=(256, 1024)
    )
    assert set(m.allgather) == {256, 1024}


def test_measure_shm_returns_every_algorithm_and_size():
    m = measure.measure_shm(2, algorithms=("ring", "ps"), sizes=(4096,), pingpong_sizes=(1024, 65536), repeats=2)
    assert 0 < m.check < 1  # the shape check every collective starts with, timed on its own
    assert set(m.allreduce) == {("ring", 4096), ("ps", 4096)}
    assert set(m.pingpong) == set(m.exchange) == set(m.send) == {1024, 65536}
    assert all(t > 0 for t in [*m.allreduce.values(), *m.pingpong.values(), *m.send.values()])
    assert m.link("send", with_gamma=False).beta > 0  # the sender's side of a message, fitted like any link
    assert m.allgather == {}  # timed only when asked for (gather_sizes)
    with pytest.raises(ValueError, match="p >= 2"):
        measure.measure_shm(1)


@pytest.mark.mpi
@pytest.mark.skipif(measure.mpiexec() is None, reason="no mpiexec: pip install mpi4py mpich")
def test_measure_mpi_runs_the_same_code_under_mpiexec():
    m = measure.measure_mpi(
        2,
        algorithms=("tree",),
        sizes=(4096, 65536),
        pingpong_sizes=(1024, 65536),
        repeats=2,
        gather_sizes=(256, 4096),
        off_cache=1 << 16,
    )
    assert m.off_cache == 1 << 16  # passed to the ranks and back through the JSON
    assert set(m.allgather) == {256, 4096} and all(0 < t < 1 for t in m.allgather.values())  # int keys, too
    assert m.transport == "mpi" and set(m.allreduce) == {("tree", 4096), ("tree", 65536)}
    assert np.isfinite(m.gamma) and m.gamma > 0
    assert 0 < m.check < 1  # the shape check, timed under mpiexec and carried through the JSON
    assert set(m.send) == {1024, 65536} and all(0 < t < 1 for t in m.send.values())  # int keys after the JSON
