"""labkit.comm.mpi: the same algorithms under ``mpiexec -n 3 python -m mpi4py``, and MPI's loud failures."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labkit.comm import mpi, mpirun

pytestmark = pytest.mark.mpi
MPIEXEC = mpirun.mpiexec()
ROOT = Path(__file__).resolve().parent.parent
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec next to this Python: pip install mpi4py mpich")

PREAMBLE = """\
import sys
import numpy as np
from labkit import comm
c = comm.from_mpi(timeout=float(sys.argv[1]))
p, r = c.size, c.rank
"""


def run_mpi(tmp_path: Path, body: str, timeout: float = 10.0, n: int = 3) -> subprocess.CompletedProcess:
    """Run PREAMBLE + body on n ranks; MPICH's own segments that an aborted job leaves behind are removed."""
    script = tmp_path / "script.py"
    script.write_text(PREAMBLE + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", str(script), str(timeout)]
    return mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


@needs_mpiexec
def test_point_to_point_under_mpiexec(tmp_path):
    result = run_mpi(
        tmp_path,
        """
        right, left = (r + 1) % p, (r - 1) % p
        for dtype in ("float32", "float64", "int8", "int64", "bool", "complex128", "float16"):
            for shape in ((), (0,), (5,), (3, 4), (2, 0, 3), (3000, 7)):  # 3000 x 7: over INLINE, two messages
                x = (np.arange(int(np.prod(shape))).reshape(shape) % 5 + r).astype(dtype)
                y = c.sendrecv(x, right, left, label="ring")
                want = (np.arange(int(np.prod(shape))).reshape(shape) % 5 + left).astype(dtype)
                assert y.dtype == want.dtype and y.shape == want.shape and np.array_equal(y, want), (dtype, shape)
        for n in (10, 100_000):
            out = np.full(n, 1.0)
            c.sendrecv_reduce(np.full(n, float(r)), right, out, left)
            assert np.array_equal(out, np.full(n, 1.0 + left))
            c.sendrecv_reduce(np.full(n, float(r)), right, out, left, acc=np.full(n, 5.0))  # out <- acc + incoming
            assert np.array_equal(out, np.full(n, 5.0 + left))
        if r == 0:
            c.send(np.arange(4, dtype=np.int32), 1, tag=3)
            c.send(np.ones((2, 3)).T, 1, tag=4)  # not contiguous
        elif r == 1:
            total = np.full(4, 10, np.int32)
            c.recv_reduce(total, 0, tag=3, op="max")
            assert np.array_equal(total, [10, 10, 10, 10]), total
            assert np.array_equal(c.recv(0, tag=4), np.ones((3, 2)))
        into = np.zeros((2, 5000))
        c.sendrecv_into(np.full(5000, float(r)), right, into[1], left)  # over INLINE: straight into the row
        assert np.array_equal(into[1], np.full(5000, float(left))) and not into[0].any()
        c.sendrecv_into(np.full((2, 3), float(r)), right, into[:, :3], left)  # not contiguous: through scratch
        assert np.array_equal(into[:, :3], np.full((2, 3), float(left)))
        assert c.allgather_object(r * 2) == [0, 2, 4]
        c.barrier()
        assert c.trace and all(m.dst == r and m.start <= m.end for m in c.trace)
        oks = c.allgather_object(f"OK {r}")
        if r == 0:  # one rank prints: mpiexec interleaves the ranks' output character by character
            print(*oks, flush=True)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK 0 OK 1 OK 2"


@needs_mpiexec
def test_every_allreduce_algorithm_equals_the_sum_under_mpi(tmp_path):
    pytest.importorskip("labkit.collectives")
    result = run_mpi(
        tmp_path,
        """
        from labkit import collectives
        for n in (0, 1, 1000, 100_001):
            x = np.arange(n, dtype=np.int64) * (r + 1)
            for name in collectives.ALGORITHMS:
                assert np.array_equal(collectives.allreduce(x, c, algorithm=name), x // (r + 1) * 6), (name, n)
        if c.allgather_object("OK") == ["OK"] * p and r == 0:
            print("OK", flush=True)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


@needs_mpiexec
def test_a_receive_no_one_answers_aborts_the_job(tmp_path):
    result = run_mpi(tmp_path, "if r == 0:\n    c.recv(1, tag=7)\nc.barrier()\n", timeout=1.0)
    assert result.returncode != 0
    assert "rank 0 waited 1 s for a message from rank 1 (tag 7)" in result.stderr


@needs_mpiexec
def test_an_exception_or_a_shape_mismatch_aborts_every_rank(tmp_path):
    result = run_mpi(tmp_path, "if r == 2:\n    raise ValueError('boom')\nc.recv((r + 1) % p)\n", timeout=60)
    assert result.returncode != 0 and "ValueError: boom" in result.stderr  # long before the 60 s timeout
    mismatch = "from labkit import collectives\ncollectives.allreduce(np.ones(3 + (r == 1)), c)\n"
    result = run_mpi(tmp_path, mismatch, timeout=60)
    assert result.returncode != 0 and "CommError: rank 1 sent shape (4,) float64" in result.stderr


def test_without_mpi4py_the_error_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match="pip install mpi4py mpich"):
        mpi.MPIComm()


@needs_mpiexec
def test_the_trace_keeps_only_the_newest_messages(tmp_path):
    result = run_mpi(
        tmp_path,
        """
        from labkit.comm import mpi
        mpi.TRACE_LIMIT = 5
        short = mpi.MPIComm(timeout=float(sys.argv[1]))
        for i in range(12):
            short.sendrecv(np.full(3, i, np.float32), (r + 1) % p, (r - 1) % p, label=f"step {i}")
        assert [m.label for m in short.trace] == [f"step {i}" for i in range(7, 12)], list(short.trace)
        print("ok", r)
        """,
        n=2,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok") == 2  # one line per rank (their lines may interleave)


@needs_mpiexec
def test_run_on_mpi_gives_every_rank_the_sum_and_a_trace():
    import numpy as np

    from labkit import collectives, comm

    def step(c, n):  # defined here, not importable by the ranks: it travels by value
        return collectives.allreduce(np.arange(n, dtype=np.float64) * (c.rank + 1), c, algorithm="ring")

    run = comm.run(step, 3, transport="mpi", args=(10,))
    want = np.sum([np.arange(10.0) * (r + 1) for r in range(3)], axis=0)
    assert len(run.values) == 3 and all(np.array_equal(v, want) for v in run.values)
    assert len(run.trace) == 2 * (3 - 1) * 3 and run.time > 0  # the ring: 2(p-1) messages from every rank


@needs_mpiexec
def test_run_on_mpi_names_the_rank_that_raised_and_leaks_nothing():
    from labkit import comm

    def fail_on_one(c):
        if c.rank == 1:
            raise ValueError("rank one gives up")
        return c.recv(1)  # would wait for ever without the abort

    before = {n for n in os.listdir("/dev/shm") if n.startswith("mpich")}
    with pytest.raises(comm.CommError, match="rank 1 raised ValueError: rank one gives up"):
        comm.run(fail_on_one, 2, transport="mpi", timeout=60)
    assert {n for n in os.listdir("/dev/shm") if n.startswith("mpich")} <= before
