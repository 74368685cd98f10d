"""The ``"sim"`` transport: ranks are threads on logical α-β clocks, and every message goes into the trace.

Port rules (one send port and one receive port per rank: full duplex, single port). A message of n bytes costs
c = α + nβ.

- ``send`` is eager and never blocks: it starts at s = max(sender's clock, sender's send port free), holds the send
  port until s + c, and leaves the sender's clock where it was.
- ``recv`` delivers the oldest message from (src, tag): delivery starts at d = max(s, receiver's receive port free,
  receiver's clock) and ends at e = d + c; the receiver's clock and its receive port both move to e.
- ``sendrecv`` is exactly ``send`` then ``recv``: both start at the rank's clock, the send on the send port and the
  receive on the receive port, and the rank's clock becomes the receive's end e. The rank waits only for the data
  it needs; its send port stays busy until s + c, so its next send cannot start earlier. (A blocking MPI_Sendrecv
  would end at max(s + c, e); the two agree whenever the partners exchange equal sizes in step, which is every case
  where the closed forms of `labkit.cost` are exact.)
- ``recv_reduce`` / ``sendrecv_reduce`` of n bytes then add nγ to the rank's clock.
- ``barrier`` and ``allgather_object`` only exchange metadata: no message, no modelled time.
- ``compute(seconds)`` models work: the rank's clock moves on by that much (and the span goes to ``Run.compute``).

The rules depend only on each rank's program order, never on how the threads interleave, so the same run gives
the same trace and time every time. ``run.time`` is the largest rank clock; a message that is never received is not
in the trace.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from labkit.comm.base import CommError, EagerComm, Message, Run, check_acc, check_op, expect_like, reduce_into
from labkit.i18n import tr

_MISSING = object()


def _as_array(x: Any, what: str) -> np.ndarray:
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.dtype == object:
        raise TypeError(f"{what} needs a numeric NumPy array (or a list of numbers), got {x.dtype} data")
    return x


class _World:
    """What the ranks of one run share: clocks and ports, mailboxes, the trace, and the first failure."""

    def __init__(self, size: int, link: Any, timeout: float, payloads: bool = False) -> None:
        self.size, self.link, self.timeout, self.payloads = size, link, timeout, payloads
        self.deadline = time.monotonic() + timeout
        self.cond = threading.Condition()
        self.clock = [0.0] * size
        self.send_free = [0.0] * size
        self.recv_free = [0.0] * size
        self.mail: dict[tuple[int, int, int], deque] = defaultdict(deque)  # (dst, src, tag) -> FIFO of envelopes
        self.sent = [0] * size  # per-sender sequence number: a deterministic tie-break for sorting the trace
        self.trace: list[tuple] = []
        self.computed: list[tuple[int, float, float, str]] = []  # (rank, start, end, label) of comm.compute
        self.gathers: dict[int, list] = {}  # k-th allgather_object call -> one slot per rank
        self.gather_reads: dict[int, int] = defaultdict(int)  # how many ranks have taken the k-th call's result
        self.gather_calls = [0] * size
        self.waiting: dict[int, tuple] = {}  # rank -> what it waits for
        self.finished = [False] * size
        self.values: list[Any] = [None] * size
        self.errors: list[tuple[int, BaseException]] = []
        self.echoes: list[BaseException] = []  # errors the sim raised because of another failure
        self.failure: str | None = None  # the first failure, deadlock or timeout; every later call raises it

    def echo(self, message: str) -> CommError:
        """A CommError to raise on this rank because something else went wrong first."""
        err = CommError(message)
        self.echoes.append(err)
        return err

    def ready(self, rank: int) -> bool:
        what = self.waiting[rank]
        if what[0] == "recv":
            return bool(self.mail[(rank, what[1], what[2])])
        return not any(obj is _MISSING for obj in self.gathers[what[1]])

    def wait(self, rank: int, what: tuple) -> None:
        """Block ``rank`` until what it waits for is there; raise CommError on failure, deadlock or timeout."""
        self.waiting[rank] = what
        try:
            while True:
                if self.failure is None:
                    self.detect_deadlock()
                if self.failure is not None:
                    raise self.echo(self.failure)
                if self.ready(rank):
                    return
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    self.time_out()
                    raise self.echo(self.failure)
                self.cond.wait(remaining)
        finally:
            del self.waiting[rank]

    def detect_deadlock(self) -> None:
        """Fail the run if every live rank waits and none can go on (lock held)."""
        live = [r for r in range(self.size) if not self.finished[r]]
        if not live or any(r not in self.waiting or self.ready(r) for r in live):
            return
        self.failure = tr("deadlock: {waits}", waits="; ".join(self.describe(r) for r in live))
        self.cond.notify_all()

    def time_out(self) -> None:
        """Fail the run because the wall-clock timeout passed, saying what each rank was doing (lock held)."""
        live = [r for r in range(self.size) if not self.finished[r]]
        doing = [self.describe(r) if r in self.waiting else f"rank {r} is computing" for r in live]
        self.failure = (
            f"timeout after {self.timeout:g} s: {'; '.join(doing)}; pass a larger timeout= if a rank really"
            " computes that long"
        )
        self.cond.notify_all()

    def describe(self, rank: int) -> str:
        what = self.waiting[rank]
        if what[0] == "gather":
            missing = [r for r, obj in enumerate(self.gathers[what[1]]) if obj is _MISSING]
            return tr(
                "rank {r} waits in barrier/allgather_object (call {n}) for rank(s) {missing}",
                **dict(r=rank, n=what[1] + 1, missing=missing),
            )
        _, src, tag, label = what
        where = dict(r=rank, src=src, tag=tag)
        if self.finished[src]:
            text = tr(
                "rank {r} waits for a message from rank {src} (tag {tag}) that was never sent (rank {src} has "
                "returned)",
                **where,
            )
        elif src in self.waiting:
            text = tr(
                "rank {r} waits for a message from rank {src} (tag {tag}) that was never sent (rank {src} is "
                "waiting too)",
                **where,
            )
        else:
            text = tr("rank {r} waits for a message from rank {src} (tag {tag})", **where)
        if label:
            text += tr(", in {label!r}", label=label)
        other_tags = sorted(t for (d, s, t), q in self.mail.items() if d == rank and s == src and q)
        if other_tags:
            text += tr(
                "; messages from rank {src} with tag(s) {tags} are there: do the tags match?", src=src, tags=other_tags
            )
        return text

    def main(self, rank: int, fn: Callable[..., Any], args: tuple) -> None:
        """The body of rank ``rank``'s thread: run fn, record its value or error, wake the others."""
        try:
            self.values[rank] = fn(SimComm(self, rank), *args)
        except BaseException as e:  # noqa: B036 - a rank's thread must record every way it can end
            with self.cond:
                self.errors.append((rank, e))
                if self.failure is None and not any(e is x for x in self.echoes):
                    self.failure = tr("rank {r} failed: {error}: {e}", r=rank, error=type(e).__name__, e=e)
        finally:
            with self.cond:
                self.finished[rank] = True
                if self.failure is None:
                    self.detect_deadlock()
                self.cond.notify_all()


