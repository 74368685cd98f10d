"""The MPI transport: mpi4py's COMM_WORLD behind labkit's `Comm`, for ``mpiexec -n P python -m mpi4py script.py``.

Arrays travel as buffers (``Send``/``Recv``/``Sendrecv`` on NumPy memory, never pickled). Every message starts
with a small header (byte count, shape, dtype, label) so that ``recv`` can allocate and ``recv_reduce`` can check
what arrives; payloads of at most ``INLINE`` bytes ride inside the header message, larger ones follow in a second
message with the same tag, which MPI delivers in order. ``send`` is MPI's standard send: a large message may wait
until the receiver posts its receive (exchange with ``sendrecv``, which never deadlocks).

Failures follow MPI's rules. A rank that dies makes mpiexec stop the whole job. An exception that escapes a rank
under ``python -m mpi4py`` calls MPI_Abort, which stops every rank (without ``-m mpi4py`` the others may wait
forever), so run scripts as ``mpiexec -n P python -m mpi4py script.py``. MPI calls have no timeout: a watchdog
thread prints what a rank waited for and aborts the job once a single wait passes ``timeout`` seconds.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

import numpy as np

from labkit.comm.base import CommBase, CommError, Message, check_acc, check_op, expect_like, reduce_into
from labkit.i18n import tr

TRACE_LIMIT = 100_000  # messages kept in MPIComm.trace (about 15 MB)
INLINE = 8192  # payloads this small travel inside the header message: one message instead of two
MAXDIM = 8
_HEADER = struct.Struct(f"<qq16s{MAXDIM}q48s")  # nbytes ndim dtype shape label
_HDR = _HEADER.size


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("labkit's MPI transport needs mpi4py and an MPI library: pip install mpi4py mpich") from e
    return MPI


def _as_bytes(x: np.ndarray) -> np.ndarray:
    """x's payload as a flat uint8 array (a view when x is contiguous)."""
    return np.ascontiguousarray(x).reshape(-1).view(np.uint8)


