"""Binomial trees: reduce to a root and broadcast from it in ⌈lg p⌉ rounds each, whole vectors every round."""

from __future__ import annotations

from typing import Any

import numpy as np

from labkit.collectives.checks import start
from labkit.comm import Comm


def binomial_reduce(buf: np.ndarray, comm: Comm, root: int, op: str) -> None:
    """Reduce buf onto root: in round k a rank receives from the one 2^(k−1) above it, or sends down and stops."""
    p, rounds = comm.size, (comm.size - 1).bit_length()
    me = (comm.rank - root) % p  # rank relative to the root
    for k in range(1, rounds + 1):
        mask = 1 << (k - 1)
        if me & mask:
            comm.send(buf, (me - mask + root) % p, label=f"reduce {k}/{rounds}")
            return
        if me + mask < p:
            comm.recv_reduce(buf, (me + mask + root) % p, op=op, label=f"reduce {k}/{rounds}")


def binomial_broadcast(buf: np.ndarray, comm: Comm, root: int) -> None:
    """Broadcast buf from root; each rank forwards to its farthest child first, as MPICH does (⌈lg p⌉ rounds)."""
    p, rounds = comm.size, (comm.size - 1).bit_length()
    me = (comm.rank - root) % p
    mask = 1
    while mask < p and not me & mask:
        mask <<= 1
    if mask < p:  # not the root: receive from the parent, which differs in this rank's lowest set bit
        comm.recv_into(buf, (me - mask + root) % p, label=f"broadcast {rounds - mask.bit_length() + 1}/{rounds}")
    mask >>= 1
    while mask:
        if me + mask < p:
            comm.send(buf, (me + mask + root) % p, label=f"broadcast {rounds - mask.bit_length() + 1}/{rounds}")
        mask >>= 1


def tree_allreduce(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """Binomial-tree reduce to rank 0, then binomial broadcast from it: 2⌈lg p⌉(α + nβ) + ⌈lg p⌉nγ."""
    buf, shape = start(x, comm, op)
    binomial_reduce(buf, comm, 0, op)
    binomial_broadcast(buf, comm, 0)
    return buf.reshape(shape)
