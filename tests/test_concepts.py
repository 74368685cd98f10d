"""labkit.concepts against independent references: numpy's matmul, a hand-written forward pass, the raw trace."""

import matplotlib
import numpy as np
import pytest

from labkit import check, collectives, comm, cost
from labkit.lessons import concepts

matplotlib.use("Agg")

LINK = cost.Link(alpha=5e-6, beta=1e-10)
SHAPES = [(3, 1, 1), (2, 3, 5), (4, 5, 3), (5, 7, 6), (3, 8, 8), (1, 2, 9)]  # (batch, d_in, d_out), some d < p


@pytest.mark.parametrize("n", [0, 1, 3, 8, 10])
@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_part_is_array_split(n, p):
    want = np.array_split(np.arange(n), p)
    assert [np.arange(n)[concepts.part(n, p, r)].tolist() for r in range(p)] == [a.tolist() for a in want]


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_data_parallel_gradient_equals_one_device(p):
    rng = np.random.default_rng(p)
    x, y, w = rng.normal(size=(10, 3)), rng.normal(size=10), rng.normal(size=3)
    run = comm.run(lambda c: concepts.simple_data_parallel_gradient(x, y, w, c), p, link=LINK)
    # reference: central finite differences of the mean squared error
    loss = lambda v: np.mean((x @ v - y) ** 2)
    eye = np.eye(3) * 1e-6
    numeric = np.array([(loss(w + e) - loss(w - e)) / 2e-6 for e in eye])
    np.testing.assert_allclose(concepts.mse_gradient(x, y, w), numeric, rtol=1e-6)
    for g in run.values:
        np.testing.assert_allclose(g, numeric, rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_tensor_parallel_matmuls_equal_numpy(shape, p):
    b, d_in, d_out = shape
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(b, d_in)), rng.normal(size=(d_in, d_out))
    for fn in (concepts.simple_row_parallel_matmul, concepts.simple_column_parallel_matmul):
        run = comm.run(lambda c, fn=fn: fn(x, w, c), p, link=LINK)
        for y in run.values:
            assert y.shape == (b, d_out)
            np.testing.assert_allclose(y, x @ w, rtol=1e-12, atol=1e-12)


def test_integer_tensor_parallel_is_exact_and_partials_add_up():
    rng = np.random.default_rng(1)
    x, w = rng.integers(-3, 4, size=(2, 6)), rng.integers(-3, 4, size=(6, 5))
    assert np.array_equal(sum(concepts.row_partial(x, w, r, 4) for r in range(4)), x @ w)
    for fn in (concepts.simple_row_parallel_matmul, concepts.simple_column_parallel_matmul):
        run = comm.run(lambda c, fn=fn: fn(x, w, c), 4, link=LINK)
        assert all(np.array_equal(y, x @ w) for y in run.values)


def test_row_parallel_sends_activations_not_weights():
    x, w = np.ones((2, 64)), np.ones((64, 3))
    run = comm.run(lambda c: concepts.simple_row_parallel_matmul(x, w, c, algorithm="ps"), 4, link=LINK)
    assert {m.nbytes for m in run.trace} == {2 * 3 * 8}  # one partial product (2 × 3 float64), never W


def reference_mlp(x, layers):
    """The sequential model written out: ReLU between layers, none after the last."""
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        x = np.where(x > 0, x, 0.0) if i < len(layers) - 1 else x
    return x