class SimComm(EagerComm):
    """One rank's view of a simulated world: mpi4py-like calls that advance logical clocks (see module docstring)."""

    def __init__(self, world: _World, rank: int) -> None:
        self._world, self.rank, self.size = world, rank, world.size

    def __repr__(self) -> str:
        return f"SimComm(rank={self.rank}, size={self.size}, clock={self._world.clock[self.rank]:.6g} s)"

    def send(self, x: np.ndarray, dst: int, tag: int = 0, label: str = "") -> None:
        """Post a copy of x to dst: eager, never blocks, holds the send port for α + nβ."""
        x, dst, tag, w, r = _as_array(x, "send"), self._peer(dst, "dst"), self._tag(tag), self._world, self.rank
        with w.cond:
            if w.failure is not None:
                raise w.echo(w.failure)
            start = max(w.clock[r], w.send_free[r])
            w.send_free[r] = start + w.link.message_time(x.nbytes)
            w.mail[(dst, r, tag)].append((np.array(x, copy=True), start, label, w.sent[r]))
            w.sent[r] += 1
            w.cond.notify_all()

    def recv(self, src: int, tag: int = 0, label: str = "") -> np.ndarray:
        """The oldest message from (src, tag); the clock moves to the end of its delivery."""
        src, tag, w, r = self._peer(src, "src"), self._tag(tag), self._world, self.rank
        with w.cond:
            w.wait(r, ("recv", src, tag, label))
            data, start, sent_label, seq = w.mail[(r, src, tag)].popleft()
            begin = max(start, w.recv_free[r], w.clock[r])
            end = begin + w.link.message_time(data.nbytes)
            w.clock[r] = w.recv_free[r] = end
            w.trace.append((start, end, src, r, seq, data.nbytes, sent_label, data if w.payloads else None))
        return data

    def recv_reduce(self, out: np.ndarray, src: int, tag: int = 0, op: str = "sum", label: str = "", acc=None) -> None:
        """out ← out op (the array received from src), or acc op it; the reduction adds nγ to the clock."""
        ufunc = check_op(op)
        if acc is not None:  # before any message is taken: a bad acc leaves the mailbox as it was
            check_acc(out, acc)
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array to reduce into, got {type(out).__name__}")
        incoming = self.recv(src, tag, label)
        expect_like(out, incoming, src, self.rank)
        reduce_into(ufunc, out, incoming, acc)
        self._world.clock[self.rank] += out.nbytes * self._world.link.gamma

    def compute(self, seconds: float, label: str = "") -> None:
        """Model ``seconds`` of work on this rank: its clock moves on, and the span is kept in ``Run.compute``."""
        if not seconds >= 0:
            raise ValueError(f"compute time must be >= 0 seconds, got {seconds!r}")
        w, r = self._world, self.rank
        with w.cond:
            start = w.clock[r]
            w.clock[r] = start + float(seconds)
            w.computed.append((r, start, w.clock[r], label))

    def barrier(self) -> None:
        """Wait until every rank has called barrier (metadata only: no modelled time)."""
        self.allgather_object(None)

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's obj, in rank order (metadata only: not in the trace, no modelled time)."""
        w, r = self._world, self.rank
        with w.cond:
            if w.failure is not None:
                raise w.echo(w.failure)
            k = w.gather_calls[r]
            w.gather_calls[r] += 1
            slots = w.gathers.setdefault(k, [_MISSING] * self.size)
            slots[r] = copy.deepcopy(obj)
            w.cond.notify_all()
            w.wait(r, ("gather", k))
            w.gather_reads[k] += 1
            if w.gather_reads[k] == self.size:  # everyone has its copy: free the slots
                del w.gathers[k], w.gather_reads[k]
            return copy.deepcopy(slots)


