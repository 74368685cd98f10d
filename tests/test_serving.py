"""labkit.serving: every scheme answers like one device on sim, shm and MPI; memory, model and errors are right."""

import sys

import numpy as np
import pytest

from labkit import comm, cost, measure, serving_measure
from labkit.comm import mpirun
from labkit.parallel import pipeline as pl
from labkit.parallel import serving
from labkit.parallel import tensor as tp

MPIEXEC = mpirun.mpiexec()


def article_shapes(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(784, 100, "linear"), (100, 100, "relu"), (100, 10, "softmax")]
    return [
        tp.Dense(
            (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
            (rng.normal(size=b) * 0.1).astype(np.float32),
            act,
            f"layer_{i}",
        )
        for i, (a, b, act) in enumerate(shapes)
    ]


LAYERS = article_shapes()
X = np.random.default_rng(0).random((40, 784), dtype=np.float32)
REFERENCE = tp.forward(X, LAYERS)


@pytest.mark.parametrize("scheme", serving.SCHEMES)
@pytest.mark.parametrize("p", range(1, 9))
def test_every_scheme_answers_like_one_device_on_sim(scheme, p):
    layers = LAYERS if scheme != "pipeline" else pl.uniform_mlp(depth=8, width=32)
    x = X[:, :32] if scheme == "pipeline" else X
    served = serving.serve(scheme, x[:37], layers, p)
    np.testing.assert_allclose(served.output, tp.forward(x[:37], layers), atol=1e-5, rtol=0)
    if scheme == "data":  # replicas never talk
        assert served.run.trace == []


def test_fewer_requests_than_replicas_leaves_some_idle():
    served = serving.serve("data", X[:3], LAYERS, 5)
    np.testing.assert_allclose(served.output, REFERENCE[:3], atol=1e-6)
    assert [len(v) for v in served.run.values] == [1, 1, 1, 0, 0]


def test_memory_per_rank_matches_a_hand_count():
    whole = 4 * ((784 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10))
    assert serving.memory_per_rank(LAYERS, 3, "data") == [whole] * 3
    assert serving.memory_per_rank(LAYERS, 3, "single") == [whole, 0, 0]
    assert serving.memory_per_rank(LAYERS, 3, "replicas") == [whole] * 3
    assert serving.memory_per_rank(LAYERS, 2, "pipeline") == [4 * (784 * 100 + 100), 4 * (100 * 100 + 100 + 1010)]
    tensor = serving.memory_per_rank(LAYERS, 4, "tensor")
    assert tensor[0] == 4 * ((784 * 25 + 25) + (25 * 100 + 100) + (100 * 3 + 3))
    assert whole / 4 < tensor[0] < whole / 4 * 1.01  # a quarter each, and the replicated bias of the row split


@pytest.mark.parametrize("scheme", serving.SCHEMES)
@pytest.mark.parametrize("p", [1, 2, 4])
def test_the_alpha_beta_model_equals_the_simulator_where_it_is_exact(scheme, p):
    rng = np.random.default_rng(1)
    widths = [16, 32, 16, 32, 8]  # divisible by p; an even number of layers, so Megatron pairs them all
    layers = [
        tp.Dense(rng.normal(size=(a, b)).astype(np.float32), np.zeros(b, np.float32), "relu", f"l{i}")
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    ]
    link, device = cost.preset("10 GbE"), tp.Device(flops=5e10, overhead=3e-6)
    served = serving.serve(scheme, np.ones((8, 16), np.float32), layers, p, link=link, device=device)
    assert served.time == pytest.approx(serving.predict_time(scheme, 8, layers, p, link, device), rel=1e-12)


def test_impossible_schemes_fail_before_any_rank_starts():
    with pytest.raises(ValueError, match="3 layers cannot fill 4 pipeline stages"):
        serving.serve("pipeline", X, LAYERS, 4, transport="shm")
    with pytest.raises(ValueError, match="cannot split the 10 output columns of layer_2 over 12 ranks"):
        serving.serve("tensor", X, LAYERS, 12)
    with pytest.raises(ValueError, match="unknown scheme 'model'"):
        serving.serve("model", X, LAYERS, 2)
    with pytest.raises(ValueError, match="cannot cut a batch of 40 into 41 micro-batches"):
        serving.serve("pipeline", X, LAYERS, 2, micro_batches=41)


def _answers_without_tensorflow(c, layers, x):
    answers = {s: serving.make_server(s, layers, c.size, c.rank)(x, c) for s in ("data", "tensor", "pipeline")}
    return answers, "tensorflow" in sys.modules


def test_every_scheme_on_real_processes_without_tensorflow():
    run = comm.run(_answers_without_tensorflow, 2, transport="shm", args=(LAYERS, X))
    assert not any(loaded for _, loaded in run.values)
    for scheme in ("data", "tensor", "pipeline"):
        output = serving.collect(scheme, [answers[scheme] for answers, _ in run.values])
        np.testing.assert_allclose(output, REFERENCE, atol=1e-5, rtol=0)


def test_measured_on_shm_with_answers_checked():
    measured = serving.measure_serving(LAYERS, 2, X, batches=(1, 16), repeats=6, shards=True, off_cache=1 << 16)
    assert set(measured.times) == {(s, b) for s in ("data", "tensor", "pipeline", "shards") for b in (1, 16)}
    assert all(t > 0 for t in measured.times.values())
    assert set(measured.outputs) == {(s, b) for s in ("data", "tensor", "pipeline") for b in (1, 16)}  # no answer
    for (_, b), output in measured.outputs.items():
        np.testing.assert_allclose(output, REFERENCE[:b], atol=1e-5, rtol=0)


@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec next to this Python: pip install mpi4py mpich")
def test_measured_under_mpiexec_with_answers_checked():
    measured = serving.measure_serving(LAYERS, 2, X, batches=(3, 16), repeats=2, transport="mpi", shards=True)
    assert measured.transport == "mpi" and len(measured.times) == 8 and measured.times[("shards", 16)] > 0
    for (_, b), output in measured.outputs.items():
        np.testing.assert_allclose(output, REFERENCE[:b], atol=1e-5, rtol=0)


def test_serving_re_exports_the_measuring_module():
    """Chapter 6 needs one module: every public function, class and size list of labkit.serving_measure (but its
    mpiexec entry point, main) is also labkit.serving's, the same object."""
    defined = [
        name
        for name, value in vars(serving_measure).items()
        if not name.startswith("_")
        and name != "main"
        and (name.isupper() or getattr(value, "__module__", None) == serving_measure.__name__)
    ]
    assert {"measure_serving", "fit_ring_link", "fit_gather_link", "RING_SIZES", "BATCHES", "Measured"} <= set(defined)
    assert [name for name in defined if getattr(serving, name, None) is not getattr(serving_measure, name)] == []


def test_fit_device_recovers_the_device_that_made_the_times():
    device = tp.Device(flops=8e10, overhead=4e-6)
    times = {("data", b): serving.predict_time("single", b, LAYERS, 1, cost.Link(0, 0), device) for b in (1, 64, 1024)}
    fitted = serving.fit_device(serving.Measured("shm", 1, times, {}), LAYERS)
    assert fitted.flops == pytest.approx(8e10) and fitted.overhead == pytest.approx(4e-6)


def test_fit_ring_link_recovers_the_link_of_the_ring_times():
    link = cost.Link(alpha=15e-6, beta=1 / 5e9)
    times = {("ring", n): cost.allreduce_time("ring", n, 4, link) for n in (4096, 65536, 1 << 20)}
    fitted = serving.fit_ring_link(measure.Measurement("shm", 4, {}, allreduce=times))
    assert fitted.alpha == pytest.approx(15e-6) and fitted.beta == pytest.approx(1 / 5e9)
    checked = {key: t + 40e-6 for key, t in times.items()}  # every collective first checks shapes: 40 µs
    fitted = serving.fit_ring_link(measure.Measurement("shm", 4, {}, allreduce=checked, check=40e-6))
    assert fitted.alpha == pytest.approx(15e-6) and fitted.beta == pytest.approx(1 / 5e9)


def test_fit_gather_link_recovers_the_link_of_the_all_gather_times():
    link, p, check = cost.Link(alpha=22e-6, beta=1 / 3e9), 4, 40e-6
    times = {n: check + (p - 1) * link.message_time(n) for n in serving.GATHER_SIZES}
    fitted = serving.fit_gather_link(measure.Measurement("mpi", p, {}, check=check, allgather=times))
    assert fitted.alpha == pytest.approx(22e-6) and fitted.beta == pytest.approx(1 / 3e9)
    with pytest.raises(ValueError, match="gather_sizes=serving.GATHER_SIZES"):
        serving.fit_gather_link(measure.Measurement("mpi", p, {}, allgather={1024: 1e-4}))


def test_predict_time_all_gathers_on_the_gather_link():
    link, gather, device = cost.Link(2e-5, 1e-9), cost.Link(3e-5, 2e-9), tp.Device(flops=5e10, overhead=3e-6)
    for scheme, split in (("tensor", "megatron"), ("tensor-column", "column"), ("tensor-row", "row")):
        plain = serving.predict_time(scheme, 64, LAYERS, 3, link, device)
        pieces = [s for how, s in tp.shard_model(LAYERS, 3, 0, split) if how == "column"]
        # each column piece's all-gather: (p − 1) messages of rank 0's piece, on the other link
        want = sum(2 * (gather.message_time(64 * s.n_out * 4) - link.message_time(64 * s.n_out * 4)) for s in pieces)
        got = serving.predict_time(scheme, 64, LAYERS, 3, link, device, gather=gather) - plain
        assert got == pytest.approx(want) and (want > 0) == bool(pieces)


def test_the_gather_link_is_fitted_over_the_pieces_inference_all_gathers():
    lo, hi = min(serving.GATHER_SIZES), max(serving.GATHER_SIZES)
    for split in serving.SPLIT_OF.values():
        for p in (2, 4, 8):
            for how, shard in tp.shard_model(LAYERS, p, 0, split):
                if how == "column":
                    for b in (b for b in serving.BATCHES if b >= 64):
                        assert lo <= b * shard.n_out * shard.kernel.itemsize <= hi, (split, p, b)


def test_the_ring_link_is_fitted_over_the_sizes_inference_all_reduces():
    """serving.RING_SIZES spans every vector the tensor splits all-reduce for the batches the goal judges (B ≥ 64),
    at p = 2 … 8: a link is predicted where it was fitted, not extrapolated."""
    lo, hi = min(serving.RING_SIZES), max(serving.RING_SIZES)
    for scheme, split in serving.SPLIT_OF.items():
        for p in (2, 4, 8):
            for how, shard in tp.shard_model(LAYERS, p, 0, split):
                if how in ("row", "pair-row"):
                    for b in (b for b in serving.BATCHES if b >= 64):
                        nbytes = b * shard.n_out * shard.kernel.itemsize
                        assert lo <= nbytes <= hi, (scheme, p, b, nbytes)


def test_the_pipeline_link_is_fitted_over_the_sizes_it_sends():
    """serving.P2P_SIZES spans the activations a pipeline stage receives per micro-batch for B ≥ 64 (the default
    micro-batches, p = 2 and 3 stages of the article's MLP)."""
    lo, hi = min(serving.P2P_SIZES), max(serving.P2P_SIZES)
    for p in (2, 3):
        for b in (b for b in serving.BATCHES if b >= 64):
            rows = -(-b // serving.default_micro_batches(b, p))
            for stage in pl.stages(LAYERS, p)[1:]:
                nbytes = rows * LAYERS[stage[0]].n_in * 4
                assert lo <= nbytes <= hi, (p, b, nbytes)


def test_predict_time_charges_the_senders_cost_to_the_pipeline_only():
    link, device, send = cost.Link(2e-5, 1e-9), tp.Device(flops=5e10, overhead=3e-6), cost.Link(6e-6, 1 / 8e9)
    m = serving.default_micro_batches(64, 3)
    want = pl.pipeline_time(LAYERS, 64, 3, m, link, device, send=send)
    assert serving.predict_time("pipeline", 64, LAYERS, 3, link, device, send=send) == pytest.approx(want)
    assert want > serving.predict_time("pipeline", 64, LAYERS, 3, link, device)  # sending is not free
    for scheme in ("data", "tensor"):  # collectives: the fitted ring link already holds what the sender spends
        plain = serving.predict_time(scheme, 64, LAYERS, 3, link, device)
        assert serving.predict_time(scheme, 64, LAYERS, 3, link, device, send=send) == plain


def test_the_shape_check_counts_once_per_collective():
    link, device = cost.Link(2e-5, 1e-9), tp.Device(flops=5e10, overhead=3e-6)
    for scheme, collectives_per_batch in (("tensor", 2), ("tensor-column", 3), ("tensor-row", 3), ("data", 0)):
        # the article's MLP at p = 2: Megatron pairs dense_1 with dense_2 (one all-reduce), the softmax layer alone
        plain = serving.predict_time(scheme, 64, LAYERS, 2, link, device)
        checked = serving.predict_time(scheme, 64, LAYERS, 2, link, device, check=1e-3)
        assert checked - plain == pytest.approx(collectives_per_batch * 1e-3)


def test_the_replicas_device_predicts_the_replicas_exactly():
    """ "replicas": every rank the whole batch, so the device fitted to those times (the loaded device the
    benchmark computes data and pipeline on) predicts them exactly."""
    loaded = tp.Device(flops=4e10, overhead=7e-6)
    times = {("replicas", b): serving.predict_time("replicas", b, LAYERS, 4, cost.Link(0, 0), loaded) for b in (1, 64)}
    fitted = serving.fit_device(serving.Measured("shm", 4, times, {}), LAYERS)
    assert fitted.flops == pytest.approx(4e10) and fitted.overhead == pytest.approx(7e-6)


def test_latency_throughput_figure_and_table():
    times = {
        (s, b): serving.predict_time(s, b, LAYERS, 2, cost.preset("10 GbE"))
        for s in ("data", "tensor")
        for b in (1, 64)
    }
    fig, rows = serving.plot_latency_throughput({"modelled": times, "again": times}, "two panels")
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "latency of a batch (ms)"
    assert "requests/s" in fig.axes[1].get_xlabel() and fig.axes[0].get_title() == "modelled"
    assert ("modelled", "tensor", 64, times[("tensor", 64)], 64 / times[("tensor", 64)]) in rows
    text = serving.format_times(times, predicted=times)
    assert text.splitlines()[0].split()[:3] == ["batch", "data", "model"] and len(text.splitlines()) == 3


def test_ranks_sharing_cores_compute_p_over_cores_times_slower():
    device, link, free = tp.Device(flops=5e10, overhead=3e-6), cost.Link(2e-5, 1e-9), cost.Link(0, 0)
    for scheme in ("data", "tensor", "tensor-column", "tensor-row", "pipeline"):
        p = 3 if scheme == "pipeline" else 4  # three layers: at most three stages
        plain = serving.predict_time(scheme, 64, LAYERS, p, free, device)
        assert serving.predict_time(scheme, 64, LAYERS, p, free, device, cores=2) == pytest.approx(p / 2 * plain)
        assert serving.predict_time(scheme, 64, LAYERS, p, link, device, cores=p) == serving.predict_time(
            scheme, 64, LAYERS, p, link, device
        )  # a core each: nothing changes
    instant = tp.Device(flops=float("inf"), overhead=0.0)  # the messages alone are not slowed by the turns
    assert serving.predict_time("tensor", 64, LAYERS, 4, link, instant, cores=1) == serving.predict_time(
        "tensor", 64, LAYERS, 4, link, instant
    )
    with pytest.raises(ValueError, match="cores must be ≥ 1"):
        serving.predict_time("data", 64, LAYERS, 4, link, device, cores=0)


def test_batch_time_is_the_slowest_rank_less_an_empty_barrier(monkeypatch):
    """On a clock of its own (no wall time): a call takes 20 ms on rank 1 and nothing on rank 0, a barrier 1 ms on
    every rank; every rank reports the slowest rank's call-and-barrier less the fastest empty barrier, 20 ms."""
    import threading
    import types

    from labkit import serving_measure

    local = threading.local()

    def now():
        return getattr(local, "t", 0.0)

    def advance(seconds):
        local.t = now() + seconds

    monkeypatch.setattr(serving_measure, "time", types.SimpleNamespace(perf_counter=now))  # this module's clock only

    def timed(c):
        barrier = c.barrier

        def slow_barrier():
            barrier()
            advance(0.001)

        c.barrier = slow_barrier
        return serving.batch_time(c, lambda: advance(0.02 if c.rank == 1 else 0.0), repeats=3)

    values = comm.run(timed, 2).values  # sim: the ranks are threads of this process, each with its own clock
    assert values == [pytest.approx(0.021 - 0.001)] * 2


def test_shard_device_is_fitted_to_rank_0s_shards_timed_alone():
    device = tp.Device(flops=4e10, overhead=7e-6)
    pieces = tp.shard_model(LAYERS, 4, 0, "megatron")
    exact = {b: device.time(sum(s.flops(b) for _, s in pieces), calls=len(pieces)) for b in (1, 16, 256, 1024)}
    fitted = serving.fit_shard_device(exact, LAYERS, 4)
    assert fitted.flops == pytest.approx(device.flops, rel=1e-6)
    assert fitted.overhead == pytest.approx(device.overhead, rel=1e-6)
    measured = serving.shard_times(LAYERS, 4, (1, 64), repeats=3)
    assert set(measured) == {1, 64} and all(t > 0 for t in measured.values())
    cold = serving.shard_times(LAYERS, 4, (1, 64), repeats=3, off_cache=1 << 20)  # weights pushed out of the cache
    assert set(cold) == {1, 64} and all(t > 0 for t in cold.values())
