"""labkit.comm.shm: real processes exchanging through shared memory give exactly what was sent, and fail loudly.

Every test also checks, after the run, that no shared-memory segment of this process is left in /dev/shm and
that no rank process is still alive (fixture ``no_leaks``).
"""

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from labkit import collectives, comm
from labkit.comm import CommError
from labkit.comm.shm import control as shmblock

DTYPES = ["float32", "float64", "int8", "int64", "uint16", "bool", "complex128", "float16"]
SHAPES = [(), (0,), (1,), (5,), (3, 4), (2, 0, 3), (2, 3, 4, 5)]
PIECE = 1 << 16  # the streaming tests set comm.piece to this (whole messages are the default)


def _segments() -> set[str]:
    prefix = f"labkit_{os.getpid()}_"
    return {name for name in os.listdir("/dev/shm") if name.startswith(prefix)} if os.path.isdir("/dev/shm") else set()


def _alive(pid: int) -> bool:
    """True if pid runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(autouse=True)
def no_leaks():
    segments, children = _segments(), set(multiprocessing.active_children())
    yield
    assert _segments() - segments == set(), "a shared-memory segment outlived its run"
    assert set(multiprocessing.active_children()) - children == set(), "a rank process outlived its run"


def _pid_file(tmp_path: Path):
    """A function that writes the rank's pid under tmp_path, and one that lists the pids written."""

    def record(c):
        (tmp_path / f"pid{c.rank}").write_text(str(os.getpid()))

    return record, lambda: [int(f.read_text()) for f in tmp_path.glob("pid*")]


def test_point_to_point_round_trips_every_dtype_and_shape():
    cases = [(np.arange(int(np.prod(s)) + 1)[1:].reshape(s) % 7).astype(d) for d in DTYPES for s in SHAPES]
    cases += [np.arange(24.0).reshape(4, 6)[:, ::2], np.asfortranarray(np.arange(6).reshape(2, 3)), 3.5, [1, 2]]

    def exchange(c, cases):
        right, left = (c.rank + 1) % c.size, (c.rank - 1) % c.size
        got = [c.sendrecv(np.asarray(x) * (c.rank + 1), right, left) for x in cases]
        if c.rank == 0:  # plain send / recv, several queued to one peer before it receives
            for x in cases[:6]:
                c.send(x, 1, tag=5)
        elif c.rank == 1:
            got += [c.recv(0, tag=5) for _ in range(6)]
        return got

    run = comm.run(exchange, 3, transport="shm", args=(cases,))
    for rank, got in enumerate(run.values):
        left = (rank - 1) % 3
        for x, y in zip(cases, got[: len(cases)], strict=True):
            want = np.asarray(x) * (left + 1)
            assert y.dtype == want.dtype and y.shape == want.shape and np.array_equal(y, want)
    assert all(np.array_equal(y, np.asarray(x)) for x, y in zip(cases[:6], run.values[1][len(cases) :], strict=True))


def test_large_messages_grow_the_mailbox_and_arrive_intact():
    def big(c):
        out = []
        for n in (100_000, 16 * 2**20, 3_000_000):  # 16 Mi float32 = 64 MiB; then smaller again in the grown slot
            x = np.arange(n, dtype=np.float32) + c.rank
            y = c.sendrecv(x, 1 - c.rank, 1 - c.rank)
            out.append(bool(np.array_equal(y, np.arange(n, dtype=np.float32) + (1 - c.rank))))
        return out

    run = comm.run(big, 2, transport="shm")
    assert run.values == [[True] * 3] * 2
    assert max(m.nbytes for m in run.trace) == 64 * 2**20


def test_piece_is_whole_by_default_and_checked():
    def check(c):
        default = c.piece
        bad = []
        for value in (0, -1, 1.5, True, "1MiB"):
            try:
                c.piece = value
            except ValueError as e:
                bad.append("piece must be a number of bytes >= 1" in str(e))
        c.piece = 4096
        return default, bad, c.piece

    assert comm.run(check, 2, transport="shm").values == [(None, [True] * 5, 4096)] * 2


