"""Collectives built from point-to-point messages: all-reduce five ways, broadcast, reduce, reduce-scatter, all-gather.

Every function is called by every rank with its own array and its `Comm`, and returns a new array (the input is left
untouched). The result equals the reference over ranks (``np.sum`` / ``np.max`` / ``np.min`` along a stacked rank
axis), bit-exact for integers. Each all-reduce's docstring gives its α-β cost (`labkit.cost.allreduce_time`) for
n bytes over p ranks; message labels name the phase and step, so a trace can be read (and animated) step by step.
`simple_ring_allreduce` is the ring in fifteen lines, to read first; `ring_allreduce` computes the same, faster.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from labkit.comm import Comm, CommError, check_op

_NUMERIC = "biufc"  # bool, signed and unsigned integers, floats, complex


def _check_same(x: np.ndarray, comm: Comm) -> None:
    """Raise on every rank unless all ranks passed numeric arrays of one shape and dtype (metadata, free on sim)."""
    layouts = comm.allgather_object((x.shape, x.dtype.str))
    shape0, dtype0 = layouts[0]
    for r, (shape, dtype) in enumerate(layouts):
        if np.dtype(dtype).kind not in _NUMERIC:
            raise TypeError(f"rank {r} passed {np.dtype(dtype)} data: collectives reduce numeric arrays only")
        if (shape, dtype) != (shape0, dtype0):
            raise CommError(
                f"rank {r} sent shape {shape} {np.dtype(dtype)}, rank 0 expected {shape0} {np.dtype(dtype0)}:"
                " every rank must pass arrays of the same shape and dtype"
            )


def _start(x: Any, comm: Comm, op: str, copy: bool = True) -> tuple[np.ndarray, tuple[int, ...]]:
    """A flat copy of x to work in (or, copy=False, a flat view only to read) and x's shape, once checked."""
    check_op(op)
    x = np.asarray(x)
    _check_same(x, comm)
    return (x.flatten() if copy else x.reshape(-1)), x.shape


def _chunk_bounds(n: int, parts: int) -> list[int]:
    """Offsets of ``parts`` chunks of n elements, as np.array_split makes them (the first n % parts are 1 longer)."""
    q, extra = divmod(n, parts)
    return [k * q + min(k, extra) for k in range(parts + 1)]


def _span(buf: np.ndarray, bounds: list[int], first: int, stop: int) -> np.ndarray:
    """The view of buf holding chunks first … stop − 1."""
    return buf[bounds[first] : bounds[stop]]


# --- building blocks -------------------------------------------------------------------------------------------


def _ring_reduce_scatter(buf: np.ndarray, bounds: list[int], comm: Comm, op: str, source: np.ndarray) -> None:
    """Leave chunk ``rank`` of buf reduced over all ranks: p−1 steps, each passing one chunk to the right.

    ``source`` is this rank's (flat) input; each step writes buf's chunk as the input's chunk plus what arrived, in
    one pass (``acc=``), so the input is never copied (a pass over memory fewer: it matters at tens of MB).
    """
    p, r = comm.size, comm.rank
    for k in range(1, p):  # send the chunk finished last step; add the left neighbour's copy of the next one
        give, take = (r - k) % p, (r - k - 1) % p
        chunk_out = _span(source if k == 1 else buf, bounds, give, give + 1)
        chunk_in, mine = _span(buf, bounds, take, take + 1), _span(source, bounds, take, take + 1)
        label = f"reduce-scatter {k}/{p - 1}"  # buf's chunk ← this rank's own + what the left neighbour summed so far
        comm.sendrecv_reduce(chunk_out, (r + 1) % p, chunk_in, (r - 1) % p, op=op, label=label, acc=mine)


def _ring_allgather(buf: np.ndarray, bounds: list[int], comm: Comm) -> None:
    """Given chunk ``rank`` of buf on each rank, fill in every chunk: p−1 steps, each passing one chunk right."""
    p, r = comm.size, comm.rank
    for k in range(1, p):  # forward the chunk received last step (at first, this rank's own)
        give, take = (r - k + 1) % p, (r - k) % p
        chunk_out, chunk_in = _span(buf, bounds, give, give + 1), _span(buf, bounds, take, take + 1)
        comm.sendrecv_into(chunk_out, (r + 1) % p, chunk_in, (r - 1) % p, label=f"all-gather {k}/{p - 1}")


