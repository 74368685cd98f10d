"""The ``"shm"`` mailboxes: `ShmComm`, one rank's view of the shared memory that the ranks of a run exchange through.

Mailboxes. Each ordered pair of ranks (src, dst) has ``SLOTS`` slots; a slot holds one message. Its header
(sequence number, tag, shape, dtype, label, send time) lives in one control block that every rank maps; its
payload lives inline in the control block when it is at most ``INLINE`` bytes, else in a segment of the slot's own,
which the sender grows on demand: it creates a segment of twice the size under a new generation number
(``<prefix>_<src>_<dst>_<slot>_<gen>``) and unlinks the old one; the receiver attaches a generation the first time
it sees it and keeps it mapped. The sender copies its array in once; the receiver reduces straight out of the slot
(``recv_reduce``), copies it into an array it names (``recv_into``) or into a new one (``recv``), then frees the
slot. Every counter has a single writer, so there are no locks for a dead process to hold. A send waits only while
all ``SLOTS`` slots to that peer are full, so a ``sendrecv`` in which both ranks send first never deadlocks.

Streaming. A ``sendrecv`` (and its ``_reduce``/``_into`` forms) of more than ``piece`` bytes (a ShmComm's
attribute, ``PIECE`` by default) sends its array in pieces, one ahead of the pieces it receives, so the mailboxes
stay small enough to stay in the CPU's cache. Whether that helps depends on where the two cores sit: on a host whose
two cores shared a cache, a 64 MiB ring all-reduce took 18-20 ms whole and 12 ms in 1 MiB pieces at p = 2 (60 and
42 ms at p = 4); on another host of the same kind (AMD EPYC, 2 vCPUs) where data written by one core is slow for the
other to read, it took 13 ms whole and 35 ms in pieces (38 and 64 ms at p = 4), and whole was as fast or faster at
every size from 1 MiB. Whole messages are never far from the best, so they are the default (``PIECE = None``); set
``comm.piece = 1 << 20`` inside the function the ranks run to try streaming. Every header carries the whole
message's shape and the piece's offset, so any receive (``recv``, ``recv_into``, ``recv_reduce``) takes a streamed
message as well as a whole one; the trace has one entry per message, not per piece. A plain ``send`` never
streams: it must return before the receiver starts.

Waiting, and failing when another rank has failed, are the control block's (`labkit.comm.shm.control`).

The processes that use it are started, watched and cleaned up by `labkit.comm.shm.launcher.run_shm`.
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from labkit.comm.base import CommError, EagerComm, check_op, expect_like
from labkit.comm.shm.control import (
    _CONSUMED,
    _HEAD,
    _POSTED,
    INLINE,
    MAXDIM,
    SLOTS,
    _check_room,
    _close,
    _Control,
    _fence,
    _segment,
)
from labkit.comm.shm.pieces import _check_tag, _expect_shape, _free_slot, _Piece, _reducer
from labkit.i18n import tr

PIECE: int | None = None  # default ShmComm.piece: None sends every message whole (see "Streaming" above)
_PAD = [(0,) * (MAXDIM - d) for d in range(MAXDIM + 1)]  # a header's shape, padded to MAXDIM
_HEADER = struct.Struct(f"<5qdq16s{MAXDIM}qq40s")  # seq tag nbytes gen seggen | start | ndim dtype shape offset label


def _as_array(x: Any) -> np.ndarray:
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.dtype.hasobject or x.dtype.fields is not None:
        raise TypeError(f"shm sends plain numeric arrays, got {x.dtype}: use allgather_object for Python objects")
    if x.ndim > MAXDIM:
        raise ValueError(f"shm sends arrays of at most {MAXDIM} dimensions, got {x.ndim}: reshape it first")
    return x


def _message_from(src: int, tag: int, label: str) -> str:
    """What a receive waits for, in the current language (made only when a wait times out)."""
    if label:
        return tr("a message from rank {src} (tag {tag}, {label})", src=src, tag=tag, label=label)
    return tr("a message from rank {src} (tag {tag})", src=src, tag=tag)


class ShmComm(_Control, EagerComm):
    """One rank's end of the shared-memory mailboxes of a run (`run_shm` makes one in each rank's process); waiting,
    barrier and allgather_object come from the control block's `_Control`."""

    def __init__(self, prefix: str, rank: int, size: int, timeout: float) -> None:
        super().__init__(prefix, rank, size, timeout)
        self.piece = PIECE  # stream sendrecvs of more than this many bytes in pieces of this size; None: never
        self.trace: list[tuple] = []  # (src, dst, nbytes, start, end, label) per message received
        self._sent, self._taken = [0] * size, [0] * size  # messages sent to / received from each peer
        self._posted = [[0] * SLOTS for _ in range(size)]  # per peer and slot: messages written / read there
        self._consumed = [[0] * SLOTS for _ in range(size)]
        self._out: list[list[Any]] = [[None] * SLOTS for _ in range(size)]  # (gen, segment) the sender owns
        self._in: list[list[Any]] = [[None] * SLOTS for _ in range(size)]  # (gen, segment) the receiver mapped
        self._dtypes: dict[bytes, np.dtype] = {}  # header's dtype code -> dtype, and back
        self._codes: dict[np.dtype, bytes] = {}
        # word indices of every slot to and from each peer, and of the pairs' sent counters, worked out once: a
        # message's own Python work is most of a small message's time, and all of it when ranks share a core
        lay = self._lay
        self._to = [[lay.slot(rank, d, k) for k in range(SLOTS)] for d in range(size)]
        self._from = [[lay.slot(s, rank, k) for k in range(SLOTS)] for s in range(size)]
        self._sent_to = [lay.sent(rank, d) for d in range(size)]
        self._sent_from = [lay.sent(s, rank) for s in range(size)]

    @property
    def piece(self) -> int | None:
        """Bytes per piece when a sendrecv streams a larger message; None (the default): every message whole."""
        return self._piece

    @piece.setter
    def piece(self, nbytes: int | None) -> None:
        if nbytes is not None and (not isinstance(nbytes, (int, np.integer)) or isinstance(nbytes, bool) or nbytes < 1):
            raise ValueError(f"piece must be a number of bytes >= 1, or None for whole messages; got {nbytes!r}")
        self._piece = None if nbytes is None else int(nbytes)

    def __repr__(self) -> str:
        return f"ShmComm(rank={self.rank}, size={self.size}, pid={os.getpid()})"

    # --- point to point -----------------------------------------------------------------------------------------

    def send(self, x: np.ndarray, dst: int, tag: int = 0, label: str = "") -> None:
        """Copy x into a free slot of the mailbox to dst; waits only while all SLOTS slots to dst are full."""
        x, dst, tag = _as_array(x), self._peer(dst, "dst"), _check_tag(tag)
        self._post(x, dst, tag, label, x.shape, 0)

    def _post(self, x: np.ndarray, dst: int, tag: int, label: str, shape: tuple, offset: int) -> None:
        """Put x (a whole message of ``shape``, or the flat piece of it starting at element ``offset``) in a slot."""
        lay, q, posted, me, slots = self._lay, self._q, self._posted[dst], self.rank, self._to[dst]
        k = _free_slot(q, slots, posted)
        if k < 0:
            self._wait(
                lambda: _free_slot(q, slots, posted) >= 0,
                f"rank {dst} to receive earlier messages (all {SLOTS} mailbox slots to it are full)",
            )
            k = _free_slot(q, slots, posted)
        _fence()  # the receiver has finished reading the slot before we overwrite it
        s, n, start = slots[k], x.nbytes, time.perf_counter()
        gen, seg = self._out[dst][k] or (0, None)
        if n <= INLINE:
            buf, at, used = self._b, lay.inline_at(me, dst, k), 0
        else:
            if seg is None or seg.size < n:  # grow: a new generation twice as big; the receiver is done with the old
                old, gen = seg, gen + 1
                size = max(n, 2 * (old.size if old else 0))
                _check_room(size)
                seg = _segment(f"{self._prefix}_{me}_{dst}_{k}_{gen}", size)
                q[s + _HEAD + 4] = gen  # before anything else, so that clean-up finds it even if we die now
                self._out[dst][k] = (gen, seg)
                if old is not None:
                    old.close()
                    old.unlink()
            buf, at, used = seg.buf, 0, gen
        if n:
            np.copyto(np.ndarray(x.shape, x.dtype, buf, at), x, casting="no")
        code = self._codes.get(x.dtype) or self._codes.setdefault(x.dtype, x.dtype.str.encode())
        dims = tuple(shape) + _PAD[len(shape)]
        head = (self._sent[dst], tag, n, used, gen, start, len(shape), code, *dims, offset)
        _HEADER.pack_into(self._b, (s + _HEAD) * 8, *head, label.encode()[:40])
        _fence()
        posted[k] += 1
        q[s + _POSTED] = posted[k]
        self._sent[dst] += 1
        q[self._sent_to[dst]] = self._sent[dst]

    def _take(self, src: int, tag: int, label: str) -> tuple[int, np.ndarray, _Piece]:
        """Wait for the oldest message (or piece) from (src, tag); its slot, a view of its payload in shared memory
        (flat if it is a piece) and what the header says of it."""
        lay, q, consumed, me = self._lay, self._q, self._consumed[src], self.rank
        sent_at, slots, seen = self._sent_from[src], self._from[src], self._taken[src]
        while True:
            sent = q[sent_at]
            if sent > seen:
                _fence()  # read the headers only after the count that published them
                best = None
                for k in range(SLOTS):  # messages from different sends may sit in any slot: take the oldest
                    s = slots[k]
                    if q[s + _POSTED] > consumed[k] and q[s + _HEAD + 1] == tag and q[s + _HEAD] < sent:
                        if best is None or q[s + _HEAD] < q[slots[best] + _HEAD]:
                            best = k
                if best is not None:
                    break
                seen = sent  # only other tags so far
            self._wait(lambda seen=seen: q[sent_at] > seen, lambda: _message_from(src, tag, label))
        s = slots[best]
        _, _, n, gen, _, start, ndim, dtype, *rest = _HEADER.unpack_from(self._b, (s + _HEAD) * 8)
        shape, offset, sent_label = tuple(rest[:ndim]), rest[MAXDIM], rest[MAXDIM + 1]
        dt = self._dtypes.get(dtype) or self._dtypes.setdefault(dtype, np.dtype(dtype.rstrip(b"\0").decode()))
        if gen == 0:
            buf, at = self._b, lay.inline_at(src, me, best)
        else:
            mapped = self._in[src][best]
            if mapped is None or mapped[0] != gen:  # the sender grew the slot: map the new generation
                if mapped is not None:
                    mapped[1].close()
                mapped = self._in[src][best] = (gen, _segment(f"{self._prefix}_{src}_{me}_{best}_{gen}"))
            buf, at = mapped[1].buf, 0
        meta = (n, start, sent_label.rstrip(b"\0").decode("utf-8", "replace"))
        whole = n == math.prod(shape) * dt.itemsize
        view = np.ndarray(shape if whole else (n // dt.itemsize,), dt, buf, at)
        return best, view, _Piece(shape, dt, offset, whole, meta)

    def _release(self, src: int, k: int, meta: tuple | None) -> None:
        """Hand slot k back to its sender and record the message (``meta`` None: a piece, recorded at the end)."""
        _fence()  # finish reading the payload before the sender may overwrite it
        self._consumed[src][k] += 1
        self._q[self._from[src][k] + _CONSUMED] = self._consumed[src][k]
        self._taken[src] += 1
        if meta is not None:
            n, start, label = meta
            self.trace.append((src, self.rank, n, start, time.perf_counter(), label))

    def recv(self, src: int, tag: int = 0, label: str = "") -> np.ndarray:
        """A copy of the oldest message from (src, tag)."""
        src = self._peer(src, "src")
        k, view, piece = self._take(src, _check_tag(tag), label)
        if piece.whole:
            data = view.copy()
            del view
            self._release(src, k, piece.meta)
            return data
        data = np.empty(piece.shape, piece.dtype)
        self._gather_pieces(data.reshape(-1), src, tag, label, (k, view, piece), lambda o, v, at: np.copyto(o, v))
        return data

    def recv_reduce(self, out: np.ndarray, src: int, tag: int = 0, op: str = "sum", label: str = "", acc=None) -> None:
        """out ← out op (the message from src), or acc op it, reduced straight out of the shared mailbox."""
        self._take_into(out, src, tag, label, _reducer(check_op(op), out, acc))

    def recv_into(self, out: np.ndarray, src: int, tag: int = 0, label: str = "") -> None:
        """out ← the message from src (same shape and dtype), copied straight out of the shared mailbox."""
        self._take_into(out, src, tag, label, lambda o, view, at: np.copyto(o, view))

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
        """Send x to dst while reducing what src sends into out (or acc op it); in pieces when x is large."""
        self._exchange(x, dst, out, src, tag, label, _reducer(check_op(op), out, acc))

    def sendrecv_into(self, x: np.ndarray, dst: int, out: np.ndarray, src: int, tag: int = 0, label: str = "") -> None:
        """Send x to dst while receiving what src sends into out (in pieces, interleaved, when x is large)."""
        self._exchange(x, dst, out, src, tag, label, lambda o, view, at: np.copyto(o, view))

    def _exchange(self, x, dst, out, src, tag, label, use: Callable) -> None:
        """Send x (in pieces of self.piece bytes if it is larger), one piece ahead of taking src's message into
        out (whole or in pieces)."""
        x, dst, tag = _as_array(x), self._peer(dst, "dst"), _check_tag(tag)
        piece = self.piece
        if piece is None or x.nbytes <= piece:
            self._post(x, dst, tag, label, x.shape, 0)
            return self._take_into(out, src, tag, label, use)
        flat, step = np.ascontiguousarray(x).reshape(-1), max(1, piece // x.itemsize)
        pieces = iter(range(0, flat.size, step))

        def send_next() -> None:
            at = next(pieces, None)
            if at is not None:
                self._post(flat[at : at + step], dst, tag, label, x.shape, at)

        send_next()
        self._take_into(out, src, tag, label, use, between=send_next)
        for at in pieces:  # src sent fewer pieces than we (it was smaller: an error already raised, or none)
            self._post(flat[at : at + step], dst, tag, label, x.shape, at)

    def _take_into(self, out, src: int, tag: int, label: str, use: Callable, between: Callable | None = None) -> None:
        """use(out, message from src), straight out of the mailbox, piece by piece if it was streamed; between()
        runs after each piece (a sendrecv sends its next piece there)."""
        src = self._peer(src, "src")
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array to receive into, got {type(out).__name__}")
        k, view, piece = self._take(src, _check_tag(tag), label)
        if piece.whole:
            expect_like(out, view, src, self.rank)
            use(out, view, None)
            del view
            self._release(src, k, piece.meta)
            return
        _expect_shape(out, piece, src, self.rank)
        flat = out.reshape(-1)
        if not np.shares_memory(flat, out):  # a non-contiguous out: work in a copy, then write it back
            flat = out.flatten()  # (the reduction reads its acc from the original, piece by piece)
            self._gather_pieces(flat, src, tag, label, (k, view, piece), use, between)
            out[...] = flat.reshape(out.shape)
            return
        self._gather_pieces(flat, src, tag, label, (k, view, piece), use, between)

    def _gather_pieces(self, flat, src, tag, label, first, use: Callable, between: Callable | None = None) -> None:
        """Take the pieces of one streamed message in order, use(flat[piece], view) each, record it once."""
        k, view, piece = first
        start, done, total = piece.meta[1], 0, flat.size
        while True:
            if piece.offset != done or piece.dtype != flat.dtype or done + view.size > total:
                raise CommError(
                    f"rank {src} streamed a message rank {self.rank} cannot place (piece at {piece.offset}, "
                    f"{view.size} {piece.dtype} values, {done} of {total} received): every rank must pass arrays "
                    "of the same shape and dtype"
                )
            use(flat[done : done + view.size], view, slice(done, done + view.size))
            done += view.size
            del view
            self._release(src, k, None)
            if between is not None:
                between()
            if done == total:
                break
            k, view, piece = self._take(src, tag, label)
        self.trace.append((src, self.rank, flat.nbytes, start, time.perf_counter(), piece.meta[2]))

    def close(self) -> None:
        """Unmap every segment (unlinking is run_shm's job, after every rank is done reading)."""
        _close([m[1] for row in self._out + self._in for m in row if m is not None])
        super().close()