def test_large_sendrecvs_stream_in_pieces_and_any_receive_takes_them():
    n = 3 * PIECE // 8 + 5  # float64: three full pieces and 5 values more

    def stream(c):
        c.piece = PIECE
        other = 1 - c.rank
        x = np.arange(n, dtype=np.float64).reshape(-1, 1) * (c.rank + 1)  # 2-D: pieces carry the whole shape
        mine = np.arange(n, dtype=np.float64).reshape(-1, 1) * (other + 1)
        out = np.full_like(x, 0.5)
        c.sendrecv_reduce(x, other, out, other)  # both stream, interleaved
        got = [np.array_equal(out, mine + 0.5)]
        strided = np.zeros((n, 2))[:, :1]  # a non-contiguous out is filled too
        c.sendrecv_into(x, other, strided, other)
        got.append(np.array_equal(strided, mine))
        if c.rank == 0:  # a streamed message taken by a plain recv, recv_into and recv_reduce
            for _ in range(3):
                c.sendrecv_into(x, 1, np.empty_like(x), 1)
        else:
            c.send(x, 0)
            got.append(np.array_equal(c.recv(0), mine))
            into = np.empty_like(x)
            c.send(x, 0)
            c.recv_into(into, 0)
            got.append(np.array_equal(into, mine))
            acc = np.ones_like(x)
            c.send(x, 0)
            c.recv_reduce(acc, 0)
            got.append(np.array_equal(acc, mine + 1))
        return got

    run = comm.run(stream, 2, transport="shm")
    assert run.values == [[True] * 2, [True] * 5]
    assert len(run.trace) == 2 * 2 + 2 * 3  # one entry per message, not per piece
    assert {m.nbytes for m in run.trace} == {n * 8}


@pytest.mark.parametrize("p", [2, 3, 4])
def test_streamed_ring_allreduce_is_exact(p):
    n = 2 * p * PIECE // 8 + 1003  # each ring chunk spans more than two pieces

    def ring(c):
        c.piece = PIECE
        x = np.arange(n, dtype=np.int64) * (c.rank + 1) - 7 * c.rank
        expected = sum(np.arange(n, dtype=np.int64) * (r + 1) - 7 * r for r in range(c.size))
        return bool(np.array_equal(collectives.allreduce(x, c, algorithm="ring"), expected))

    run = comm.run(ring, p, transport="shm")
    assert run.values == [True] * p
    assert sum(m.nbytes for m in run.trace) == 2 * (p - 1) * n * 8  # every chunk passed on p − 1 times, twice


@pytest.mark.parametrize("op", ["sum", "max", "min"])
def test_recv_reduce_matches_numpy(op):
    rng = np.random.default_rng(0)
    inputs = {d: [rng.integers(-50, 50, size=(4, 25)).astype(d) for _ in range(3)] for d in ("int32", "float64")}
    inputs["float32"] = [rng.standard_normal(20_000).astype("float32") for _ in range(3)]  # > INLINE: a segment

    def reduce_all(c, inputs, op):
        got = {}
        for d, xs in inputs.items():
            out = xs[c.rank].copy()
            if c.rank == 0:  # receive and reduce from every other rank, one by one
                for src in range(1, c.size):
                    c.recv_reduce(out, src, op=op)
            else:
                c.send(xs[c.rank], 0)
            pair = xs[c.rank].copy()  # and a fused exchange: ranks 0 <-> 1 and 2 <-> 2 (itself)
            peer = {0: 1, 1: 0, 2: 2}[c.rank]
            c.sendrecv_reduce(xs[c.rank], peer, pair, peer, op=op)
            got[d] = (out, pair)
        return got

    run = comm.run(reduce_all, 3, transport="shm", args=(inputs, op))
    ufunc = comm.OPS[op]
    for d, xs in inputs.items():
        np.testing.assert_array_equal(run.values[0][d][0], getattr(np, op)(np.stack(xs), axis=0))
        for rank, peer in ((0, 1), (1, 0), (2, 2)):
            np.testing.assert_array_equal(run.values[rank][d][1], ufunc(xs[rank], xs[peer]))


