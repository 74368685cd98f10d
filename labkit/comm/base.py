"""What every transport shares: the `Comm` interface, `Message`, `Run`, `CommError`, and `CommBase`, which builds
the fused calls (receive-and-reduce, receive-into) from the four a transport must have: send, recv, sendrecv,
barrier. A transport overrides the fused calls only where it can do them faster.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Reductions a collective may ask for; each is an elementwise NumPy ufunc (``out`` may alias the first input).
OPS: dict[str, np.ufunc] = {"sum": np.add, "max": np.maximum, "min": np.minimum}


class CommError(RuntimeError):
    """A communication failed: a rank died or raised, inputs disagree between ranks, or a receive timed out."""


@dataclass(frozen=True)
class Message:
    """One message of a trace: ``nbytes`` of payload from ``src`` to ``dst`` during [start, end] seconds."""

    src: int
    dst: int
    nbytes: int
    start: float
    end: float
    label: str = ""
    payload: np.ndarray | None = field(default=None, compare=False, repr=False)  # kept on sim with payloads=True


@dataclass
class Run:
    """What `run` returns: each rank's return value, every message sent, and the time in seconds.

    ``compute`` lists the modelled compute spans that ranks declared with ``comm.compute`` (sim only):
    ``(rank, start, end, label)``, so a timeline can show work beside messages.
    """

    values: list[Any]
    trace: list[Message] = field(default_factory=list)
    time: float = 0.0
    compute: list[tuple[int, float, float, str]] = field(default_factory=list)


@runtime_checkable
class Comm(Protocol):
    """What an algorithm may use: the mpi4py-like point-to-point calls, plus fused receive-and-reduce.

    ``recv_reduce`` and ``sendrecv_reduce`` let a transport reduce straight out of its receive buffer (one copy
    fewer on ``"shm"``, a modelled ``n*gamma`` on ``"sim"``): out ← out op incoming, or with ``acc=a``,
    out ← a op incoming (one pass over memory instead of copying a into out first). ``recv_into`` and
    ``sendrecv_into`` copy what arrives straight into the caller's array. ``allgather_object`` exchanges small metadata
    (shapes, dtypes) for consistency checks; it is not a message of the trace and costs no modelled time.
    """

    rank: int
    size: int

    def send(self, x: np.ndarray, dst: int, tag: int = 0, label: str = "") -> None: ...

    def recv(self, src: int, tag: int = 0, label: str = "") -> np.ndarray: ...

    def sendrecv(self, x: np.ndarray, dst: int, src: int, tag: int = 0, label: str = "") -> np.ndarray: ...

    def barrier(self) -> None: ...

    def recv_reduce(
        self, out: np.ndarray, src: int, tag: int = 0, op: str = "sum", label: str = "", acc: np.ndarray | None = None
    ) -> None: ...

    def sendrecv_reduce(
        self,
        x: np.ndarray,
        dst: int,
        out: np.ndarray,
        src: int,
        tag: int = 0,
        op: str = "sum",
        label: str = "",
        acc: np.ndarray | None = None,
    ) -> None: ...

    def recv_into(self, out: np.ndarray, src: int, tag: int = 0, label: str = "") -> None: ...

    def sendrecv_into(
        self, x: np.ndarray, dst: int, out: np.ndarray, src: int, tag: int = 0, label: str = ""
    ) -> None: ...

    def allgather_object(self, obj: Any) -> list[Any]: ...


def check_op(op: str) -> np.ufunc:
    """The ufunc for a reduction name, or a ValueError that lists the names there are."""
    try:
        return OPS[op]
    except KeyError:
        raise ValueError(f"unknown op {op!r}: use one of {sorted(OPS)}") from None


def check_acc(out: np.ndarray, acc: Any) -> None:
    """Raise ValueError unless acc (the other operand of a reduction into out) has out's shape and dtype."""
    if not isinstance(acc, np.ndarray) or acc.shape != out.shape or acc.dtype != out.dtype:
        got = f"{acc.shape} {acc.dtype}" if isinstance(acc, np.ndarray) else type(acc).__name__
        raise ValueError(f"acc must be an array of out's shape {out.shape} and dtype {out.dtype}, got {got}")


def reduce_into(ufunc: np.ufunc, out: np.ndarray, incoming: np.ndarray, acc: np.ndarray | None) -> None:
    """out ← acc op incoming (acc None: out op incoming); acc must have out's shape and dtype."""
    if acc is None:
        ufunc(out, incoming, out=out)
        return
    check_acc(out, acc)
    ufunc(acc, incoming, out=out)


def expect_like(out: np.ndarray, incoming: np.ndarray, src: int, rank: int) -> None:
    """Raise `CommError` unless a received array has the shape and dtype this rank expected."""
    if incoming.shape != out.shape or incoming.dtype != out.dtype:
        raise CommError(
            f"rank {src} sent shape {incoming.shape} {incoming.dtype}, rank {rank} expected {out.shape} {out.dtype}:"
            " every rank must pass arrays of the same shape and dtype"
        )


