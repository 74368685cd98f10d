"""labkit.collectives against an independent reference: np.sum / np.max / np.min over a stacked rank axis."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import collectives, comm, cost
from labkit.comm import CommError

ALGORITHMS = list(collectives.ALGORITHMS)
DTYPES = ["int8", "uint16", "int32", "int64", "float32", "float64", "complex128"]
OPS = ["sum", "max", "min"]
CASES = [(d, op) for d in DTYPES for op in OPS if not (d.startswith("complex") and op != "sum")]


def inputs(p, shape, dtype, seed=0):
    """One array per rank; integers wrap around on overflow, like the reference."""
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype).kind
    if kind in "iu":
        return [rng.integers(0 if kind == "u" else -100, 100, size=shape).astype(dtype) for _ in range(p)]
    if kind == "c":
        return [(rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype) for _ in range(p)]
    return [rng.standard_normal(shape).astype(dtype) for _ in range(p)]


def reference(xs, op):
    stack = np.stack(xs)
    if op == "sum":
        return np.sum(stack, axis=0, dtype=stack.dtype)  # dtype=: np.sum would widen small integers
    return np.max(stack, axis=0) if op == "max" else np.min(stack, axis=0)


def assert_matches(got, want, case):
    assert isinstance(got, np.ndarray), case
    assert got.shape == want.shape and got.dtype == want.dtype, (case, got.shape, got.dtype)
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=str(case))  # integers: bit-exact
    else:
        tol = 1e-5 if want.dtype in (np.float32, np.complex64) else 1e-12
        scale = max(1.0, float(np.max(np.abs(want), initial=0)))
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale * 10, err_msg=str(case))


def run_all(transport, p, calls):
    """Run every call (collective name, keyword arguments, each rank's input) in ONE world; each rank's results."""

    def rank_main(c, calls):  # nested, so that cloudpickle sends it to "shm" processes by value
        from labkit import collectives

        return [getattr(collectives, name)(xs[c.rank], c, **kwargs) for name, kwargs, xs in calls]

    return comm.run(rank_main, p, transport=transport, args=(calls,)).values


def lengths(p):
    return sorted({0, 1, max(p - 1, 0), p, 1003})


def allreduce_calls(p, cases):
    calls, expected = [], []
    for algorithm in ALGORITHMS:
        for n in lengths(p):
            for dtype, op in cases:
                xs = inputs(p, (n,), dtype, seed=n)
                calls.append(("allreduce", {"algorithm": algorithm, "op": op}, xs))
                expected.append(((algorithm, n, dtype, op), reference(xs, op)))
    return calls, expected


def other_calls(p):
    """broadcast, reduce, reduce_scatter and allgather, each with its expected result per rank."""
    calls, expected = [], []
    for n in lengths(p):
        for dtype, op in [("int32", "sum"), ("float64", "max"), ("uint16", "min")]:
            xs = inputs(p, (n,), dtype, seed=n + 1)
            want = reference(xs, op)
            root = (n + 1) % p
            calls.append(("broadcast", {"root": root}, [x if r == root else None for r, x in enumerate(xs)]))
            expected.append((("broadcast", n, dtype), [xs[root]] * p))
            calls.append(("reduce", {"root": root, "op": op}, xs))
            expected.append((("reduce", n, dtype, op), [want if r == root else None for r in range(p)]))
            calls.append(("reduce_scatter", {"op": op}, xs))
            expected.append((("reduce_scatter", n, dtype, op), np.array_split(want, p)))
            pieces = [x[: max(0, n - r % 3)] for r, x in enumerate(xs)]  # lengths differ, like MPI_Allgatherv
            calls.append(("allgather", {}, pieces))
            expected.append((("allgather", n, dtype), [np.concatenate(pieces)] * p))
    return calls, expected


def check(values, expected, per_rank):
    for i, (case, want) in enumerate(expected):
        for r, results in enumerate(values):
            w = want[r] if per_rank else want
            if w is None:
                assert results[i] is None, (case, r)
            else:
                assert_matches(results[i], w, (*case, f"rank {r}"))


@pytest.mark.parametrize("p", range(1, 10))
def test_allreduce_matches_reference_on_sim(p):
    calls, expected = allreduce_calls(p, CASES)
    check(run_all("sim", p, calls), expected, per_rank=False)


@pytest.mark.parametrize("p", range(1, 10))
def test_other_collectives_match_reference_on_sim(p):
    calls, expected = other_calls(p)
    check(run_all("sim", p, calls), expected, per_rank=True)


@pytest.mark.parametrize("p", range(1, 10))
def test_every_collective_matches_reference_on_shm(p):  # one world per p: starting processes is slow
    calls, expected = allreduce_calls(p, [("int32", "sum"), ("float64", "max")])
    more_calls, more_expected = other_calls(p)
    values = run_all("shm", p, calls + more_calls)
    check([v[: len(calls)] for v in values], expected, per_rank=False)
    check([v[len(calls) :] for v in values], more_expected, per_rank=True)


@settings(max_examples=60, deadline=None, database=None)
@given(
    p=st.integers(1, 9),
    shape=st.sampled_from([(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (40,)]),
    case=st.sampled_from(CASES),
    algorithm=st.sampled_from(ALGORITHMS),
    seed=st.integers(0, 2**16),
)
def test_allreduce_property(p, shape, case, algorithm, seed):
    dtype, op = case
    xs = inputs(p, shape, dtype, seed)
    copies = [x.copy() for x in xs]
    values = run_all("sim", p, [("allreduce", {"algorithm": algorithm, "op": op}, xs)])
    for r in range(p):
        assert_matches(values[r][0], reference(copies, op), (algorithm, shape, dtype, op))
        np.testing.assert_array_equal(xs[r], copies[r])  # the input is untouched
        assert not np.shares_memory(values[r][0], xs[r])  # the result is a new array


@settings(max_examples=30, deadline=None, database=None)
@given(p=st.integers(1, 9), shape=st.sampled_from([(), (0,), (5,), (3, 4)]), case=st.sampled_from(CASES))
def test_reduce_scatter_and_allgather_property(p, shape, case):
    dtype, op = case
    xs = inputs(p, shape, dtype, seed=p)
    values = run_all("sim", p, [("reduce_scatter", {"op": op}, xs), ("allgather", {}, xs)])
    chunks = np.array_split(reference(xs, op).ravel(), p)
    for r in range(p):
        assert_matches(values[r][0], chunks[r], ("reduce_scatter", shape, dtype, op))
        assert_matches(values[r][1], np.concatenate([np.atleast_1d(x) for x in xs]), ("allgather", shape, dtype))


# --- the steps can be read off the trace -------------------------------------------------------------------------


def trace_of(algorithm, p, n=8):
    return comm.run(lambda c: collectives.allreduce(np.ones(n), c, algorithm=algorithm), p).trace


def test_ring_labels_say_phase_and_step():
    labels = {m.label for m in trace_of("ring", 4)}
    assert labels == {f"{phase} {k}/3" for phase in ("reduce-scatter", "all-gather") for k in (1, 2, 3)}


def test_ps_gathers_to_the_master_and_sends_back():
    trace = trace_of("ps", 3)
    assert [(m.src, m.dst, m.label) for m in trace] == [
        (1, 0, "gather to master 1/2"),
        (2, 0, "gather to master 2/2"),
        (0, 1, "send back 1/2"),
        (0, 2, "send back 2/2"),
    ]


def test_tree_reduces_from_r_plus_1_2_4_and_broadcasts_farthest_first():
    trace = trace_of("tree", 8)
    to_root = [m.src for m in trace if m.dst == 0]
    assert to_root == [1, 2, 4]
    from_root = [(m.dst, m.label) for m in trace if m.src == 0]
    assert from_root == [(4, "broadcast 1/3"), (2, "broadcast 2/3"), (1, "broadcast 3/3")]


def test_non_powers_of_two_fold_in_first_and_out_last():
    for algorithm in ("recursive_doubling", "halving_doubling"):
        trace = trace_of(algorithm, 6)
        assert [(m.src, m.dst) for m in trace if m.label == "fold-in"] == [(4, 0), (5, 1)]
        assert [(m.src, m.dst) for m in trace if m.label == "fold-out"] == [(0, 4), (1, 5)]
        fold_in_end = next(m.end for m in trace if m.label == "fold-in" and m.dst == 0)
        assert all(m.start >= fold_in_end for m in trace if m.src == 0 and m.label != "fold-in")
        assert trace[-1].label == "fold-out"
    assert {m.label for m in trace_of("halving_doubling", 4)} == {
        "reduce-scatter 1/2",
        "reduce-scatter 2/2",
        "all-gather 1/2",
        "all-gather 2/2",
    }


# --- inputs that disagree are named on every rank -----------------------------------------------------------------


def errors_on_every_rank(fn, p):
    """Each rank's CommError message (the rank fn catches it and returns it)."""

    def rank_main(c):
        try:
            fn(c)
        except CommError as e:
            return str(e)
        return None

    return comm.run(rank_main, p).values


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_shapes_that_differ_raise_on_every_rank(algorithm):
    def fn(c):
        collectives.allreduce(np.ones(10 if c.rank == 2 else 12, np.float32), c, algorithm=algorithm)

    for message in errors_on_every_rank(fn, 4):
        assert message.startswith("rank 2 sent shape (10,) float32, rank 0 expected (12,) float32")


def test_dtypes_that_differ_raise_on_every_rank_and_fail_the_run():
    def fn(c):
        collectives.allreduce(np.ones(5, np.float64 if c.rank == 1 else np.float32), c)

    for message in errors_on_every_rank(fn, 3):
        assert "rank 1 sent shape (5,) float64, rank 0 expected (5,) float32" in message
    with pytest.raises(CommError, match="rank 1 sent shape"):
        comm.run(fn, 3)


def test_broadcast_and_allgather_check_what_they_can():
    def wrong_piece(c):
        collectives.allgather(np.ones((2, 3 if c.rank else 4)), c)

    for message in errors_on_every_rank(wrong_piece, 3):
        assert "rank 1 sent shape (2, 3) float64, rank 0 expected (…, 4) float64" in message

    def wrong_buffer(c):
        collectives.broadcast(np.ones(3) if c.rank != 1 else np.ones(4), c, root=0)

    for message in errors_on_every_rank(wrong_buffer, 3):
        assert "rank 1 passed shape (4,) float64, the root (rank 0) broadcasts (3,) float64" in message

    with pytest.raises(CommError, match=r"ValueError: the root \(rank 1\) passed None"):
        comm.run(lambda c: collectives.broadcast(None, c, root=1), 2)
    with pytest.raises(CommError, match="root=2 is not a rank"):
        comm.run(lambda c: collectives.reduce(np.ones(3), c, root=2), 2)


def test_the_algorithms_are_the_ones_the_cost_model_knows():
    assert tuple(collectives.ALGORITHMS) == cost.ALGORITHMS


def test_bad_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="halving_doubling"):
        collectives.allreduce(np.ones(3), None, algorithm="butterfly")
    with pytest.raises(ValueError, match=r"\['max', 'min', 'sum'\]"):
        collectives.allreduce(np.ones(3), None, op="mean")
    with pytest.raises(CommError, match="numeric arrays only"):
        comm.run(lambda c: collectives.allreduce(np.array(["a", "b"]), c), 2)