def test_recv_into_and_sendrecv_into_fill_the_given_array():
    def into(c):
        out = np.zeros((3, 40_000), np.float32)  # a row is 160 kB, past INLINE: it comes from a segment
        c.sendrecv_into(np.full(40_000, c.rank + 1.0, np.float32), 1 - c.rank, out[1], 1 - c.rank)
        view = out[:, :5]  # not contiguous
        if c.rank == 0:
            c.send(np.arange(15, dtype=np.float32).reshape(3, 5), 1)
        else:
            c.recv_into(view, 0)
        try:
            c.recv_into(np.zeros(3), 1 - c.rank) if c.rank == 0 else c.send(np.zeros(4), 0)
        except CommError as e:
            return out, str(e)
        return out, None

    (out0, err0), (out1, _) = comm.run(into, 2, transport="shm").values
    assert np.array_equal(out0[1], np.full(40_000, 2.0)) and not out0[0].any() and not out0[2].any()
    assert np.array_equal(out1[:, :5], np.arange(15).reshape(3, 5)) and np.array_equal(out1[1, 5:], np.ones(39_995))
    assert "rank 1 sent shape (4,) float64, rank 0 expected (3,) float64" in err0


def test_tags_are_matched_and_same_tag_messages_stay_in_order():
    def tagged(c):
        if c.rank == 0:
            for tag, value in ((1, 10), (2, 20), (1, 11), (2, 21)):
                c.send(np.array([value]), 1, tag=tag)
            return None
        return [int(c.recv(0, tag=t)[0]) for t in (2, 2, 1, 1)]

    assert comm.run(tagged, 2, transport="shm").values[1] == [20, 21, 10, 11]


def test_closures_lambdas_args_values_and_trace():
    scale = 3.0  # captured by the closure: a spawned process cannot import it, so it travels by value

    def step(c, n):
        x = np.full(n, scale * (c.rank + 1))
        return collectives.allreduce(x, c, algorithm="ring")

    run = comm.run(step, 4, transport="shm", args=(10,))
    for value in run.values:
        np.testing.assert_array_equal(value, np.full(10, scale * 10))
    assert comm.run(lambda c: c.rank * 2, 3, transport="shm").values == [0, 2, 4]
    ring = [m for m in run.trace if m.label.startswith(("reduce-scatter", "all-gather"))]
    assert len(ring) == 2 * 3 * 4  # 2(p−1) steps, p messages each
    assert {(m.src, m.dst) for m in ring} == {(r, (r + 1) % 4) for r in range(4)}
    assert all(0 <= m.start <= m.end <= run.time + 1e-3 for m in run.trace)
    assert [m.start for m in run.trace] == sorted(m.start for m in run.trace)
    assert run.time > 0


