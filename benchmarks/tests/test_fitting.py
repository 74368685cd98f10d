"""benchmarks/fitting.py: the benchmarks' extra timings, checked on their structure (keys, every rank agreeing,
positive times) and on clocks of their own; never against wall-clock bounds."""

import fitting
import numpy as np
import pytest

from labkit import comm, cost
from labkit.comm import mpirun


def test_cache_bytes_reads_the_largest_cache_from_sysfs(tmp_path):
    for index, size in (("index0", "48K"), ("index2", "2048K"), ("index3", "32768K"), ("index9", "garbage")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    (tmp_path / "index4").mkdir()  # no size file: skipped
    assert fitting.cache_bytes(tmp_path) == 32 << 20
    assert fitting.cache_bytes(tmp_path / "missing") is None
    for index, level in (("index0", 1), ("index2", 2), ("index3", 3)):
        (tmp_path / index / "level").write_text(f"{level}\n")
    assert fitting.cache_bytes(tmp_path, level=2) == 2048 << 10  # a core's own cache
    assert fitting.cache_bytes(tmp_path, level=5) is None


def test_the_evictor_is_as_large_as_asked_and_checked():
    assert fitting.evictor(1 << 16).nbytes == 1 << 16 and fitting.evictor(0).size == 0
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="off_cache must be a whole number of bytes"):
            fitting.evictor(bad)


def test_reduce_step_and_exchange_times_are_measured_on_every_rank_at_once():
    def both(c):
        sizes = (1 << 12, 1 << 21)
        return fitting.exchange_times(c, sizes, repeats=2), fitting.reduce_step_times(c, sizes, repeats=2)

    values = comm.run(both, 2, transport="shm").values
    assert values[0] == values[1]  # every rank returns the slowest rank's medians
    for times in values[0]:
        assert set(times) == {1 << 12, 1 << 21} and all(t > 0 for t in times.values())


def test_link_steps_run_back_to_back_and_are_timed_per_step(monkeypatch):
    def both(c):
        kw = {"repeats": 2, "steps": 3}
        return fitting.exchange_times(c, [64], **kw), fitting.reduce_step_times(c, [64], **kw)

    run = comm.run(both, 3, transport="sim")
    # each of 3 ranks: (2 warm-up + 2 timed repeats) x 3 steps, for the exchange and for the reduce step
    assert len([m for m in run.trace if m.nbytes == 64]) == 2 * 3 * 4 * 3
    monkeypatch.setattr(fitting, "timed", lambda c, call, repeats, **kw: [call(), 6.0][1:])  # one call "takes 6 s"
    one = comm.run(lambda c: fitting.exchange_times(c, [64], steps=3), 2, transport="sim").values[0]
    assert one == {64: 2.0}  # the time per step
    with pytest.raises(comm.CommError, match="steps must be a whole number >= 1"):
        comm.run(lambda c: fitting.reduce_step_times(c, [64], steps=0), 2, transport="sim")


def test_send_times_are_the_senders_own_and_shared_by_every_rank():
    values = comm.run(lambda c: fitting.send_times(c, (1 << 10, 1 << 20), repeats=3), 3, transport="shm").values
    assert values[0] == values[1] == values[2]  # a third rank only joins the barriers
    assert set(values[0]) == {1 << 10, 1 << 20} and all(t > 0 for t in values[0].values())


def test_allgather_times_are_checked_and_shared_by_every_rank():
    values = comm.run(lambda c: fitting.allgather_times(c, (16, 1 << 12), repeats=3), 3, transport="shm").values
    assert values[0] == values[1] == values[2]  # the slowest rank's medians, on every rank
    assert set(values[0]) == {16, 1 << 12} and all(t > 0 for t in values[0].values())


def test_a_send_link_is_fitted_like_any_other_and_needs_two_sizes():
    link = cost.Link(6e-6, 1 / 8e9)
    m = fitting.Measurement("shm", 2, {}, send={n: link.message_time(n) for n in (1024, 65536)})
    fitted = m.link("send", with_gamma=False)
    assert fitted.alpha == pytest.approx(6e-6) and fitted.beta == pytest.approx(1 / 8e9)
    with pytest.raises(ValueError, match="send times for 1 size"):
        fitting.Measurement("shm", 2, {}, send={1024: 4e-6}).link("send")
    with pytest.raises(ValueError, match="unknown kind 'ring'"):
        m.link("ring")


def test_measure_shm_times_everything_with_the_caches_emptied():
    m = fitting.measure_shm(2, ("ring",), (4096,), (1024, 4096), repeats=2, gather_sizes=(256, 1024), off_cache=1 << 16)
    assert isinstance(m, fitting.Measurement) and m.off_cache == 1 << 16
    assert set(m.allreduce) == {("ring", 4096)} and set(m.allgather) == {256, 1024}
    assert set(m.pingpong) == set(m.exchange) == set(m.send) == {1024, 4096}
    assert m.check > 0 and all(t > 0 for t in [*m.allreduce.values(), *m.send.values(), *m.allgather.values()])


@pytest.mark.mpi
@pytest.mark.skipif(mpirun.mpiexec() is None, reason="no mpiexec: pip install mpi4py mpich")
def test_measure_mpi_runs_this_file_under_mpiexec():
    m = fitting.measure_mpi(
        2, ("tree",), (4096, 65536), (1024, 65536), repeats=2, gather_sizes=(256, 4096), off_cache=1 << 16
    )
    assert m.transport == "mpi" and m.off_cache == 1 << 16  # passed to the ranks and back through the JSON
    assert set(m.allreduce) == {("tree", 4096), ("tree", 65536)}
    assert set(m.allgather) == {256, 4096} and set(m.send) == {1024, 65536}  # int keys after the JSON
    assert m.check > 0 and np.isfinite(m.gamma) and m.gamma > 0