def run_sim(
    fn: Callable[..., Any],
    p: int,
    link: Any = None,
    timeout: float = 30.0,
    args: tuple = (),
    payloads: bool = False,
) -> Run:
    """Run ``fn(comm, *args)`` on ``p`` simulated ranks; the time is modelled on ``link``.

    ``link=None`` means `labkit.cost.DEFAULT_LINK`. A rank that raises makes every other rank's next
    communication raise `CommError`, a deadlock raises it on every waiting rank at once, and ``timeout`` (wall
    clock seconds) is a backstop; then run_sim raises `CommError` too, chained to the first rank's error.
    ``payloads=True`` keeps each message's data in ``Message.payload`` (a copy; for small runs).
    """
    from labkit import cost

    link = cost.DEFAULT_LINK if link is None else link
    if not isinstance(link, cost.Link):
        raise TypeError(f"link must be a labkit.cost.Link (e.g. cost.preset('10 GbE')), got {link!r}")
    world = _World(p, link, timeout, payloads)
    threads = [
        threading.Thread(target=world.main, args=(r, fn, args), name=f"labkit-sim-rank-{r}", daemon=True)
        for r in range(p)
    ]
    interrupted = False
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, world.deadline - time.monotonic()))
    except BaseException:  # Ctrl-C in a notebook: stop the ranks, then let the interrupt through
        interrupted = True
        raise
    finally:  # wake every waiting rank so that it raises and its thread ends
        if any(t.is_alive() for t in threads):
            with world.cond:
                if world.failure is None and interrupted:
                    world.failure = "interrupted"
                elif world.failure is None:
                    world.time_out()
                world.cond.notify_all()
            grace = time.monotonic() + 2.0
            for t in threads:
                t.join(max(0.0, grace - time.monotonic()))
    stuck = [r for r, t in enumerate(threads) if t.is_alive()]
    if stuck:
        raise CommError(
            f"rank(s) {stuck} still computing after timeout={timeout:g} s; a thread cannot be stopped from outside,"
            " it stops at its next communication call"
        )
    firsts = [(r, e) for r, e in world.errors if not any(e is x for x in world.echoes)]
    if firsts:
        rank, err = firsts[0]
        if isinstance(err, CommError):
            raise CommError(str(err)) from err
        raise CommError(tr("rank {r} failed: {error}: {e}", r=rank, error=type(err).__name__, e=err)) from err
    if world.failure is not None:
        raise CommError(world.failure)
    trace = [
        Message(src, dst, nbytes, start, end, label, payload)
        for start, end, src, dst, _, nbytes, label, payload in sorted(world.trace, key=lambda m: m[:5])
    ]
    computed = sorted(world.computed, key=lambda c: (c[1], c[0]))
    return Run(values=world.values, trace=trace, time=max(world.clock), compute=computed)
