"""Collectives built from point-to-point messages: all-reduce five ways, broadcast, reduce, reduce-scatter, all-gather.

Every function is called by every rank with its own array and its `Comm`, and returns a new array (the input is left
untouched). The result equals the reference over ranks (``np.sum`` / ``np.max`` / ``np.min`` along a stacked rank
axis), bit-exact for integers. Each all-reduce's docstring gives its α-β cost (`labkit.cost.allreduce_time`) for
n bytes over p ranks; message labels name the phase and step, so a trace can be read (and animated) step by step.

Read `simple` first (the parameter server and the ring in plain send/recv), then `ring`, `tree` and `doubling`;
`checks` holds what every collective checks before it sends anything.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from labkit import split
from labkit.collectives.checks import check_root, span, start
from labkit.collectives.doubling import halving_doubling_allreduce, recursive_doubling_allreduce
from labkit.collectives.ring import ring_allgather, ring_allreduce, ring_reduce_scatter
from labkit.collectives.simple import ps_allreduce, simple_ring_allreduce
from labkit.collectives.tree import binomial_broadcast, binomial_reduce, tree_allreduce
from labkit.comm import Comm, CommError

__all__ = [
    "ALGORITHMS",
    "allgather",
    "allreduce",
    "broadcast",
    "halving_doubling_allreduce",
    "ps_allreduce",
    "recursive_doubling_allreduce",
    "reduce",
    "reduce_scatter",
    "ring_allreduce",
    "simple_ring_allreduce",
    "tree_allreduce",
]

_IMPLEMENTATIONS = {
    "ps": ps_allreduce,
    "ring": ring_allreduce,
    "tree": tree_allreduce,
    "recursive_doubling": recursive_doubling_allreduce,
    "halving_doubling": halving_doubling_allreduce,
}

#: The all-reduce algorithms, by name: the same tuple as `labkit.cost.ALGORITHMS`, in the same order.
ALGORITHMS = tuple(_IMPLEMENTATIONS)


def allreduce(
    x: Any, comm: Comm, algorithm: str = "ring", op: str = "sum", out: np.ndarray | None = None
) -> np.ndarray:
    """Every rank gets the elementwise ``op`` (sum, max or min) of all ranks' arrays, computed by ``algorithm``.

    ``out``, like MPI's receive buffer, is an array of x's shape and dtype that receives the result (and is
    returned): reused from call to call it spares allocating, and the first writes faulting in, a fresh result. The
    ring writes into it directly; the other algorithms copy their result there.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}: use one of {list(ALGORITHMS)}")
    if out is None:
        return _IMPLEMENTATIONS[algorithm](x, comm, op=op)
    x = np.asarray(x)
    if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a C-contiguous array of x's shape and dtype {x.shape} {x.dtype}, got {got}")
    if np.shares_memory(out, x):
        raise ValueError("out shares memory with x: pass a separate array (in-place all-reduce is not supported)")
    if algorithm == "ring":
        ring_allreduce(x, comm, op=op, out=out)  # returns a reshaped view of out; hand back out itself
        return out
    np.copyto(out, _IMPLEMENTATIONS[algorithm](x, comm, op=op))
    return out


# --- the other collectives ---------------------------------------------------------------------------------------


def broadcast(x: Any, comm: Comm, root: int = 0) -> np.ndarray:
    """Every rank gets a copy of root's array (binomial tree, ⌈lg p⌉(α + nβ)); ranks other than root may pass None."""
    root = check_root(root, comm)
    layouts = comm.allgather_object(None if x is None else (np.shape(x), np.asarray(x).dtype.str))
    if layouts[root] is None:
        raise ValueError(f"the root (rank {root}) passed None to broadcast: the root must pass the array to send")
    shape, dtype = layouts[root]
    for r, layout in enumerate(layouts):
        if layout is not None and layout != layouts[root]:
            raise CommError(
                f"rank {r} passed shape {layout[0]} {np.dtype(layout[1])}, the root (rank {root}) broadcasts"
                f" {shape} {np.dtype(dtype)}: pass None or an array like the root's"
            )
    buf = np.asarray(x).flatten() if comm.rank == root else np.empty(math.prod(shape), dtype=dtype)
    binomial_broadcast(buf, comm, root)
    return buf.reshape(shape)


def reduce(x: Any, comm: Comm, root: int = 0, op: str = "sum") -> np.ndarray | None:
    """The elementwise ``op`` of all ranks' arrays on root (binomial tree, ⌈lg p⌉(α + nβ + nγ)); None elsewhere."""
    root = check_root(root, comm)
    buf, shape = start(x, comm, op)
    binomial_reduce(buf, comm, root, op)
    return buf.reshape(shape) if comm.rank == root else None


def reduce_scatter(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """This rank's chunk (np.array_split of the flattened array into p) of the reduced array: ring, p−1 steps."""
    source, _ = start(x, comm, op, copy=False)
    buf = np.empty_like(source)
    bounds = split.bounds(buf.size, comm.size)
    if comm.size == 1:
        buf[...] = source
    ring_reduce_scatter(buf, bounds, comm, op, source)
    return span(buf, bounds, comm.rank, comm.rank + 1).copy()


def allgather(x: Any, comm: Comm) -> np.ndarray:
    """Every rank's array concatenated along axis 0 in rank order (lengths may differ, like MPI_Allgatherv): ring."""
    x = np.atleast_1d(np.asarray(x))
    layouts = comm.allgather_object((x.shape, x.dtype.str))
    shape0, dtype0 = layouts[0]
    for r, (shape, dtype) in enumerate(layouts):
        if shape[1:] != shape0[1:] or dtype != dtype0:
            raise CommError(
                f"rank {r} sent shape {shape} {np.dtype(dtype)}, rank 0 expected (…, {', '.join(map(str, shape0[1:]))})"
                f" {np.dtype(dtype0)}: pieces may differ in length along axis 0 only"
            )
    bounds = [0, *np.cumsum([math.prod(shape) for shape, _ in layouts]).tolist()]
    buf = np.empty(bounds[-1], dtype=x.dtype)
    span(buf, bounds, comm.rank, comm.rank + 1)[...] = x.ravel()
    ring_allgather(buf, bounds, comm)
    return buf.reshape((sum(shape[0] for shape, _ in layouts), *x.shape[1:]))