class _Watchdog(threading.Thread):
    """Abort the MPI job when one wait lasts longer than ``timeout`` (MPI calls cannot time out themselves)."""

    def __init__(self, comm: Any, rank: int, timeout: float) -> None:
        super().__init__(name="labkit-mpi-watchdog", daemon=True)
        self.comm, self.rank, self.timeout = comm, rank, timeout
        self.deadline, self.what = float("inf"), lambda: ""

    def arm(self, what) -> None:
        """Start the clock of a wait for ``what``: a function that says what is awaited (called only on timeout)."""
        self.what, self.deadline = what, time.monotonic() + self.timeout

    def disarm(self) -> None:
        self.deadline = float("inf")

    def run(self) -> None:
        while True:
            time.sleep(min(0.5, self.timeout / 4))
            if time.monotonic() > self.deadline:
                print(
                    tr(
                        "labkit: CommError: rank {r} waited {t:g} s for {what}: does that rank ever send it, or is it "
                        "stuck? Aborting the MPI job (pass a larger timeout= to from_mpi if the work really takes "
                        "that long)",
                        **dict(r=self.rank, t=self.timeout, what=self.what()),
                    ),
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(0.5)  # MPI_Abort kills the job at once: let mpiexec forward the message first
                self.comm.Abort(1)


class MPIComm(CommBase):
    """labkit's `Comm` over MPI's COMM_WORLD; every rank must create it (it starts with a barrier)."""

    def __init__(self, timeout: float = 30.0) -> None:
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._MPI = _import_mpi()
        self._comm = self._MPI.COMM_WORLD
        self.rank, self.size, self.timeout = self._comm.Get_rank(), self._comm.Get_size(), timeout
        self._sbuf, self._rbuf = np.empty(_HDR + INLINE, np.uint8), np.empty(_HDR + INLINE, np.uint8)
        self._scratch = np.empty(0, np.uint8)
        self._dog = _Watchdog(self._comm, self.rank, timeout)
        self._dog.start()
        # the messages this rank received, times from t0 on its clock; the newest TRACE_LIMIT only, so that a long
        # training run under mpiexec does not grow without bound
        self.trace: deque[Message] = deque(maxlen=TRACE_LIMIT)
        self.barrier()
        self.t0 = time.perf_counter()

    def __repr__(self) -> str:
        return f"MPIComm(rank={self.rank}, size={self.size})"

    def _pack(self, x: Any, label: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The header message for x (with the payload if it is small) and the payload message (if not)."""
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
        if x.dtype.hasobject or x.dtype.fields is not None or x.ndim > MAXDIM:
            raise TypeError(f"MPIComm sends numeric arrays of at most {MAXDIM} dimensions, got {x.dtype} {x.shape}")
        n, shape = x.nbytes, (*x.shape, *(0,) * (MAXDIM - x.ndim))
        _HEADER.pack_into(self._sbuf, 0, n, x.ndim, x.dtype.str.encode(), *shape, label.encode()[:48])
        if n > INLINE:
            return self._sbuf[:_HDR], _as_bytes(x)
        self._sbuf[_HDR : _HDR + n] = _as_bytes(x)
        return self._sbuf[: _HDR + n], None

    def _unpack(self) -> tuple[int, SimpleNamespace, str]:
        """Byte count, shape and dtype (as a stand-in array for expect_like) and label of the header received."""
        n, ndim, dtype, *rest = _HEADER.unpack_from(self._rbuf, 0)
        like = SimpleNamespace(shape=tuple(rest[:ndim]), dtype=np.dtype(dtype.rstrip(b"\0").decode()))
        return n, like, rest[MAXDIM].rstrip(b"\0").decode("utf-8", "replace")

    def _payload(self, n: int, like: SimpleNamespace, into: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Where the payload is (inline) or goes (into, or scratch): (array view, byte buffer still to receive)."""
        if n <= INLINE:
            data = self._rbuf[_HDR : _HDR + n]
            if into is None:
                return data.view(like.dtype).reshape(like.shape), None
            _as_bytes(into)[...] = data
            return into, None
        if into is None:
            if self._scratch.size < n:
                self._scratch = np.empty(n, np.uint8)
            into = self._scratch[:n].view(like.dtype).reshape(like.shape)
        return into, into.reshape(-1).view(np.uint8)

    def _exchange(self, x: Any, dst: int | None, src: int | None, tag: int, label: str, out: Any = None) -> Any:
        """Send x to dst and/or receive from src without deadlock; the incoming payload.

        out=None: a view of a scratch buffer; out=np.empty: a new array; out=an array: checked (shape and dtype
        must match, before anything lands in it), then received into it if it is contiguous.
        """
        MPI, comm, start = self._MPI, self._comm, time.perf_counter()
        head, big = self._pack(x, label) if dst is not None else (None, None)
        if src is None:
            self._dog.arm(lambda: tr("rank {dst} to receive", dst=dst))
        else:
            self._dog.arm(lambda: tr("a message from rank {src} (tag {tag})", src=src, tag=tag))
        try:
            if src is None:
                comm.Send([head, MPI.BYTE], dst, tag)
                if big is not None:
                    comm.Send([big, MPI.BYTE], dst, tag)
                return None
            if dst is None:
                comm.Recv([self._rbuf, MPI.BYTE], src, tag)
            else:
                comm.Sendrecv([head, MPI.BYTE], dst, tag, [self._rbuf, MPI.BYTE], src, tag)
            n, like, sent_label = self._unpack()
            if out is np.empty:
                out = np.empty(like.shape, like.dtype)
            elif out is not None:
                expect_like(out, like, src, self.rank)
                out = out if out.flags.c_contiguous else None
            data, rest = self._payload(n, like, out)
            if big is not None and rest is not None:
                comm.Sendrecv([big, MPI.BYTE], dst, tag, [rest, MPI.BYTE], src, tag)
            elif big is not None:
                comm.Send([big, MPI.BYTE], dst, tag)  # src's payload was inline: dst posts its receive regardless
            elif rest is not None:
                comm.Recv([rest, MPI.BYTE], src, tag)
        finally:
            self._dog.disarm()
        self.trace.append(Message(src, self.rank, n, start - self.t0, time.perf_counter() - self.t0, sent_label))
        return data

    def send(self, x: np.ndarray, dst: int, tag: int = 0, label: str = "") -> None:
        """MPI standard send of x to dst (a large message may wait for the matching receive)."""
        self._exchange(x, self._peer(dst, "dst"), None, self._tag(tag), label)

    def recv(self, src: int, tag: int = 0, label: str = "") -> np.ndarray:
        """The next message from (src, tag), as a new array."""
        return self._exchange(None, None, self._peer(src, "src"), self._tag(tag), label, np.empty)

    def sendrecv(self, x: np.ndarray, dst: int, src: int, tag: int = 0, label: str = "") -> np.ndarray:
        """Send x to dst while receiving from src (MPI_Sendrecv: no deadlock whatever the sizes)."""
        return self._exchange(x, self._peer(dst, "dst"), self._peer(src, "src"), self._tag(tag), label, np.empty)

    def recv_into(self, out: np.ndarray, src: int, tag: int = 0, label: str = "") -> None:
        """out ← the message from src (same shape and dtype), received straight into out when it is contiguous."""
        self._into(out, None, src, tag, label, None)

    def sendrecv_into(self, x: np.ndarray, dst: int, out: np.ndarray, src: int, tag: int = 0, label: str = "") -> None:
        """Send x to dst while receiving from src straight into out."""
        self._into(out, self._peer(dst, "dst"), src, tag, label, None, x)

    def recv_reduce(self, out: np.ndarray, src: int, tag: int = 0, op: str = "sum", label: str = "", acc=None) -> None:
        """out ← out op (the message from src), or acc op it, received into a scratch buffer."""
        self._into(out, None, src, tag, label, check_op(op), acc=acc)

    def sendrecv_reduce(
        self,
        x: np.ndarray,
        dst: int,
        out: np.ndarray,
        src: int,
        tag: int = 0,
        op: str = "sum",
        label: str = "",
        acc=None,
    ) -> None:
        """Send x to dst while receiving from src; out ← out op (what arrived), or acc op it."""
        self._into(out, self._peer(dst, "dst"), src, tag, label, check_op(op), x, acc)

    def _into(
        self, out: Any, dst: int | None, src: int, tag: int, label: str, ufunc: Any, x: Any = None, acc: Any = None
    ) -> None:
        """Receive into out (ufunc None) or reduce into it, after checking that shape and dtype agree."""
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array to receive into, got {type(out).__name__}")
        src, tag = self._peer(src, "src"), self._tag(tag)
        if acc is not None:
            check_acc(out, acc)
        if ufunc is None:
            data = self._exchange(x, dst, src, tag, label, out)
            if data is not out:
                np.copyto(out, data)
            return
        incoming = self._exchange(x, dst, src, tag, label, None)
        expect_like(out, incoming, src, self.rank)
        reduce_into(ufunc, out, incoming, acc)

    def barrier(self) -> None:
        """MPI_Barrier."""
        self._dog.arm(lambda: tr("every rank to reach the barrier"))
        try:
            self._comm.Barrier()
        finally:
            self._dog.disarm()

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's obj in rank order (mpi4py's pickle-based allgather; metadata, not in the trace)."""
        self._dog.arm(lambda: tr("every rank to call allgather_object"))
        try:
            return self._comm.allgather(obj)
        finally:
            self._dog.disarm()


__all__ = ["MPIComm", "CommError", "INLINE"]
