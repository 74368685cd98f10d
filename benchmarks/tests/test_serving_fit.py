"""benchmarks/serving_fit.py: the serving schemes measured (answers checked, times on their structure), the fits
recovering the device and links that made synthetic times, and the fitted prediction against the chapter's."""

import fitting
import numpy as np
import pytest
import serving_fit

from labkit import comm, cost
from labkit.comm import mpirun
from labkit.parallel import pipeline as pl
from labkit.parallel import serving
from labkit.parallel import tensor as tp

MPIEXEC = mpirun.mpiexec()


LAYERS = tp.random_article_layers()
X = np.random.default_rng(0).random((40, 784), dtype=np.float32)
REFERENCE = tp.forward(X, LAYERS)


def test_without_extras_the_fitted_prediction_is_the_chapters():
    link, device = cost.Link(2e-5, 1e-9), tp.Device(flops=5e10, overhead=3e-6)
    for scheme in serving.SCHEMES:
        p = 3 if scheme == "pipeline" else 4
        want = serving.predict_time(scheme, 64, LAYERS, p, link, device)
        assert serving_fit.predict_time_fitted(scheme, 64, LAYERS, p, link, device) == pytest.approx(want, rel=1e-12)


def test_measured_on_shm_with_answers_checked():
    measured = serving_fit.measure_serving(LAYERS, 2, X, batches=(1, 16), repeats=6, shards=True, off_cache=1 << 16)
    assert set(measured.times) == {(s, b) for s in ("data", "tensor", "pipeline", "shards") for b in (1, 16)}
    assert all(t > 0 for t in measured.times.values())
    assert set(measured.outputs) == {(s, b) for s in ("data", "tensor", "pipeline") for b in (1, 16)}  # no answer
    for (_, b), output in measured.outputs.items():
        np.testing.assert_allclose(output, REFERENCE[:b], atol=1e-5, rtol=0)


@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec next to this Python: pip install mpi4py mpich")
def test_measured_under_mpiexec_with_answers_checked():
    measured = serving_fit.measure_serving(LAYERS, 2, X, batches=(3, 16), repeats=2, transport="mpi", shards=True)
    assert measured.transport == "mpi" and len(measured.times) == 8 and measured.times[("shards", 16)] > 0
    for (_, b), output in measured.outputs.items():
        np.testing.assert_allclose(output, REFERENCE[:b], atol=1e-5, rtol=0)


def test_fit_device_recovers_the_device_that_made_the_times():
    device = tp.Device(flops=8e10, overhead=4e-6)
    times = {
        ("data", b): serving_fit.predict_time_fitted("single", b, LAYERS, 1, cost.Link(0, 0), device)
        for b in (1, 64, 1024)
    }
    fitted = serving_fit.fit_device(serving_fit.ServingMeasurement("shm", 1, times, {}), LAYERS)
    assert fitted.flops == pytest.approx(8e10) and fitted.overhead == pytest.approx(4e-6)


def test_fit_ring_link_recovers_the_link_of_the_ring_times():
    link = cost.Link(alpha=15e-6, beta=1 / 5e9)
    times = {("ring", n): cost.allreduce_time("ring", n, 4, link) for n in (4096, 65536, 1 << 20)}
    fitted = serving_fit.fit_ring_link(fitting.Measurement("shm", 4, {}, allreduce=times))
    assert fitted.alpha == pytest.approx(15e-6) and fitted.beta == pytest.approx(1 / 5e9)
    checked = {key: t + 40e-6 for key, t in times.items()}  # every collective first checks shapes: 40 µs
    fitted = serving_fit.fit_ring_link(fitting.Measurement("shm", 4, {}, allreduce=checked, check=40e-6))
    assert fitted.alpha == pytest.approx(15e-6) and fitted.beta == pytest.approx(1 / 5e9)


def test_fit_gather_link_recovers_the_link_of_the_all_gather_times():
    link, p, check = cost.Link(alpha=22e-6, beta=1 / 3e9), 4, 40e-6
    times = {n: check + (p - 1) * link.message_time(n) for n in serving_fit.GATHER_SIZES}
    fitted = serving_fit.fit_gather_link(fitting.Measurement("mpi", p, {}, check=check, allgather=times))
    assert fitted.alpha == pytest.approx(22e-6) and fitted.beta == pytest.approx(1 / 3e9)
    with pytest.raises(ValueError, match="gather_sizes=serving_fit.GATHER_SIZES"):
        serving_fit.fit_gather_link(fitting.Measurement("mpi", p, {}, allgather={1024: 1e-4}))


