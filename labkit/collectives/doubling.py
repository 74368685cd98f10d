"""Exchanges with the rank 1, 2, 4, … away (Thakur, Rabenseifner & Gropp 2005): recursive doubling (lg p steps of
whole vectors, latency-optimal) and Rabenseifner's halving-doubling (lg p steps each way, bandwidth-optimal). For p
not a power of two, the ranks beyond the largest power of two are folded in first and out last."""

from __future__ import annotations

from typing import Any

import numpy as np

from labkit import split
from labkit.collectives.checks import span, start
from labkit.comm import Comm


def fold_in(buf: np.ndarray, comm: Comm, p2: int, op: str) -> bool:
    """Ranks p2 … p−1 hand their vector to rank − p2, which reduces it; True for the p2 ranks that go on."""
    if comm.rank >= p2:
        comm.send(buf, comm.rank - p2, label="fold-in")
        return False
    if comm.rank + p2 < comm.size:
        comm.recv_reduce(buf, comm.rank + p2, op=op, label="fold-in")
    return True


def fold_out(buf: np.ndarray, comm: Comm, p2: int) -> None:
    """Give the ranks folded in the result: rank r < p − p2 sends it to r + p2."""
    if comm.rank >= p2:
        comm.recv_into(buf, comm.rank - p2, label="fold-out")
    elif comm.rank + p2 < comm.size:
        comm.send(buf, comm.rank + p2, label="fold-out")


def recursive_doubling_allreduce(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """Swap whole vectors with the rank 1, 2, 4, … away and reduce each time: lg p·(α + nβ + nγ).

    For p not a power of two, the ranks beyond p2 (the largest power of two ≤ p) are folded in first and out last.
    """
    buf, shape = start(x, comm, op)
    p2 = 1 << (comm.size.bit_length() - 1)
    if fold_in(buf, comm, p2, op):
        steps = p2.bit_length() - 1
        for k in range(steps):
            partner = comm.rank ^ (1 << k)
            # a copy to send: buf is reduced into while a transport may still be reading what it sends
            comm.sendrecv_reduce(buf.copy(), partner, buf, partner, op=op, label=f"recursive-doubling {k + 1}/{steps}")
    fold_out(buf, comm, p2)
    return buf.reshape(shape)


def halving_doubling_allreduce(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """Rabenseifner: halving reduce-scatter, doubling all-gather: 2 lg p·α + 2(p−1)/p·nβ + (p−1)/p·nγ.

    For p not a power of two, the ranks beyond p2 (the largest power of two ≤ p) are folded in first and out last.
    """
    buf, shape = start(x, comm, op)
    p2 = 1 << (comm.size.bit_length() - 1)
    if fold_in(buf, comm, p2, op):
        r, steps = comm.rank, p2.bit_length() - 1
        bounds = split.bounds(buf.size, p2)
        lo, hi = 0, p2  # the chunks this rank is responsible for: halved each step until only chunk r is left
        for k in range(steps):  # the partner is p2/2, p2/4, …, 1 away; the upper rank keeps the upper half
            mask, mid = p2 >> (k + 1), (lo + hi) // 2
            keep, give = ((mid, hi), (lo, mid)) if r & mask else ((lo, mid), (mid, hi))
            out, x_give = span(buf, bounds, *keep), span(buf, bounds, *give)
            comm.sendrecv_reduce(x_give, r ^ mask, out, r ^ mask, op=op, label=f"reduce-scatter {k + 1}/{steps}")
            lo, hi = keep
        for k in range(steps):  # swap blocks with the rank 1, 2, 4, … away; the block this rank holds doubles
            mask = 1 << k
            theirs = lo ^ mask
            mine_view, theirs_view = span(buf, bounds, lo, lo + mask), span(buf, bounds, theirs, theirs + mask)
            comm.sendrecv_into(mine_view, r ^ mask, theirs_view, r ^ mask, label=f"all-gather {k + 1}/{steps}")
            lo = min(lo, theirs)
    fold_out(buf, comm, p2)
    return buf.reshape(shape)