@pytest.mark.parametrize("algorithm", list(collectives.ALGORITHMS))
@pytest.mark.parametrize("transport", ["sim", "shm"])
def test_allreduce_into_out_equals_the_sum_and_reuses_the_buffer(algorithm, transport):
    def fn(c):
        x = np.arange(1003, dtype=np.int64).reshape(17, 59) * (c.rank + 1)
        out = np.full_like(x, -1)
        first = collectives.allreduce(x, c, algorithm=algorithm, out=out)
        second = collectives.allreduce(2 * x, c, algorithm=algorithm, out=out)
        return first is out, second is out, out

    p = 3
    run = comm.run(fn, p, transport=transport)
    expected = 2 * np.arange(1003, dtype=np.int64).reshape(17, 59) * sum(range(1, p + 1))
    for same_first, same_second, out in run.values:
        assert same_first and same_second
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "make_out, message",
    [
        (lambda x: np.empty(9, np.float32), "shape and dtype"),
        (lambda x: np.empty(10, np.float64), "shape and dtype"),
        (lambda x: np.empty(20, np.float32)[::2], "C-contiguous"),
        (lambda x: x, "in-place"),
    ],
)
def test_allreduce_out_must_fit_and_not_alias_x(make_out, message):
    def fn(c):
        x = np.ones(10, np.float32)
        return collectives.allreduce(x, c, out=make_out(x))

    with pytest.raises((ValueError, CommError), match=message):
        comm.run(fn, 1)


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 1003])
def test_simple_ring_allreduce_equals_np_sum_and_the_fast_ring(p, n):
    xs = inputs(p, (n,), "int64", seed=p * 100 + n)
    simple = comm.run(lambda c: collectives.simple_ring_allreduce(xs[c.rank], c), p)
    fast = comm.run(lambda c: collectives.ring_allreduce(xs[c.rank], c), p)
    for got in simple.values + fast.values:
        assert_matches(got, reference(xs, "sum"), (p, n))
    # the same chunks travel between the same neighbours in the same steps; only the buffers and timing differ
    assert sorted((m.label, m.src, m.dst, m.nbytes) for m in simple.trace) == sorted(
        (m.label, m.src, m.dst, m.nbytes) for m in fast.trace
    )


