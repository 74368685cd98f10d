"""Point-to-point communication: one `Comm` interface, three transports.

An algorithm is a function ``fn(comm, *args)`` that uses only the methods of `Comm`, like mpi4py code does.
`run` calls it on every rank of a world and returns a `Run`: the value each rank returned, the trace of every
message, and the time (modelled on ``"sim"``, measured on ``"shm"``). Under ``mpiexec``, `from_mpi` gives the
same interface over MPI's COMM_WORLD.

- `base`: the interface and what every transport shares;
- `sim`: ranks as threads on logical α-β clocks (counts and times every message, deterministically);
- `shm/`: ranks as real processes on one machine, exchanging through shared memory (the control block, the
  mailboxes, the launcher);
- `mpi`: mpi4py's COMM_WORLD behind the same interface; `mpirun` starts ``mpiexec`` from Python and cleans up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from labkit.comm.base import (
    OPS,
    Comm,
    CommBase,
    CommError,
    EagerComm,
    Message,
    Run,
    check_acc,
    check_op,
    expect_like,
    reduce_into,
)

__all__ = [
    "OPS",
    "TRANSPORTS",
    "Comm",
    "CommBase",
    "CommError",
    "EagerComm",
    "Message",
    "Run",
    "check_acc",
    "check_op",
    "expect_like",
    "from_mpi",
    "reduce_into",
    "run",
]

#: The transports `run` starts; MPI runs are started by ``mpiexec`` and joined with `from_mpi`.
TRANSPORTS = ("sim", "shm")


def run(
    fn: Callable[..., Any],
    world_size: int,
    transport: str = "sim",
    link: Any = None,
    timeout: float = 30.0,
    args: tuple = (),
    payloads: bool = False,
) -> Run:
    """Call ``fn(comm, *args)`` on every rank of a world of ``world_size`` ranks and collect a `Run`.

    ``transport="sim"`` runs the ranks as threads on logical α-β clocks (``link``: a `labkit.cost.Link`;
    None means `labkit.cost.DEFAULT_LINK`); ``"shm"`` runs them as real processes exchanging through shared
    memory and measures the time. A rank that raises, dies or waits longer than ``timeout`` seconds makes
    every other rank raise `CommError`, and `run` raises it too. ``payloads=True`` (sim only) keeps a copy of
    every message's data in the trace, for step-through views of small runs.
    """
    if not isinstance(world_size, (int, np.integer)) or isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"world_size must be a whole number >= 1, got {world_size!r}")
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(comm, *args), got {type(fn).__name__}")
    if not timeout or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if transport == "sim":
        from labkit.comm import sim

        return sim.run_sim(fn, int(world_size), link=link, timeout=timeout, args=tuple(args), payloads=payloads)
    if transport == "shm":
        if link is not None or payloads:
            raise ValueError("link= and payloads= are for transport='sim' only; 'shm' measures real processes")
        from labkit.comm.shm import launcher

        return launcher.run_shm(fn, int(world_size), timeout=timeout, args=tuple(args))
    if transport == "mpi":
        raise ValueError(
            "MPI runs are started by mpiexec, not by run(): use `mpiexec -n P python script.py` "
            "and comm.from_mpi() inside the script"
        )
    raise ValueError(f"unknown transport {transport!r}: use one of {TRANSPORTS}")


def from_mpi(timeout: float = 30.0) -> Comm:
    """The `Comm` of this process under ``mpiexec -n P python script.py`` (mpi4py's COMM_WORLD)."""
    from labkit.comm import mpi

    return mpi.MPIComm(timeout=timeout)
