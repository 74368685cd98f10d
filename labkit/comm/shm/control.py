"""The control block of a ``"shm"`` run: where every counter, header, error and inline payload lives in the shared
memory that all ranks map, the segments that hold larger payloads, how a failed rank is recorded there, and
`_Control`, one rank's view of it: waiting on a counter, barrier and allgather_object.

Every counter has a single writer, so there are no locks for a dead process to hold. `mailbox.ShmComm` (one rank's
end of the mailboxes) and `launcher.run_shm` (the processes) both read and write it through `_Layout`.

Waiting spins on a counter for ``SPIN_S`` seconds (only when every rank has a core of its own), then yields the
core for up to ``YIELD_S``, then sleeps a little longer each time, checking the run's abort flag and the timeout.
A rank that raises records its error in the control block and raises the flag; the parent watches the processes
and does the same for a rank that dies. Every other rank then raises `CommError` naming that rank, and `run_shm`
raises it too, after reaping every process and unlinking every segment whose name starts with the run's prefix.
"""

from __future__ import annotations

import os
import pickle
import platform
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

import cloudpickle

from labkit.comm.base import CommError
from labkit.i18n import tr

SLOTS = 4  # messages in flight per (src, dst) before a send waits; ps and ring need at most 2
INLINE = 32 * 1024  # payloads this small stay in the control block: no segment to create or attach
OBJ_BYTES = 64 * 1024  # room per rank for allgather_object's pickle (metadata, not arrays)
ERR_BYTES = 4096  # room per rank for its error message
MAXDIM = 8
SPIN_S, YIELD_S, MAX_SLEEP_S = 50e-6, 20e-3, 1e-3  # spin (a core each: µs replies), yield (ms-long steps), sleep

RUNNING, FAILED, ABORTED, DIED = 0, 1, 2, 3  # a rank's state in the control block
_RANK_WORDS, _STATE, _BARRIER, _OBJGEN, _OBJLEN, _ERRLEN, _FAILED_AT = 8, 0, 1, 2, 3, 5, 6
_SLOT_WORDS, _POSTED, _HEAD, _CONSUMED = 32, 0, 1, 24  # CONSUMED (the receiver's word) on a cache line of its own
_PAIR_WORDS = 8 + SLOTS * _SLOT_WORDS  # word 0: messages sent on the pair so far
_TRACK = {"track": False} if sys.version_info >= (3, 13) else {}

if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):

    def _fence() -> None:
        """Nothing to do: x86 keeps stores in order and loads in order, which is all the mailboxes need."""

else:  # release then acquire of a lock is a full barrier on weaker memory models (ARM, POWER)
    _FENCE_LOCK = threading.Lock()
    _FENCE_LOCK.acquire()

    def _fence() -> None:
        """Order the payload and header before the counter that publishes them."""
        _FENCE_LOCK.release()
        _FENCE_LOCK.acquire()


class _Aborted(CommError):
    """Raised on a rank because another rank failed first."""


class _Layout:
    """Where things are in the control block of a world of p ranks (word indices, byte offsets)."""

    def __init__(self, p: int) -> None:
        self.p, self.pairs = p, 8 + p * _RANK_WORDS  # word 0: the abort flag
        self.err = (self.pairs + p * p * _PAIR_WORDS) * 8
        self.obj = self.err + p * ERR_BYTES
        self.inline = self.obj + 2 * p * OBJ_BYTES
        self.size = self.inline + p * p * SLOTS * INLINE  # tmpfs gives pages on first touch: unused room is free

    def rank(self, r: int) -> int:
        return 8 + r * _RANK_WORDS

    def slot(self, src: int, dst: int, k: int) -> int:
        return self.pairs + (src * self.p + dst) * _PAIR_WORDS + 8 + k * _SLOT_WORDS

    def sent(self, src: int, dst: int) -> int:
        return self.pairs + (src * self.p + dst) * _PAIR_WORDS

    def inline_at(self, src: int, dst: int, k: int) -> int:
        return self.inline + ((src * self.p + dst) * SLOTS + k) * INLINE


def _segment(name: str, size: int = 0) -> shared_memory.SharedMemory:
    """Create (size > 0) or attach a segment; unlinked once, by its creator or by run_shm's clean-up."""
    # Before Python 3.13 attaching registers the name with the resource tracker again; its registry is a set and
    # the one unlink unregisters it, so nothing is reported as leaked.
    return shared_memory.SharedMemory(name, create=size > 0, size=size, **_TRACK)


def _unlink(name: str) -> None:
    try:
        seg = _segment(name)
    except FileNotFoundError:
        return
    seg.close()
    seg.unlink()