def test_predict_time_all_gathers_on_the_gather_link():
    link, gather, device = cost.Link(2e-5, 1e-9), cost.Link(3e-5, 2e-9), tp.Device(flops=5e10, overhead=3e-6)
    for scheme, split in (("tensor", "megatron"), ("tensor-column", "column"), ("tensor-row", "row")):
        plain = serving_fit.predict_time_fitted(scheme, 64, LAYERS, 3, link, device)
        pieces = [s for how, s in tp.shard_model(LAYERS, 3, 0, split) if how == "column"]
        # each column piece's all-gather: (p − 1) messages of rank 0's piece, on the other link
        want = sum(2 * (gather.message_time(64 * s.n_out * 4) - link.message_time(64 * s.n_out * 4)) for s in pieces)
        got = serving_fit.predict_time_fitted(scheme, 64, LAYERS, 3, link, device, gather=gather) - plain
        assert got == pytest.approx(want) and (want > 0) == bool(pieces)


def test_predict_time_charges_the_senders_cost_to_the_pipeline_only():
    link, device, send = cost.Link(2e-5, 1e-9), tp.Device(flops=5e10, overhead=3e-6), cost.Link(6e-6, 1 / 8e9)
    m = serving.default_micro_batches(64, 3)
    want = serving_fit.pipeline_time_fitted(LAYERS, 64, 3, m, link, device, send=send)
    assert serving_fit.predict_time_fitted("pipeline", 64, LAYERS, 3, link, device, send=send) == pytest.approx(want)
    assert want > serving_fit.predict_time_fitted("pipeline", 64, LAYERS, 3, link, device)  # sending is not free
    for scheme in ("data", "tensor"):  # collectives: the fitted ring link already holds what the sender spends
        plain = serving_fit.predict_time_fitted(scheme, 64, LAYERS, 3, link, device)
        assert serving_fit.predict_time_fitted(scheme, 64, LAYERS, 3, link, device, send=send) == plain


def test_the_shape_check_counts_once_per_collective():
    link, device = cost.Link(2e-5, 1e-9), tp.Device(flops=5e10, overhead=3e-6)
    for scheme, collectives_per_batch in (("tensor", 2), ("tensor-column", 3), ("tensor-row", 3), ("data", 0)):
        # the article's MLP at p = 2: Megatron pairs dense_1 with dense_2 (one all-reduce), the softmax layer alone
        plain = serving_fit.predict_time_fitted(scheme, 64, LAYERS, 2, link, device)
        checked = serving_fit.predict_time_fitted(scheme, 64, LAYERS, 2, link, device, check=1e-3)
        assert checked - plain == pytest.approx(collectives_per_batch * 1e-3)


def test_the_replicas_device_predicts_the_replicas_exactly():
    """ "replicas": every rank the whole batch, so the device fitted to those times (the loaded device the
    benchmark computes data and pipeline on) predicts them exactly."""
    loaded = tp.Device(flops=4e10, overhead=7e-6)
    times = {
        ("replicas", b): serving_fit.predict_time_fitted("replicas", b, LAYERS, 4, cost.Link(0, 0), loaded)
        for b in (1, 64)
    }
    fitted = serving_fit.fit_device(serving_fit.ServingMeasurement("shm", 4, times, {}), LAYERS)
    assert fitted.flops == pytest.approx(4e10) and fitted.overhead == pytest.approx(7e-6)