def _binomial_reduce(buf: np.ndarray, comm: Comm, root: int, op: str) -> None:
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


def _binomial_broadcast(buf: np.ndarray, comm: Comm, root: int) -> None:
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


def _fold_in(buf: np.ndarray, comm: Comm, p2: int, op: str) -> bool:
    """Ranks p2 … p−1 hand their vector to rank − p2, which reduces it; True for the p2 ranks that go on."""
    if comm.rank >= p2:
        comm.send(buf, comm.rank - p2, label="fold-in")
        return False
    if comm.rank + p2 < comm.size:
        comm.recv_reduce(buf, comm.rank + p2, op=op, label="fold-in")
    return True


def _fold_out(buf: np.ndarray, comm: Comm, p2: int) -> None:
    """Give the ranks folded in the result: rank r < p − p2 sends it to r + p2."""
    if comm.rank >= p2:
        comm.recv_into(buf, comm.rank - p2, label="fold-out")
    elif comm.rank + p2 < comm.size:
        comm.send(buf, comm.rank + p2, label="fold-out")


# --- all-reduce, five ways ---------------------------------------------------------------------------------------


def ps_allreduce(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """Gather to the master (rank 0), reduce there, send back: 2(p−1)(α + nβ) + (p−1)nγ.

    The article's parameter-server picture. Not used in practice (rank 0's ports carry 2(p−1) whole vectors while
    every other port idles), but a good starting point, and the reference the others are measured against.
    """
    buf, shape = _start(x, comm, op)
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


def ring_allreduce(x: Any, comm: Comm, op: str = "sum", out: np.ndarray | None = None) -> np.ndarray:
    """Reduce-scatter then all-gather around a ring, p−1 steps each: 2(p−1)α + 2(p−1)/p·nβ + (p−1)/p·nγ.

    ``out`` (checked by `allreduce`) receives the result; a fresh array otherwise.
    """
    source, shape = _start(x, comm, op, copy=False)
    # every chunk of buf is written below: reduced into, or gathered
    buf = np.empty_like(source) if out is None else out.reshape(-1)
    if comm.size == 1:
        buf[...] = source
    bounds = _chunk_bounds(buf.size, comm.size)
    _ring_reduce_scatter(buf, bounds, comm, op, source)
    _ring_allgather(buf, bounds, comm)
    return buf.reshape(shape)


def tree_allreduce(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """Binomial-tree reduce to rank 0, then binomial broadcast from it: 2⌈lg p⌉(α + nβ) + ⌈lg p⌉nγ."""
    buf, shape = _start(x, comm, op)
    _binomial_reduce(buf, comm, 0, op)
    _binomial_broadcast(buf, comm, 0)
    return buf.reshape(shape)


def recursive_doubling_allreduce(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """Swap whole vectors with the rank 1, 2, 4, … away and reduce each time: lg p·(α + nβ + nγ).

    For p not a power of two, the ranks beyond p2 (the largest power of two ≤ p) are folded in first and out last.
    """
    buf, shape = _start(x, comm, op)
    p2 = 1 << (comm.size.bit_length() - 1)
    if _fold_in(buf, comm, p2, op):
        steps = p2.bit_length() - 1
        for k in range(steps):
            partner = comm.rank ^ (1 << k)
            # a copy to send: buf is reduced into while a transport may still be reading what it sends
            comm.sendrecv_reduce(buf.copy(), partner, buf, partner, op=op, label=f"recursive-doubling {k + 1}/{steps}")
    _fold_out(buf, comm, p2)
    return buf.reshape(shape)


def halving_doubling_allreduce(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """Rabenseifner: halving reduce-scatter, doubling all-gather: 2 lg p·α + 2(p−1)/p·nβ + (p−1)/p·nγ.

    For p not a power of two, the ranks beyond p2 (the largest power of two ≤ p) are folded in first and out last.
    """
    buf, shape = _start(x, comm, op)
    p2 = 1 << (comm.size.bit_length() - 1)
    if _fold_in(buf, comm, p2, op):
        r, steps = comm.rank, p2.bit_length() - 1
        bounds = _chunk_bounds(buf.size, p2)
        lo, hi = 0, p2  # the chunks this rank is responsible for: halved each step until only chunk r is left
        for k in range(steps):  # the partner is p2/2, p2/4, …, 1 away; the upper rank keeps the upper half
            mask, mid = p2 >> (k + 1), (lo + hi) // 2
            keep, give = ((mid, hi), (lo, mid)) if r & mask else ((lo, mid), (mid, hi))
            out, x_give = _span(buf, bounds, *keep), _span(buf, bounds, *give)
            comm.sendrecv_reduce(x_give, r ^ mask, out, r ^ mask, op=op, label=f"reduce-scatter {k + 1}/{steps}")
            lo, hi = keep
        for k in range(steps):  # swap blocks with the rank 1, 2, 4, … away; the block this rank holds doubles
            mask = 1 << k
            theirs = lo ^ mask
            mine_view, theirs_view = _span(buf, bounds, lo, lo + mask), _span(buf, bounds, theirs, theirs + mask)
            comm.sendrecv_into(mine_view, r ^ mask, theirs_view, r ^ mask, label=f"all-gather {k + 1}/{steps}")
            lo = min(lo, theirs)
    _fold_out(buf, comm, p2)
    return buf.reshape(shape)


ALGORITHMS = {
    "ps": ps_allreduce,
    "ring": ring_allreduce,
    "tree": tree_allreduce,
    "recursive_doubling": recursive_doubling_allreduce,
    "halving_doubling": halving_doubling_allreduce,
}


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
        return ALGORITHMS[algorithm](x, comm, op=op)
    x = np.asarray(x)
    if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a C-contiguous array of x's shape and dtype {x.shape} {x.dtype}, got {got}")
    if np.shares_memory(out, x):
        raise ValueError("out shares memory with x: pass a separate array (in-place all-reduce is not supported)")
    if algorithm == "ring":
        ring_allreduce(x, comm, op=op, out=out)  # returns a reshaped view of out; hand back out itself
        return out
    np.copyto(out, ALGORITHMS[algorithm](x, comm, op=op))
    return out


# --- the other collectives ---------------------------------------------------------------------------------------


def _check_root(root: Any, comm: Comm) -> int:
    if not isinstance(root, (int, np.integer)) or isinstance(root, bool) or not 0 <= root < comm.size:
        raise ValueError(f"root={root!r} is not a rank of this world of {comm.size}: use 0..{comm.size - 1}")
    return int(root)


def broadcast(x: Any, comm: Comm, root: int = 0) -> np.ndarray:
    """Every rank gets a copy of root's array (binomial tree, ⌈lg p⌉(α + nβ)); ranks other than root may pass None."""
    root = _check_root(root, comm)
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
    _binomial_broadcast(buf, comm, root)
    return buf.reshape(shape)


def reduce(x: Any, comm: Comm, root: int = 0, op: str = "sum") -> np.ndarray | None:
    """The elementwise ``op`` of all ranks' arrays on root (binomial tree, ⌈lg p⌉(α + nβ + nγ)); None elsewhere."""
    root = _check_root(root, comm)
    buf, shape = _start(x, comm, op)
    _binomial_reduce(buf, comm, root, op)
    return buf.reshape(shape) if comm.rank == root else None


def reduce_scatter(x: Any, comm: Comm, op: str = "sum") -> np.ndarray:
    """This rank's chunk (np.array_split of the flattened array into p) of the reduced array: ring, p−1 steps."""
    source, _ = _start(x, comm, op, copy=False)
    buf = np.empty_like(source)
    bounds = _chunk_bounds(buf.size, comm.size)
    if comm.size == 1:
        buf[...] = source
    _ring_reduce_scatter(buf, bounds, comm, op, source)
    return _span(buf, bounds, comm.rank, comm.rank + 1).copy()


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
    _span(buf, bounds, comm.rank, comm.rank + 1)[...] = x.ravel()
    _ring_allgather(buf, bounds, comm)
    return buf.reshape((sum(shape[0] for shape, _ in layouts), *x.shape[1:]))