def _check_room(nbytes: int) -> None:
    """Raise CommError, naming the fix, if shared memory has no room for nbytes (else pages fail with SIGBUS)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:  # no /dev/shm to ask (macOS): let the OS say
        return
    free = st.f_bavail * st.f_frsize
    if free < nbytes:
        raise CommError(
            f"shared memory (/dev/shm) has {free / 2**20:.0f} MiB free, a mailbox needs {nbytes / 2**20:.0f} MiB:"
            " send smaller arrays or give the machine more (e.g. docker run --shm-size=2g)"
        )


def _first_failure(b: memoryview, lay: _Layout) -> tuple[int, str] | None:
    """(rank, message) of the rank that failed or died first, by the time it was recorded; None if none did."""
    q, d = b.cast("q"), b.cast("d")
    failed = [r for r in range(lay.p) if q[lay.rank(r) + _STATE] in (FAILED, DIED)]
    first = min(failed, key=lambda r: d[lay.rank(r) + _FAILED_AT], default=None)
    message = None if first is None else bytes(b[lay.err + first * ERR_BYTES :][: q[lay.rank(first) + _ERRLEN]])
    q.release()
    d.release()
    return None if first is None else (first, message.decode("utf-8", "replace"))


def _record_failure(b: memoryview, lay: _Layout, rank: int, message: str, state: int) -> None:
    """Write rank's error and state into the control block, then raise the abort flag."""
    q, d, data = b.cast("q"), b.cast("d"), message.encode("utf-8", "replace")[:ERR_BYTES]
    b[lay.err + rank * ERR_BYTES : lay.err + rank * ERR_BYTES + len(data)] = data
    q[lay.rank(rank) + _ERRLEN] = len(data)
    d[lay.rank(rank) + _FAILED_AT] = time.perf_counter()
    _fence()
    q[lay.rank(rank) + _STATE] = state
    _fence()
    q[0] = 1
    q.release()
    d.release()


class _Control:
    """One rank's view of the control block: waiting on its counters (and failing when another rank failed),
    barrier and allgather_object. `labkit.comm.shm.mailbox.ShmComm` adds the mailboxes."""

    def __init__(self, prefix: str, rank: int, size: int, timeout: float) -> None:
        self.rank, self.size, self.timeout = rank, size, timeout
        self._prefix, self._lay = prefix, _Layout(size)
        self._ctl = _segment(prefix + "_ctl")
        self._b = self._ctl.buf
        self._q = self._b.cast("q")
        self._barriers = self._gathers = 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self._spin = SPIN_S if size <= cores else 0.0  # more ranks than cores: yield at once, the peer needs ours

    # --- waiting and failing ------------------------------------------------------------------------------------

    def _wait(self, ready: Callable[[], bool], what: str | Callable[[], str]) -> None:
        """Return once ready() holds; raise CommError if another rank failed or after `timeout` seconds (``what`` it
        waits for, or a function that says it: the words are made only when they are shown)."""
        q, start = self._q, time.perf_counter()
        nap = 20e-6
        while True:
            for _ in range(32):
                if ready():
                    return
            if q[0]:
                first = _first_failure(self._b, self._lay)
                raise _Aborted(first[1] if first else "the run was stopped by the process that started it")
            waited = time.perf_counter() - start
            if waited > self.timeout:
                raise CommError(
                    tr(
                        "rank {r} waited {t:g} s for {what}: does that rank ever send it, or is it stuck? (pass a "
                        "larger timeout= if its work really takes that long)",
                        **dict(r=self.rank, t=self.timeout, what=what() if callable(what) else what),
                    )
                )
            if waited < self._spin:
                continue
            if waited < YIELD_S:
                os.sched_yield()
            else:
                time.sleep(nap)
                nap = min(2 * nap, MAX_SLEEP_S)

    # --- metadata -----------------------------------------------------------------------------------------------

    def barrier(self) -> None:
        """Wait until every rank has called barrier as often as this one."""
        self._barriers += 1
        b, q, lay = self._barriers, self._q, self._lay
        q[lay.rank(self.rank) + _BARRIER] = b
        for r in range(self.size):
            i = lay.rank(r) + _BARRIER
            if q[i] < b:
                self._wait(lambda i=i: q[i] >= b, f"rank {r} to reach barrier {b}")

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's obj, in rank order (small pickles through the control block; not in the trace)."""
        g, q, lay = self._gathers, self._q, self._lay
        try:
            data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            data = cloudpickle.dumps(obj)
        if len(data) > OBJ_BYTES:
            raise CommError(
                f"allgather_object got {len(data)} pickled bytes on rank {self.rank}, more than {OBJ_BYTES}:"
                " it exchanges small metadata; send arrays with send/recv or the collectives"
            )
        at = lay.obj + (2 * self.rank + g % 2) * OBJ_BYTES  # two buffers: a rank may be one call ahead, not two
        self._b[at : at + len(data)] = data
        q[lay.rank(self.rank) + _OBJLEN + g % 2] = len(data)
        _fence()
        q[lay.rank(self.rank) + _OBJGEN] = g + 1
        values = []
        for r in range(self.size):
            i = lay.rank(r) + _OBJGEN
            if q[i] <= g:
                self._wait(lambda i=i: q[i] > g, f"rank {r} to call allgather_object (call {g + 1})")
            _fence()
            at = lay.obj + (2 * r + g % 2) * OBJ_BYTES
            values.append(pickle.loads(self._b[at : at + q[lay.rank(r) + _OBJLEN + g % 2]]))
        self._gathers = g + 1
        return values

    def close(self) -> None:
        """Unmap the control block."""
        _close([self._ctl])
        self._b = self._q = None  # type: ignore[assignment]


def _close(segments: list) -> None:
    for seg in segments:
        try:
            seg.close()
        except BufferError:  # an array still views it; the mapping goes when the process ends
            pass
