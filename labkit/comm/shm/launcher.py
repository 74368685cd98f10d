"""The ``"shm"`` transport: real processes on one machine, exchanging arrays through shared memory; measured.

`run_shm` starts one process a rank, each with a `labkit.comm.shm.mailbox.ShmComm` over the run's shared memory (the
mailboxes, and how a rank waits, are described there), collects what each rank returns, and watches for failures: a
rank that raises records its error in the control block; a rank that dies is noticed here and recorded the same way.
Every other rank then raises `CommError` naming that rank, and `run_shm` raises it too, after reaping every process
and unlinking every segment whose name starts with the run's prefix.

Ranks start from a fresh interpreter (forkserver: ~10 ms a rank once it runs; spawn where there is none), never by
forking a parent that may hold TensorFlow. Linux and macOS (POSIX shared memory); not Windows.

Each rank's temporary files go to a directory of the run's own (``TMPDIR`` and `tempfile.tempdir` point there),
which `run_shm` removes at the end: a rank's process ends with ``os._exit``, as multiprocessing's do, so clean-ups
registered with atexit never run there (TensorFlow's autograph leaves a file per traced function), and a rank that
is killed cleans up nothing.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing import connection
from typing import Any

import cloudpickle

from labkit.comm.base import CommError, Message, Run
from labkit.comm.shm.control import (
    _HEAD,
    _STATE,
    ABORTED,
    DIED,
    FAILED,
    SLOTS,
    _Aborted,
    _first_failure,
    _Layout,
    _record_failure,
    _segment,
    _unlink,
)
from labkit.comm.shm.mailbox import ShmComm
from labkit.i18n import tr

GRACE_S = 2.0  # after a failure, how long the other ranks get to notice and exit before they are terminated
_RUNS = itertools.count()

# --- the processes ------------------------------------------------------------------------------------------------


def _keep_freed_memory() -> None:
    """Make glibc reuse freed memory instead of returning it to the OS (this process is a rank and soon ends).

    Each fresh page costs a page fault, which in a VM is dear: a 1 MiB array that collectives allocate on every
    call otherwise costs ~400 µs more than copying it.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-4, 0)  # M_MMAP_MAX: large arrays from the heap, not fresh mappings
        libc.mallopt(-1, -1)  # M_TRIM_THRESHOLD: never give the top of the heap back
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _rank_main(prefix: str, rank: int, size: int, timeout: float, payload: bytes, conn: Any, tmp: str) -> None:
    """A rank's process: load fn, pass a barrier, time fn, send (status, …) back to the parent."""
    _keep_freed_memory()
    os.environ["TMPDIR"] = tempfile.tempdir = tmp  # the run's own, removed by run_shm (see the module's docstring)
    comm = None
    try:
        comm = ShmComm(prefix, rank, size, timeout)
        fn, args = cloudpickle.loads(payload)
        comm.barrier()  # the clock starts when every rank is ready
        start = time.perf_counter()
        value = fn(comm, *args)
        end = time.perf_counter()
        result = cloudpickle.dumps(("ok", value, comm.trace, start, end))
    except BaseException as e:  # noqa: B036 - every way a rank can end must reach the parent
        message = (
            str(e)
            if isinstance(e, CommError)
            else tr("rank {r} failed: {error}: {e}", r=rank, error=type(e).__name__, e=e)
        )
        if comm is not None:  # every rank waiting on this one raises too
            _record_failure(comm._b, comm._lay, rank, message, ABORTED if isinstance(e, _Aborted) else FAILED)
        result = cloudpickle.dumps(("error", message, traceback.format_exc(), isinstance(e, _Aborted)))
    conn.send_bytes(result)
    conn.close()
    if comm is not None:
        comm.close()


class _RemoteTraceback(Exception):
    """The traceback of the rank's process, shown as the cause of the CommError run_shm raises."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


def _context() -> Any:
    """forkserver where there is one (a fresh interpreter forks ranks in ms), else spawn; never fork."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(
            ["labkit.comm.shm.launcher", "labkit.collectives"]
        )  # not __main__: fn travels by value
        return ctx
    return mp.get_context("spawn")


def _died(proc: Any) -> str:
    proc.join(1.0)
    code = proc.exitcode
    if code is not None and code < 0:
        hint = tr(" (out of shared memory? see `df -h /dev/shm`)") if -code == signal.SIGBUS else ""
        name = signal.Signals(-code).name
        return tr(
            "rank {r} died: killed by signal {n} ({name}){hint}", r=proc.labkit_rank, n=-code, name=name, hint=hint
        )
    return tr("rank {r} died: its process exited with code {code} before returning", r=proc.labkit_rank, code=code)


def _watch(procs: list, conns: list, ctl: Any, lay: _Layout) -> list:
    """Collect each rank's result; a rank that dies sets the abort flag; give up on stragglers after GRACE_S."""
    results: list[Any] = [None] * len(procs)
    pending, q, give_up = set(range(len(procs))), ctl.buf.cast("q"), None
    try:
        while pending:
            waits = [conns[r] for r in pending] + [procs[r].sentinel for r in pending]
            ready = set(connection.wait(waits, timeout=0.1))
            for r in list(pending):
                if conns[r] not in ready and procs[r].sentinel not in ready:
                    continue
                try:
                    if conns[r].poll():
                        results[r] = cloudpickle.loads(conns[r].recv_bytes())
                        pending.discard(r)
                        if results[r][0] == "error" and not q[lay.rank(r) + _STATE]:  # it failed before it could
                            _record_failure(ctl.buf, lay, r, results[r][1], ABORTED if results[r][3] else FAILED)
                        continue
                except (EOFError, OSError):
                    pass
                if not procs[r].is_alive():
                    results[r] = ("died", _died(procs[r]))
                    _record_failure(ctl.buf, lay, r, results[r][1], DIED)
                    pending.discard(r)
            if give_up is None and (q[0] or any(res and res[0] != "ok" for res in results)):
                q[0], give_up = 1, time.monotonic() + GRACE_S
            if give_up is not None and time.monotonic() > give_up:
                break
    finally:
        q.release()
    return results