@pytest.mark.parametrize("p,n_layers,micro", [(1, 3, 2), (2, 2, 1), (2, 5, 3), (3, 4, 4), (4, 4, 4), (4, 6, 10)])
def test_pipeline_equals_the_sequential_model(p, n_layers, micro):
    layers = concepts.make_mlp(tuple([5] + [4] * n_layers), seed=p)
    x = np.random.default_rng(2).normal(size=(7, 5))
    run = comm.run(lambda c: concepts.simple_pipeline_forward(x, layers, c, micro_batches=micro), p, link=LINK)
    assert run.values[:-1] == [None] * (p - 1)
    np.testing.assert_allclose(run.values[-1], reference_mlp(x, layers), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(concepts.forward(x, layers), reference_mlp(x, layers), rtol=1e-12, atol=1e-12)
    assert len(run.trace) == (p - 1) * micro
    assert all(m.dst == m.src + 1 for m in run.trace)


def test_pipeline_stages_cover_the_layers_once():
    assert [list(concepts.stage_layers(6, 4, r)) for r in range(4)] == [[0, 1], [2, 3], [4], [5]]
    with pytest.raises(ValueError, match="use at most 3 ranks"):
        concepts.stage_layers(3, 4, 0)
    with pytest.raises(comm.CommError, match="micro_batches must be >= 1"):
        comm.run(lambda c: concepts.simple_pipeline_forward(np.ones((2, 2)), [], c, micro_batches=0), 1)


def test_show_buffers_table():
    before = concepts.demo_inputs(2, 3)
    run = comm.run(lambda c: collectives.reduce(before[c.rank], c), 2, link=LINK)
    text = concepts.show_buffers(before, run.values, run.trace)
    lines = text.splitlines()
    assert lines[0].split() == ["rank", "before", "after"]
    assert lines[1].split() == ["0", "[", "0", "1", "2]", "[", "10", "12", "14]"]
    assert lines[2].endswith("—")
    assert lines[3].startswith("1 message in 1 step, 24 B in all; rank 1 sends the most (24 B)")
    assert concepts.show_buffers([None], [np.array([0.5])]).splitlines()[1].split() == ["0", "—", "[", "0.5]"]


def test_format_trace_groups_messages_by_step():
    x = concepts.demo_inputs()
    run = comm.run(lambda c: collectives.allreduce(x[c.rank], c, algorithm="ring"), 4, link=LINK)
    lines = concepts.format_trace(run.trace).splitlines()
    assert lines[0].startswith("24 messages in 6 steps, 384 B in all")
    assert len(lines) == 7 and "reduce-scatter 1/3" in lines[1] and "0→1, 1→2, 2→3, 3→0" in lines[1]
    assert "16 B each" in lines[1] and lines[1].endswith("0.0–5.0 µs")
    flat = concepts.format_trace(run.trace, by_step=False).splitlines()
    assert len(flat) == 25 and flat[1].startswith("0 → 1     16 B")
    assert concepts.trace_summary([]) == "no messages"


def _bytes_by_sender(trace, p):
    return [sum(m.nbytes for m in trace if m.src == r) for r in range(p)]


def test_trace_summary_names_every_rank_that_ties_for_the_most_bytes():
    x = concepts.demo_inputs()
    ring = comm.run(lambda c: collectives.allreduce(x[c.rank], c, algorithm="ring"), 4, link=LINK).trace
    assert len(set(_bytes_by_sender(ring, 4))) == 1  # the reference: every rank sends 96 B
    assert "; every rank sends the same (96 B);" in concepts.trace_summary(ring)
    assert "sends the most" not in concepts.trace_summary(ring)

    reduce = comm.run(lambda c: collectives.reduce(x[c.rank], c), 4, link=LINK).trace
    assert _bytes_by_sender(reduce, 4) == [0, 64, 64, 64]  # rank 0 only receives
    assert "; ranks 1, 2 and 3 send the most (64 B each);" in concepts.trace_summary(reduce)

    def pairs(c):  # even ranks send to the odd rank after them; odd ranks send nothing
        if c.rank % 2 == 0:
            c.send(x[c.rank], c.rank + 1)
        else:
            c.recv(c.rank - 1)

    sent = comm.run(pairs, 4, link=LINK).trace
    assert "; ranks 0 and 2 send the most (64 B each);" in concepts.trace_summary(sent)

    ps = comm.run(lambda c: collectives.allreduce(x[c.rank], c, algorithm="ps"), 4, link=LINK).trace
    assert _bytes_by_sender(ps, 4) == [192, 64, 64, 64]
    assert "; rank 0 sends the most (192 B);" in concepts.trace_summary(ps)
    assert concepts.busiest_senders(ps) == ([0], 192, 4)


def test_phase_and_step():
    assert concepts.phase_and_step("reduce-scatter 2/3") == ("reduce-scatter", "2/3")
    assert concepts.phase_and_step("fold-in") == ("fold-in", "")


def test_timeline_draws_one_bar_per_message_of_the_trace():
    x = concepts.demo_inputs()
    traces = {}
    for alg in ("ps", "tree"):
        traces[alg] = comm.run(lambda c, a=alg: collectives.allreduce(x[c.rank], c, algorithm=a), 4, link=LINK).trace
    fig, rows = concepts.plot_timeline(traces, title="two all-reduces")
    assert fig._suptitle.get_text() == "two all-reduces"
    want = [(name, m.src, m.dst, m.start * 1e6, m.end * 1e6, m.label) for name, tr in traces.items() for m in tr]
    assert rows == want
    for ax, name in zip(fig.axes, traces, strict=True):
        assert ax.get_title() == name and ax.get_xlabel() == "modelled time (µs)" and ax.get_ylabel() == "rank"
        bars = ax.patches
        assert [(b.get_x(), b.get_y() + b.get_height() / 2) for b in bars] == [
            (r[3], r[1]) for r in rows if r[0] == name
        ]
        assert ax.get_legend() is not None
    fig, rows = concepts.plot_timeline(traces["ps"], title="ps only")
    assert fig.axes[0].get_title() == "ps only" and len(rows) == 6


@pytest.mark.parametrize("kind", ["data", "tensor", "pipeline"])
def test_diagrams_are_titled_and_labelled(kind):
    fig, got = concepts.draw_parallelism(kind)
    (ax,) = fig.axes
    assert got == kind and ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    with pytest.raises(ValueError, match="unknown kind"):
        concepts.draw_parallelism("expert")


def test_pipeline_diagram_has_a_forward_and_a_backward_per_stage_and_micro_batch():
    fig, _ = concepts.draw_parallelism("pipeline", p=3, micro_batches=2)
    labels = [t.get_text() for t in fig.axes[0].texts if t.get_text()[:1] in "FB" and t.get_text()[1:].isdigit()]
    assert sorted(labels) == sorted(["F1", "F2", "B1", "B2"] * 3)


def test_chapter_2_exercises_are_registered():
    exercises = {name: ex for name, ex in check.all_exercises().items() if ex.chapter == 2}
    assert set(exercises) >= {"ps_message_count", "reduce_scatter_sizes", "row_parallel_bytes", "pipeline_messages"}
    assert check.ps_message_count(30) and not check.ps_message_count(15)


def test_model_averaging_with_one_local_step_is_one_gradient_step_on_the_whole_batch():
    rng = np.random.default_rng(3)
    x, y, w = rng.normal(size=(10, 4)), rng.normal(size=10), rng.normal(size=4)
    run = comm.run(lambda c: concepts.simple_model_averaging(x, y, w, c, lr=0.05, local_steps=1), 4)
    gd = w - 0.05 * 2 / 10 * x.T @ (x @ w - y)  # one device, the whole batch, written out
    assert all(np.allclose(v, gd) for v in run.values)


def test_model_averaging_with_more_local_steps_is_the_weighted_mean_of_independently_trained_copies():
    rng = np.random.default_rng(4)
    x, y, w = rng.normal(size=(10, 3)), rng.normal(size=10), np.zeros(3)
    copies = []
    for rows in np.array_split(np.arange(10), 4):  # shards of 3, 3, 2, 2 examples
        v = w.copy()
        for _ in range(5):
            v = v - 0.1 * 2 / len(rows) * x[rows].T @ (x[rows] @ v - y[rows])
        copies.append(len(rows) / 10 * v)
    run = comm.run(lambda c: concepts.simple_model_averaging(x, y, w, c, lr=0.1, local_steps=5), 4)
    assert all(np.allclose(v, np.sum(copies, axis=0)) for v in run.values)
    gd = w.copy()
    for _ in range(5):
        gd = gd - 0.1 * concepts.mse_gradient(x, y, gd)
    assert not np.allclose(run.values[0], gd)  # more local steps: no longer plain gradient descent