def test_simple_ring_allreduce_keeps_shape_and_dtype_and_leaves_the_input_alone():
    xs = [np.arange(12, dtype=np.float32).reshape(3, 4) * (r + 1) for r in range(3)]
    before = [x.copy() for x in xs]
    run = comm.run(lambda c: collectives.simple_ring_allreduce(xs[c.rank], c), 3)
    for got in run.values:
        assert_matches(got, reference(xs, "sum"), "2-D float32")
    assert all(np.array_equal(x, b) for x, b in zip(xs, before, strict=True))


def test_simple_ring_allreduce_on_shared_memory_processes():
    def rank_main(c):  # nested, so that cloudpickle sends it to "shm" processes by value
        import numpy as np

        from labkit import collectives

        return collectives.simple_ring_allreduce(np.arange(1003, dtype=np.int64) * (c.rank + 1), c)

    run = comm.run(rank_main, 5, transport="shm")
    for got in run.values:
        np.testing.assert_array_equal(got, np.arange(1003, dtype=np.int64) * 15)


def test_simple_ring_allreduce_orders_send_and_receive_so_blocking_sends_cannot_deadlock():
    """Odd ranks receive before they send: on the sim their sends start only once a receive has ended."""
    link = cost.Link(alpha=1e-6, beta=1e-9)
    run = comm.run(lambda c: collectives.simple_ring_allreduce(np.ones(8), c), 4, link=link)
    for m in run.trace:
        if m.src % 2 == 1:
            assert any(o.dst == m.src and o.label == m.label and o.end <= m.start for o in run.trace), m
        else:
            assert not any(o.dst == m.src and o.label == m.label and o.end <= m.start for o in run.trace), m