def _reap(procs: list) -> None:
    """Wait briefly for every rank, then terminate, then kill what is left."""
    for proc in procs:
        proc.join(0.5)
    for stop in ("terminate", "kill"):
        alive = [proc for proc in procs if proc.is_alive()]
        for proc in alive:
            getattr(proc, stop)()
        for proc in alive:
            proc.join(1.0)


def _clean_up(prefix: str, ctl: Any, lay: _Layout) -> None:
    """Unlink every segment of the run, including those of ranks that died before they could."""
    names = set()
    if os.path.isdir("/dev/shm"):
        names.update(n for n in os.listdir("/dev/shm") if n.startswith(prefix + "_"))
    q = ctl.buf.cast("q")
    for src, dst, k in itertools.product(range(lay.p), range(lay.p), range(SLOTS)):
        gen = q[lay.slot(src, dst, k) + _HEAD + 4]  # the last generation the sender created (or was creating)
        names.update(f"{prefix}_{src}_{dst}_{k}_{g}" for g in range(max(1, gen - 1), gen + 2) if gen)
    q.release()
    for name in sorted(names - {prefix + "_ctl"}):
        _unlink(name)
    ctl.close()
    ctl.unlink()


def _sweep_orphans() -> None:
    """Unlink the segments, and remove the temporary directories, of runs whose parent process died before it could
    clean up (a killed kernel)."""
    for name in os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []:
        if _orphan(name):
            _unlink(name)
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        if "_tmp" in name and _orphan(name):  # a run's temporary directory (see run_shm)
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


def _orphan(name: str) -> bool:
    """Whether name is a run's (labkit_<pid>_<run>…) whose parent process is gone."""
    if not name.startswith("labkit_"):
        return False
    try:
        os.kill(int(name.split("_")[1]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, IndexError, PermissionError):  # not ours to judge
        return False
    return False


def run_shm(fn: Callable[..., Any], p: int, timeout: float = 30.0, args: tuple = ()) -> Run:
    """Run ``fn(comm, *args)`` in ``p`` processes that communicate through shared memory; measure it.

    ``run.time`` is max(end) − min(start) of the fn calls, which start after a barrier; ``run.trace`` has every
    message received, with times relative to the earliest start. fn and args travel by value (cloudpickle), so
    functions defined in a notebook work. A rank that raises, dies or waits longer than ``timeout`` seconds makes
    every other rank raise `CommError`; then run_shm raises it too, with the first rank's traceback as the cause.
    """
    if sys.platform == "win32":  # segments vanish with their last handle there, and there is no sched_yield
        raise CommError("transport='shm' needs Linux or macOS: on Windows use WSL, or transport='sim'")
    _sweep_orphans()
    ctx, lay = _context(), _Layout(p)
    prefix = f"labkit_{os.getpid()}_{next(_RUNS)}"
    payload = cloudpickle.dumps((fn, tuple(args)))
    tmp = tempfile.mkdtemp(prefix=prefix + "_tmp")
    try:
        ctl = _segment(prefix + "_ctl", lay.size)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    procs: list[Any] = []
    conns: list[Any] = []
    try:
        for r in range(p):
            parent_end, child_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_rank_main,
                args=(prefix, r, p, timeout, payload, child_end, tmp),
                name=f"labkit-shm-rank-{r}",
                daemon=True,
            )
            proc.labkit_rank = r
            proc.start()
            child_end.close()
            procs.append(proc)
            conns.append(parent_end)
        results = _watch(procs, conns, ctl, lay)
        first = _first_failure(ctl.buf, lay)
    except BaseException:  # Ctrl-C in a notebook: stop every rank before cleaning up
        with ctl.buf.cast("q") as q:
            q[0] = 1
        raise
    finally:
        _reap(procs)
        for c in conns:
            c.close()
        _clean_up(prefix, ctl, lay)
        shutil.rmtree(tmp, ignore_errors=True)
    return _outcome(results, first)


def _outcome(results: list, first: tuple[int, str] | None) -> Run:
    """The Run of a world whose ranks all returned, else the CommError of the rank that failed first."""
    if all(res and res[0] == "ok" for res in results):
        start = min(res[3] for res in results)
        trace = [
            Message(src, dst, n, t0 - start, t1 - start, label)
            for res in results
            for src, dst, n, t0, t1, label in res[2]
        ]
        trace.sort(key=lambda m: (m.start, m.end, m.src, m.dst))
        return Run(values=[res[1] for res in results], trace=trace, time=max(res[4] for res in results) - start)
    if first is None:
        stuck = [r for r, res in enumerate(results) if res is None]
        raise CommError(f"rank(s) {stuck} did not stop within {GRACE_S:g} s after the run was aborted")
    rank, message = first
    res = results[rank]
    if res and res[0] == "error":
        raise CommError(message) from _RemoteTraceback(res[2])
    raise CommError(message)
