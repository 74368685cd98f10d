"""The small parts of a mailbox message: a header's view of its piece, finding a free slot, reducing out of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from labkit.comm.base import CommError, check_acc
from labkit.comm.shm.control import _CONSUMED, SLOTS


def _free_slot(q: memoryview, slots: list[int], posted: list[int]) -> int:
    """The first of a peer's slots whose last message its receiver has taken (consumed == posted), or -1."""
    for k in range(SLOTS):
        if q[slots[k] + _CONSUMED] == posted[k]:
            return k
    return -1


def _reducer(ufunc: np.ufunc, out: np.ndarray, acc: np.ndarray | None) -> Callable:
    """use(o, view, at) for `_take_into`: o ← (acc's part ``at``, or o) op view; at None means the whole message."""
    if acc is None:
        return lambda o, view, at: ufunc(o, view, out=o)
    check_acc(out, acc)
    flat = acc.reshape(-1)
    return lambda o, view, at: ufunc(acc if at is None else flat[at], view, out=o)


class _Piece(NamedTuple):  # a NamedTuple: made for every message, and cheaper to make than a dataclass
    """What a header says of a message: its whole shape and dtype, where this piece starts (in elements), whether
    it is the whole message, and (nbytes, start, label) for the trace."""

    shape: tuple
    dtype: np.dtype
    offset: int
    whole: bool
    meta: tuple


def _expect_shape(out: np.ndarray, piece: _Piece, src: int, rank: int) -> None:
    if tuple(piece.shape) != out.shape or piece.dtype != out.dtype:
        raise CommError(
            f"rank {src} sent shape {tuple(piece.shape)} {piece.dtype}, rank {rank} expected {out.shape} {out.dtype}:"
            " every rank must pass arrays of the same shape and dtype"
        )


def _check_tag(tag: Any) -> int:
    if type(tag) is int and tag >= 0:  # the common case, first: this runs twice per message
        return tag
    if not isinstance(tag, (int, np.integer)) or isinstance(tag, bool) or tag < 0:
        raise ValueError(f"tag must be a whole number >= 0, got {tag!r}")
    return int(tag)
