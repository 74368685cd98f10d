"""What every collective checks first: that all ranks pass numeric arrays of one shape and dtype, a valid root; and
`span`, the view of a buffer's chunks a step works on."""

from __future__ import annotations

from typing import Any

import numpy as np

from labkit.comm import Comm, CommError, check_op
from labkit.i18n import tr

NUMERIC = "biufc"  # bool, signed and unsigned integers, floats, complex


def check_same(x: np.ndarray, comm: Comm) -> None:
    """Raise on every rank unless all ranks passed numeric arrays of one shape and dtype (metadata, free on sim)."""
    layouts = comm.allgather_object((x.shape, x.dtype.str))
    shape0, dtype0 = layouts[0]
    for r, (shape, dtype) in enumerate(layouts):
        if np.dtype(dtype).kind not in NUMERIC:
            raise TypeError(f"rank {r} passed {np.dtype(dtype)} data: collectives reduce numeric arrays only")
        if (shape, dtype) != (shape0, dtype0):
            raise CommError(
                tr(
                    "rank {r} sent shape {shape} {dtype}, rank 0 expected {shape0} {dtype0}: every rank must pass "
                    "arrays of the same shape and dtype",
                    **dict(r=r, shape=shape, dtype=np.dtype(dtype), shape0=shape0, dtype0=np.dtype(dtype0)),
                )
            )


def start(x: Any, comm: Comm, op: str, copy: bool = True) -> tuple[np.ndarray, tuple[int, ...]]:
    """A flat copy of x to work in (or, copy=False, a flat view only to read) and x's shape, once checked."""
    check_op(op)
    x = np.asarray(x)
    check_same(x, comm)
    return (x.flatten() if copy else x.reshape(-1)), x.shape


def check_root(root: Any, comm: Comm) -> int:
    if not isinstance(root, (int, np.integer)) or isinstance(root, bool) or not 0 <= root < comm.size:
        raise ValueError(f"root={root!r} is not a rank of this world of {comm.size}: use 0..{comm.size - 1}")
    return int(root)


def span(buf: np.ndarray, bounds: list[int], first: int, stop: int) -> np.ndarray:
    """The view of buf holding chunks first … stop − 1."""
    return buf[bounds[first] : bounds[stop]]