def test_every_allreduce_algorithm_equals_the_sum():
    def check(c):
        x = np.arange(1001, dtype=np.int64) * (c.rank + 1)
        return [np.array_equal(collectives.allreduce(x, c, algorithm=a), x // (c.rank + 1) * 15) for a in names]

    names = list(collectives.ALGORITHMS)
    assert comm.run(check, 5, transport="shm").values == [[True] * len(names)] * 5


def test_barrier_and_allgather_object_repeat():
    def meta(c):
        seen = []
        for k in range(5):  # more calls than buffers: a rank can be one call ahead, never two
            c.barrier()
            seen.append(c.allgather_object({"rank": c.rank, "k": k, "name": "x" * c.rank}))
        return seen

    run = comm.run(meta, 3, transport="shm")
    want = [[{"rank": r, "k": k, "name": "x" * r} for r in range(3)] for k in range(5)]
    assert run.values == [want] * 3


def test_bad_arguments_name_the_fix():
    def bad(c):
        errors = []
        for call in (
            lambda: c.send(np.zeros(2), 5),
            lambda: c.send(np.array([object()]), 0),
            lambda: c.recv(0, tag=-1),
            lambda: c.allgather_object(b"x" * (shmblock.OBJ_BYTES + 1)),
        ):
            try:
                call()
            except (ValueError, TypeError, CommError) as e:
                errors.append(str(e))
        return errors

    errors = comm.run(bad, 1, transport="shm").values[0]
    assert "dst=5 is not a rank of this world of 1" in errors[0]
    assert "plain numeric arrays" in errors[1]
    assert "tag must be a whole number" in errors[2]
    assert "small metadata" in errors[3]


# --- failures: loud, on every rank, and nothing left behind -------------------------------------------------------


def test_shapes_that_differ_raise_comm_error():
    def mismatched(c):
        return collectives.allreduce(np.ones(10 + (c.rank == 2)), c)

    with pytest.raises(CommError, match=r"rank 2 sent shape \(11,\) float64, rank 0 expected \(10,\)"):
        comm.run(mismatched, 3, transport="shm")

    def reduce_wrong(c):
        if c.rank == 0:
            c.send(np.ones(3, np.int32), 1)
        else:
            c.recv_reduce(np.ones(3, np.float32), 0)

    with pytest.raises(CommError, match=r"rank 0 sent shape \(3,\) int32, rank 1 expected \(3,\) float32"):
        comm.run(reduce_wrong, 2, transport="shm")


@pytest.mark.parametrize("transport", ["sim", "shm"])
def test_reductions_with_acc_write_acc_op_incoming_into_out(transport):
    sizes = (7, 3 * PIECE // 8 + 1)  # whole and streamed on shm

    def reduce(c):
        if transport == "shm":
            c.piece = PIECE
        other, got = 1 - c.rank, []
        for n in sizes:
            acc, out = np.arange(n, dtype=np.float64), np.full(n, -1.0)
            c.sendrecv_reduce(np.full(n, c.rank + 2.0), other, out, other, op="max", acc=acc)
            got.append(np.array_equal(out, np.maximum(acc, other + 2.0)) and np.array_equal(acc, np.arange(n)))
            strided = np.zeros((n, 2))[:, 0]  # a non-contiguous out, acc read piece by piece
            c.sendrecv_reduce(np.full(n, 1.0), other, strided, other, acc=acc)
            got.append(np.array_equal(strided, acc + 1))
            if c.rank == 0:
                c.send(np.full(n, 3.0), 1)
            else:
                c.recv_reduce(out, 0, acc=acc)
                got.append(np.array_equal(out, acc + 3))
        with pytest.raises(ValueError, match="acc must be an array of out's shape"):
            c.recv_reduce(np.zeros(3), other, acc=np.zeros(4))
        return all(got)

    assert comm.run(reduce, 2, transport=transport).values == [True, True]


def test_streamed_messages_of_different_sizes_raise_comm_error():
    n = 2 * PIECE // 4

    def uneven(c):
        c.piece = PIECE
        x = np.ones(n - 5 * c.rank, np.float32)  # rank 1's is 20 bytes shorter: its last piece is short
        c.sendrecv_reduce(x, 1 - c.rank, x.copy(), 1 - c.rank)

    with pytest.raises(CommError, match="same shape and dtype"):
        comm.run(uneven, 2, transport="shm", timeout=20)


def test_a_rank_that_raises_fails_every_rank(tmp_path):
    record, pids = _pid_file(tmp_path)

    def step(c):
        record(c)
        if c.rank == 2:
            raise ValueError("boom")
        try:
            c.recv(2)  # waits for rank 2, which is gone
        except CommError as e:
            (tmp_path / f"err{c.rank}").write_text(str(e))
            raise

    with pytest.raises(CommError, match="rank 2 failed: ValueError: boom") as info:
        comm.run(step, 4, transport="shm", timeout=20)
    assert "in step" in str(info.value.__cause__)  # the rank's own traceback
    for r in (0, 1, 3):
        assert (tmp_path / f"err{r}").read_text() == "rank 2 failed: ValueError: boom"
    assert len(pids()) == 4 and not any(map(_alive, pids()))


def test_a_rank_killed_by_a_signal_fails_the_others_before_the_timeout(tmp_path):
    record, pids = _pid_file(tmp_path)

    def step(c):
        record(c)
        if c.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        c.recv(1)

    with pytest.raises(CommError, match=r"rank 1 died: killed by signal 9 \(SIGKILL\)"):
        comm.run(step, 3, transport="shm", timeout=30)  # "died", not "waited 30 s": noticed, not timed out
    assert len(pids()) == 3 and not any(map(_alive, pids()))


def test_a_receive_no_one_answers_times_out():
    def step(c):
        if c.rank == 0:
            c.recv(1, tag=4, label="the answer")

    with pytest.raises(CommError, match=r"rank 0 waited 0.5 s for a message from rank 1 \(tag 4, the answer\)"):
        comm.run(step, 2, transport="shm", timeout=0.5)


def test_a_value_that_cannot_be_returned_is_an_error():
    import threading

    with pytest.raises(CommError, match="rank 0 failed: TypeError: cannot pickle"):
        comm.run(lambda c: threading.Lock(), 1, transport="shm")


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm to ask")
def test_a_mailbox_too_large_for_shared_memory_names_the_fix():
    with pytest.raises(CommError, match=r"shared memory \(/dev/shm\) has .* MiB free.*--shm-size"):
        shmblock._check_room(2**60)


@pytest.mark.slow
def test_ranks_start_without_tensorflow_even_if_the_parent_has_it():
    pytest.importorskip("tensorflow")
    # As in a notebook: TensorFlow first, then a run. A forked child would inherit TensorFlow's thread pools and may
    # deadlock; labkit starts ranks from a fresh interpreter (forkserver or spawn), which never imports it.
    script = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow
from labkit import comm
print(comm.run(lambda c: "tensorflow" in sys.modules, 2, transport="shm").values)
"""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[False, False]"


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm to list")
def test_segments_of_a_dead_parent_are_swept_by_the_next_run():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = shmblock._segment(f"labkit_{int(dead.stdout)}_0_ctl", 4096)  # as if that process had been killed mid-run
    orphan.close()
    comm.run(lambda c: None, 1, transport="shm")
    assert not Path("/dev/shm", orphan.name.lstrip("/")).exists()


def test_temporary_files_of_the_ranks_go_with_the_run(tmp_path, monkeypatch):
    # A rank ends with os._exit, so its atexit clean-ups never run (TensorFlow's autograph registers one per file).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def step(c):
        import atexit

        f = tempfile.NamedTemporaryFile(delete=False)
        f.close()
        atexit.register(os.unlink, f.name)
        return f.name, os.environ["TMPDIR"]

    for name, tmp in comm.run(step, 2, transport="shm").values:
        assert Path(name).parent == Path(tmp) and Path(tmp).parent == tmp_path and Path(tmp).name.startswith("labkit_")
    assert not Path(tmp).exists() and not list(tmp_path.glob("labkit_*"))  # (multiprocessing may add a pymp-* here)


def test_a_killed_rank_leaves_no_temporary_files(tmp_path, monkeypatch):
    names, tmp = tmp_path / "names", tmp_path / "tmp"
    names.mkdir(), tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    def step(c):
        f = tempfile.NamedTemporaryFile(delete=False)
        f.close()
        (names / str(c.rank)).write_text(f.name)
        if c.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        c.recv(1)

    with pytest.raises(CommError, match="rank 1 died"):
        comm.run(step, 2, transport="shm", timeout=30)
    files = [Path(f.read_text()) for f in names.iterdir()]
    assert len(files) == 2 and not any(f.exists() for f in files) and not list(tmp.glob("labkit_*"))


def test_temporary_directories_of_a_dead_parent_are_swept_by_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan, alive = tmp_path / f"labkit_{int(dead.stdout)}_0_tmpab12", tmp_path / f"labkit_{os.getpid()}_99_tmpcd34"
    for d in (orphan, alive):
        d.mkdir()
        (d / "__autograph_generated_file.py").write_text("")
    comm.run(lambda c: None, 1, transport="shm")
    assert not orphan.exists() and alive.exists()  # a running parent's directory is its own to remove