def test_ranks_sharing_cores_compute_p_over_cores_times_slower():
    device, link, free = tp.Device(flops=5e10, overhead=3e-6), cost.Link(2e-5, 1e-9), cost.Link(0, 0)
    for scheme in ("data", "tensor", "tensor-column", "tensor-row", "pipeline"):
        p = 3 if scheme == "pipeline" else 4  # three layers: at most three stages
        plain = serving_fit.predict_time_fitted(scheme, 64, LAYERS, p, free, device)
        assert serving_fit.predict_time_fitted(scheme, 64, LAYERS, p, free, device, cores=2) == pytest.approx(
            p / 2 * plain
        )
        assert serving_fit.predict_time_fitted(
            scheme, 64, LAYERS, p, link, device, cores=p
        ) == serving_fit.predict_time_fitted(scheme, 64, LAYERS, p, link, device)  # a core each: nothing changes
    instant = tp.Device(flops=float("inf"), overhead=0.0)  # the messages alone are not slowed by the turns
    assert serving_fit.predict_time_fitted(
        "tensor", 64, LAYERS, 4, link, instant, cores=1
    ) == serving_fit.predict_time_fitted("tensor", 64, LAYERS, 4, link, instant)
    with pytest.raises(ValueError, match="cores must be ≥ 1"):
        serving_fit.predict_time_fitted("data", 64, LAYERS, 4, link, device, cores=0)


def test_batch_time_is_the_slowest_rank_less_an_empty_barrier(monkeypatch):
    """On a clock of its own (no wall time): a call takes 20 ms on rank 1 and nothing on rank 0, a barrier 1 ms on
    every rank; every rank reports the slowest rank's call-and-barrier less the fastest empty barrier, 20 ms."""
    import threading
    import types

    local = threading.local()

    def now():
        return getattr(local, "t", 0.0)

    def advance(seconds):
        local.t = now() + seconds

    monkeypatch.setattr(serving_fit, "time", types.SimpleNamespace(perf_counter=now))  # this module's clock only

    def timed(c):
        barrier = c.barrier

        def slow_barrier():
            barrier()
            advance(0.001)

        c.barrier = slow_barrier
        return serving_fit.batch_time(c, lambda: advance(0.02 if c.rank == 1 else 0.0), repeats=3)

    values = comm.run(timed, 2).values  # sim: the ranks are threads of this process, each with its own clock
    assert values == [pytest.approx(0.021 - 0.001)] * 2


def test_shard_device_is_fitted_to_rank_0s_shards_timed_alone():
    device = tp.Device(flops=4e10, overhead=7e-6)
    pieces = tp.shard_model(LAYERS, 4, 0, "megatron")
    exact = {b: device.time(sum(s.flops(b) for _, s in pieces), calls=len(pieces)) for b in (1, 16, 256, 1024)}
    fitted = serving_fit.fit_shard_device(exact, LAYERS, 4)
    assert fitted.flops == pytest.approx(device.flops, rel=1e-6)
    assert fitted.overhead == pytest.approx(device.overhead, rel=1e-6)
    measured = serving_fit.shard_times(LAYERS, 4, (1, 64), repeats=3)
    assert set(measured) == {1, 64} and all(t > 0 for t in measured.values())
    cold = serving_fit.shard_times(LAYERS, 4, (1, 64), repeats=3, off_cache=1 << 20)  # weights pushed out of the cache
    assert set(cold) == {1, 64} and all(t > 0 for t in cold.values())


@pytest.mark.parametrize(("p", "micro_batches"), [(3, 8), (4, 16)])
def test_a_senders_cost_repeats_on_the_slowest_stage(p, micro_batches):
    """With ``send`` every stage but the last also pays for handing on each micro-batch. On equal stages the
    slowest stage (a middle one: it receives and sends) gains one send, the sum p − 1 of them: M + p − 2 in all."""
    layers = pl.uniform_mlp(depth=2 * p, width=32)
    link, send = cost.preset("10 GbE"), cost.Link(alpha=7e-6, beta=1 / 3e9)
    rows = 64 // micro_batches
    one_send = send.message_time(rows * 32 * 4)
    plain = pl.pipeline_time(layers, 64, p, micro_batches, link)
    paid = serving_fit.pipeline_time_fitted(layers, 64, p, micro_batches, link, tp.DEFAULT_DEVICE, send=send)
    assert paid - plain == pytest.approx((micro_batches + p - 2) * one_send, rel=1e-9)
    assert (
        serving_fit.pipeline_time_fitted(layers, 64, p, micro_batches, link, tp.DEFAULT_DEVICE) == plain
    )  # "sim": sends are free
