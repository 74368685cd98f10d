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
    "ALL_TRANSPORTS",
    "MAX_SIM_RANKS",
    "OPS",
    "TRANSPORTS",
    "check_transport",
    "whole_ranks",
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

#: Every transport the kit has. A function that takes ``transport=`` accepts some of them, and `check_transport`
#: names the ones it accepts when given another.
ALL_TRANSPORTS = ("sim", "shm", "mpi")

#: The most ranks ``"sim"`` runs (a thread each); far more is almost always a byte count passed where p goes.
MAX_SIM_RANKS = 4096

#: The transports `run` starts (``"mpi"`` through ``mpiexec`` on this machine; a script of your own started with
#: ``mpiexec`` joins with `from_mpi` instead, on one machine or many).
TRANSPORTS = ("sim", "shm", "mpi")


def check_transport(transport: Any, allowed: tuple[str, ...], where: str) -> str:
    """``transport`` if ``where`` (e.g. "comm.run") runs on it, else a ValueError naming the ones that apply."""
    if transport in allowed:
        return transport
    if transport in ALL_TRANSPORTS:
        raise ValueError(f"{where} does not run on transport={transport!r}: use one of {allowed}")
    raise ValueError(f"unknown transport {transport!r}: labkit's are {ALL_TRANSPORTS}, and {where} takes {allowed}")


def whole_ranks(p: Any, name: str = "p") -> int:
    """p as an int if it is a whole number of ranks >= 1, else a ValueError."""
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 1:
        raise ValueError(f"{name} (the number of ranks) must be a whole number >= 1, got {p!r}")
    return int(p)


def run(
    fn: Callable[..., Any],
    p: int | None = None,
    transport: str = "sim",
    link: Any = None,
    timeout: float = 30.0,
    args: tuple = (),
    payloads: bool = False,
    *,
    world_size: int | None = None,
) -> Run:
    """Call ``fn(comm, *args)`` on every rank of a world of p ranks and collect a `Run`.

    ``transport="sim"`` runs the ranks as threads on logical α-β clocks (``link``: a `labkit.cost.Link`;
    None means `labkit.cost.DEFAULT_LINK`); ``"shm"`` runs them as real processes exchanging through shared
    memory and measures the time; ``"mpi"`` starts them with ``mpiexec`` (`mpijob`) and measures. A rank that
    raises, dies or waits longer than ``timeout`` seconds makes every other rank raise `CommError`, and `run`
    raises it too. ``payloads=True`` (sim only) keeps a copy of
    every message's data in the trace, for step-through views of small runs. ``world_size=`` is another name for
    p (MPI's), kept so that code written with it runs.
    """
    if world_size is not None:
        if p is not None:
            raise TypeError("pass the number of ranks once: p or world_size (they are the same), not both")
        p = world_size
    p = whole_ranks(p)
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(comm, *args), got {type(fn).__name__}")
    if not timeout or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    check_transport(transport, TRANSPORTS, "comm.run")
    if transport == "sim":
        if p > MAX_SIM_RANKS:
            raise ValueError(
                f"p={p:,} ranks is more than 'sim' runs (a thread each, at most {MAX_SIM_RANKS}): if that number is a"
                " message size, labkit's order is (algorithm, nbytes, p, link), as in cost.allreduce_time"
            )
        from labkit.comm import sim

        return sim.run_sim(fn, p, link=link, timeout=timeout, args=tuple(args), payloads=payloads)
    if link is not None or payloads:
        raise ValueError(f"link= and payloads= are for transport='sim' only; {transport!r} measures real processes")
    if transport == "mpi":
        from labkit.comm import mpijob

        return mpijob.run_mpi(fn, p, timeout=timeout, args=tuple(args))
    from labkit.comm.shm import launcher

    return launcher.run_shm(fn, p, timeout=timeout, args=tuple(args))


def from_mpi(timeout: float = 30.0) -> Comm:
    """The `Comm` of this process under ``mpiexec -n P python script.py`` (mpi4py's COMM_WORLD)."""
    from labkit.comm import mpi

    return mpi.MPIComm(timeout=timeout)
