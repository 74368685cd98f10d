"""The two all-reduces to read first: the article's parameter server (everything through rank 0) and the ring in plain
send and recv. `labkit.collectives.ring` computes the same ring, faster (fused receive-and-reduce, no fresh arrays)."""

from __future__ import annotations

from typing import Any

import numpy as np

from labkit.collectives.checks import start
from labkit.comm import Comm


def ps_allreduce(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """Gather to the master (rank 0), reduce there, send back: 2(p−1)(α + nβ) + (p−1)nγ.

    The article's parameter-server picture. Not used in practice (rank 0's ports carry 2(p−1) whole vectors while
    every other port idles), but a good starting point, and the reference the others are measured against.
    """
    buf, shape = start(x, comm, op)
    p = comm.size
    if comm.rank == 0:
        for src in range(1, p):
            comm.recv_reduce(buf, src, op=op, label=f"gather to master {src}/{p - 1}")
        for dst in range(1, p):
            comm.send(buf, dst, label=f"send back {dst}/{p - 1}")
    else:
        comm.send(buf, 0, label=f"gather to master {comm.rank}/{p - 1}")
        comm.recv_into(buf, 0, label=f"send back {comm.rank}/{p - 1}")
    return buf.reshape(shape)


def simple_ring_allreduce(x: Any, comm: Comm) -> np.ndarray:
    """Ring all-reduce (sum), simple teaching version: p−1 reduce-scatter steps, then p−1 all-gather steps.

    Not used in practice (fresh arrays every step, send and receive one after the other), but it sends the same
    chunks to the same neighbours as `ring_allreduce` and returns the same sum.
    """
    x = np.asarray(x)
    p, r = comm.size, comm.rank
    chunks = np.array_split(x.reshape(-1), p)  # chunk k (the first n % p are 1 longer) is summed up on rank k

    def pass_right(chunk: np.ndarray, label: str) -> np.ndarray:
        # An MPI send of a large message waits until its receiver posts the receive: if every rank sent first,
        # every rank would wait for ever. Odd ranks receive first, so rank 0's send to rank 1 completes, and so
        # on around the ring (for odd p too, where ranks p − 1 and 0 are both even: rank 0 receives once sent).
        if r % 2 == 0:
            comm.send(chunk, (r + 1) % p, label=label)
            return comm.recv((r - 1) % p, label=label)
        incoming = comm.recv((r - 1) % p, label=label)
        comm.send(chunk, (r + 1) % p, label=label)
        return incoming

    for k in range(1, p):  # send the chunk summed so far; add what the left neighbour summed to my own copy
        mine = (r - k - 1) % p
        chunks[mine] = chunks[mine] + pass_right(chunks[(r - k) % p], f"reduce-scatter {k}/{p - 1}")
    for k in range(1, p):  # forward the finished chunk received last step (at first, this rank's own)
        chunks[(r - k) % p] = pass_right(chunks[(r - k + 1) % p], f"all-gather {k}/{p - 1}")
    return np.concatenate(chunks).reshape(x.shape)
