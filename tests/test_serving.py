"""labkit.serving: every scheme answers like one device on sim, shm and MPI; memory, model and errors are right."""

import sys

import numpy as np
import pytest

from labkit import comm, cost
from labkit.comm import mpirun
from labkit.parallel import pipeline as pl
from labkit.parallel import serving
from labkit.parallel import tensor as tp

MPIEXEC = mpirun.mpiexec()


LAYERS = tp.random_article_layers()
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


ALPHA, BETA = 2e-5, 1e-9  # the link of the hand-worked times below
INSTANT = tp.Device(flops=float("inf"), overhead=0.0)  # compute costs nothing: the messages alone


@pytest.mark.parametrize(
    ("scheme", "p", "micro_batches", "seconds"),
    [
        # the article's MLP (784 → 100 → 100 → 10), B = 64 float32 rows; n = 64 · width · 4 bytes
        # row split, p = 2: three ring all-reduces of the whole output, 2(p − 1)α + 2(p − 1)/p · nβ each
        ("tensor-row", 2, None, 3 * 2 * ALPHA + (25600 + 25600 + 2560) * BETA),
        # column split, p = 2: three all-gathers, (p − 1)(α + n_max β), n_max rank 0's half of each output
        ("tensor-column", 2, None, 3 * ALPHA + (12800 + 12800 + 1280) * BETA),
        # Megatron, p = 2: dense_1 (column) and dense_2 (row) paired, one all-reduce; the softmax layer gathers
        ("tensor", 2, None, 2 * ALPHA + 25600 * BETA + ALPHA + 1280 * BETA),
        # pipeline, 3 stages of one layer, M = 4 micro-batches of 16 rows: stages 1 and 2 each receive 16 · 100
        # float32; Σ d_s + (M − 1) max d_s = 2 d + 3 d
        ("pipeline", 3, 4, 5 * (ALPHA + 6400 * BETA)),
        ("data", 4, None, 0.0),  # replicas send nothing
    ],
)
def test_predict_time_is_the_messages_worked_out_by_hand(scheme, p, micro_batches, seconds):
    link = cost.Link(ALPHA, BETA)
    got = serving.predict_time(scheme, 64, LAYERS, p, link, INSTANT, micro_batches)
    assert got == pytest.approx(seconds, rel=1e-12, abs=1e-15)


def test_predict_time_of_replicas_is_a_quarter_of_the_rows_on_one_device():
    device = tp.Device(flops=5e10, overhead=3e-6)
    by_hand = 3 * 3e-6 + 2 * 16 * (784 * 100 + 100 * 100 + 100 * 10) / 5e10  # 16 of 64 rows, three layer calls
    assert serving.predict_time("data", 64, LAYERS, 4, cost.Link(ALPHA, BETA), device) == pytest.approx(by_hand)


@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec next to this Python: pip install mpi4py mpich")
def test_every_scheme_under_mpiexec_answers_like_one_device():
    for scheme in ("data", "tensor", "pipeline"):
        served = serving.serve(scheme, X, LAYERS, 2, transport="mpi")
        np.testing.assert_allclose(served.output, REFERENCE, atol=1e-5, rtol=0)
        assert served.time > 0 and len(served.run.values) == 2