class CommBase:
    """Everything beyond send, recv, sendrecv and barrier, built from them: fused receive-and-reduce, receive-into,
    allgather_object. A transport overrides them only where it can do better."""

    rank: int
    size: int
    eager = False  # True where a send never waits for its receiver (see EagerComm)

    def _peer(self, value: Any, name: str) -> int:
        """A valid rank number (for dst= or src=), or a ValueError that says which ranks there are."""
        if type(value) is int and 0 <= value < self.size:  # the common case, first: it runs for every message
            return value
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < self.size:
            raise ValueError(f"{name}={value!r} is not a rank of this world of {self.size}: use 0..{self.size - 1}")
        return int(value)

    @staticmethod
    def _tag(tag: Any) -> int:
        """A valid message tag (a whole number >= 0), or a ValueError."""
        if not isinstance(tag, (int, np.integer)) or isinstance(tag, bool) or tag < 0:
            raise ValueError(f"tag must be a whole number >= 0, got {tag!r}")
        return int(tag)

    def compute(self, seconds: float, label: str = "") -> None:
        """Declare that this rank computes for ``seconds``: the sim advances its clock; real transports, which
        spend the real time computing, ignore it."""

    def recv_reduce(self, out: np.ndarray, src: int, tag: int = 0, op: str = "sum", label: str = "", acc=None) -> None:
        """out ← out op (the array received from src); with ``acc``, out ← acc op it."""
        ufunc = check_op(op)
        if acc is not None:  # before any message is taken: a bad acc leaves the mailbox as it was
            check_acc(out, acc)
        incoming = self.recv(src, tag, label)  # type: ignore[attr-defined]
        expect_like(out, incoming, src, self.rank)
        reduce_into(ufunc, out, incoming, acc)

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
        ufunc = check_op(op)
        if self.eager:  # the send cannot block: send, then reduce straight out of what arrives (`recv_reduce`)
            self.send(x, dst, tag, label)  # type: ignore[attr-defined]
            self.recv_reduce(out, src, tag, op, label, acc=acc)
            return
        if acc is not None:  # before any message is taken: a bad acc leaves the mailbox as it was
            check_acc(out, acc)
        incoming = self.sendrecv(x, dst, src, tag, label)  # type: ignore[attr-defined]
        expect_like(out, incoming, src, self.rank)
        reduce_into(ufunc, out, incoming, acc)

    def recv_into(self, out: np.ndarray, src: int, tag: int = 0, label: str = "") -> None:
        """out ← the array received from src (same shape and dtype, or CommError)."""
        incoming = self.recv(src, tag, label)  # type: ignore[attr-defined]
        expect_like(out, incoming, src, self.rank)
        out[...] = incoming

    def sendrecv_into(self, x: np.ndarray, dst: int, out: np.ndarray, src: int, tag: int = 0, label: str = "") -> None:
        """Send x to dst while receiving from src into out."""
        if self.eager:
            self.send(x, dst, tag, label)  # type: ignore[attr-defined]
            self.recv_into(out, src, tag, label)
            return
        incoming = self.sendrecv(x, dst, src, tag, label)  # type: ignore[attr-defined]
        expect_like(out, incoming, src, self.rank)
        out[...] = incoming

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's (small, picklable) obj in rank order, passed around a ring with sendrecv (p − 1 steps).

        The default for a transport that has only the four calls; sim, shm and MPI exchange it as metadata, outside
        the trace and the modelled time."""
        items: list[Any] = [None] * self.size
        items[self.rank] = obj
        blob = np.frombuffer(pickle.dumps(obj), np.uint8)
        right, left = (self.rank + 1) % self.size, (self.rank - 1) % self.size
        for k in range(1, self.size):
            blob = self.sendrecv(blob, right, left, label="allgather_object")  # type: ignore[attr-defined]
            items[(self.rank - k) % self.size] = pickle.loads(blob.tobytes())
        return items


class EagerComm(CommBase):
    """For transports whose send never waits for the receiver (sim, shm): every exchange is a send, then a receive.

    Both partners of a swap send first and then receive, which cannot deadlock because neither send blocks.
    (MPI's send may block until the peer receives, so `labkit.comm.mpi` uses MPI_Sendrecv instead.)
    """

    eager = True

    def sendrecv(self, x: np.ndarray, dst: int, src: int, tag: int = 0, label: str = "") -> np.ndarray:
        """Send x to dst, then receive from src."""
        self.send(x, dst, tag, label)  # type: ignore[attr-defined]
        return self.recv(src, tag, label)  # type: ignore[attr-defined]
