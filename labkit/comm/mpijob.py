"""``comm.run(fn, p, transport="mpi")``: the same function on p MPI processes, started from Python.

`run_mpi` writes ``fn`` and its arguments by value (cloudpickle, so a function defined in a notebook cell works)
to a folder of its own and starts ``mpiexec -n p python -m labkit.comm.mpijob FOLDER``. Every rank wraps
COMM_WORLD in `comm.from_mpi`, passes a barrier, calls ``fn(comm, *args)`` and writes what it returned, the messages
it received and its time to ``FOLDER/rank<r>.pkl``. A rank that raises writes its error and aborts the job, so the
others stop instead of waiting; `run_mpi` then raises `CommError` naming that rank. To run on many machines,
write a script and start it with ``mpiexec`` yourself (chapter 5 shows how).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

from labkit.comm import mpirun
from labkit.comm.base import CommError, Message, Run


def run_mpi(fn: Callable[..., Any], p: int, timeout: float = 30.0, args: tuple = ()) -> Run:
    """Run ``fn(comm, *args)`` on p MPI processes of this machine; ``run.time`` is the slowest rank's, measured."""
    launcher = mpirun.require_mpiexec()
    with tempfile.TemporaryDirectory(prefix="labkit-mpijob-") as tmp:
        folder = Path(tmp)
        (folder / "job.pkl").write_bytes(cloudpickle.dumps((fn, tuple(args), timeout)))
        argv = [launcher, "-n", str(p), sys.executable, "-m", "labkit.comm.mpijob", tmp]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # a rank is one core
        try:  # the watchdog in each rank stops a stuck job first; this bounds a launcher that never returns
            done = mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=timeout + 60, env=env)
        except subprocess.TimeoutExpired:
            raise CommError(f"mpiexec -n {p} did not finish within {timeout + 60:g} s; the job was stopped") from None
        results = {r: cloudpickle.loads(f.read_bytes()) for r in range(p) if (f := folder / f"rank{r}.pkl").exists()}
    failed = sorted(r for r, res in results.items() if res[0] == "error")
    if failed:
        raise CommError(f"rank {failed[0]} raised {results[failed[0]][1]}")
    if done.returncode != 0 or len(results) < p:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise CommError(f"mpiexec -n {p} failed (exit {done.returncode}):\n{tail}")
    trace = sorted((m for r in range(p) for m in results[r][2]), key=lambda m: (m.start, m.end, m.src, m.dst))
    return Run(values=[results[r][1] for r in range(p)], trace=trace, time=results[0][3])


def main(folder: str) -> None:
    """One rank of a `run_mpi` job (under mpiexec)."""
    from labkit import comm

    where = Path(folder)
    fn, args, timeout = cloudpickle.loads((where / "job.pkl").read_bytes())
    c = comm.from_mpi(timeout=timeout)
    c.barrier()
    start = time.perf_counter()
    try:
        value = fn(c, *args)
    except BaseException as e:  # tell the parent what happened, then stop every rank instead of letting them wait
        first = f"{type(e).__name__}: {e}".splitlines()[0]
        (where / f"rank{c.rank}.pkl").write_bytes(cloudpickle.dumps(("error", first, traceback.format_exc())))
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(1)
        raise
    seconds = max(c.allgather_object(time.perf_counter() - start))
    trace = [Message(m.src, m.dst, m.nbytes, m.start, m.end, m.label) for m in c.trace]
    (where / f"rank{c.rank}.pkl").write_bytes(cloudpickle.dumps(("ok", value, trace, seconds)))


if __name__ == "__main__":
    main(sys.argv[1])
