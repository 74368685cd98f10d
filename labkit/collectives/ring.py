"""The ring (Patarasuk & Yuan 2009): reduce-scatter then all-gather, p − 1 steps each, every rank sending one chunk
to its right neighbour a step. Bandwidth-optimal: each rank sends 2(p − 1)/p of the data."""

from __future__ import annotations

from typing import Any

import numpy as np

from labkit import split
from labkit.collectives.checks import span, start
from labkit.comm import Comm


def ring_reduce_scatter(buf: np.ndarray, bounds: list[int], comm: Comm, op: str, source: np.ndarray) -> None:
    """Leave chunk ``rank`` of buf reduced over all ranks: p−1 steps, each passing one chunk to the right.

    ``source`` is this rank's (flat) input; each step writes buf's chunk as the input's chunk plus what arrived, in
    one pass (``acc=``), so the input is never copied (a pass over memory fewer: it matters at tens of MB).
    """
    p, r = comm.size, comm.rank
    for k in range(1, p):  # send the chunk finished last step; add the left neighbour's copy of the next one
        give, take = (r - k) % p, (r - k - 1) % p
        chunk_out = span(source if k == 1 else buf, bounds, give, give + 1)
        chunk_in, mine = span(buf, bounds, take, take + 1), span(source, bounds, take, take + 1)
        label = f"reduce-scatter {k}/{p - 1}"  # buf's chunk ← this rank's own + what the left neighbour summed so far
        comm.sendrecv_reduce(chunk_out, (r + 1) % p, chunk_in, (r - 1) % p, op=op, label=label, acc=mine)


def ring_allgather(buf: np.ndarray, bounds: list[int], comm: Comm) -> None:
    """Given chunk ``rank`` of buf on each rank, fill in every chunk: p−1 steps, each passing one chunk right."""
    p, r = comm.size, comm.rank
    for k in range(1, p):  # forward the chunk received last step (at first, this rank's own)
        give, take = (r - k + 1) % p, (r - k) % p
        chunk_out, chunk_in = span(buf, bounds, give, give + 1), span(buf, bounds, take, take + 1)
        comm.sendrecv_into(chunk_out, (r + 1) % p, chunk_in, (r - 1) % p, label=f"all-gather {k}/{p - 1}")


def ring_allreduce(x: Any, comm: Comm, op: str = "sum", out: np.ndarray | None = None) -> np.ndarray:
    """Reduce-scatter then all-gather around a ring, p−1 steps each: 2(p−1)α + 2(p−1)/p·nβ + (p−1)/p·nγ.

    ``out`` (checked by `allreduce`) receives the result; a fresh array otherwise.
    """
    source, shape = start(x, comm, op, copy=False)
    # every chunk of buf is written below: reduced into, or gathered
    buf = np.empty_like(source) if out is None else out.reshape(-1)
    if comm.size == 1:
        buf[...] = source
    bounds = split.bounds(buf.size, comm.size)
    ring_reduce_scatter(buf, bounds, comm, op, source)
    ring_allgather(buf, bounds, comm)
    return buf.reshape(shape)
