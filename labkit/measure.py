"""Measure collectives on real processes (``"shm"``) and under MPI, and compare them with the α-β model.

Every timing is taken the same way: all ranks pass a barrier, each times the call, and a repeat counts as the
slowest rank's time; a size's time is the median over repeats after a warm-up. The same measuring function runs
on both transports through `comm.run`. The benchmarks fit more
(`benchmarks/fitting.py`): what fits one machine well is no part of the lesson.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from labkit import collectives, comm, cost


@dataclass
class Measurement:
    """What one measuring run found: ping-pong and ring-exchange times, γ, and all-reduce times."""

    transport: str
    p: int
    pingpong: dict[int, float]  # bytes -> one-way seconds (half a round trip between ranks 0 and 1)
    exchange: dict[int, float] = field(default_factory=dict)  # bytes -> seconds of one ring step, all ranks busy
    gamma: float = 0.0  # seconds per byte of np.add, measured in one process
    allreduce: dict[tuple[str, int], float] = field(default_factory=dict)  # (algorithm, bytes) -> seconds

    def link(self, kind: str = "exchange", with_gamma: bool = True) -> cost.Link:
        """α and β fitted (`cost.fit_link`) to the ping-pong (one message, the machine idle) or to the ring
        exchange (every rank sending and receiving at once, as in an all-reduce: contention included)."""
        kinds = {"pingpong": self.pingpong, "exchange": self.exchange}
        if kind not in kinds:
            raise ValueError(f"unknown kind {kind!r}: use one of {list(kinds)}")
        times = kinds[kind]
        if len(times) < 2:
            raise ValueError(f"this Measurement has {kind} times for {len(times)} size(s); fitting needs 2 or more")
        sizes = sorted(times)
        fitted = cost.fit_link(sizes, [times[n] for n in sizes])
        return cost.Link(fitted.alpha, fitted.beta, self.gamma if with_gamma else 0.0)

    def compare(self, kind: str = "exchange", with_gamma: bool = True) -> list[dict]:
        """Per (algorithm, size): measured time, the α-β(-γ) prediction on the fitted link, the relative error."""
        link, rows = self.link(kind, with_gamma), []
        for (algorithm, nbytes), measured in sorted(self.allreduce.items()):
            predicted = cost.allreduce_time(algorithm, nbytes, self.p, link)
            error = (predicted - measured) / measured
            rows.append(dict(algorithm=algorithm, bytes=nbytes, measured=measured, predicted=predicted, error=error))
        return rows


def timed(c: comm.Comm, call: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """The slowest rank's time of each of ``repeats`` calls, each started right after a barrier (same on all ranks)."""
    for _ in range(warmup):
        call()
    mine = []
    for _ in range(repeats):
        c.barrier()
        start = time.perf_counter()
        call()
        mine.append(time.perf_counter() - start)
    return np.max(np.array(c.allgather_object(mine)), axis=0).tolist()


def pingpong_times(c: comm.Comm, sizes: Sequence[int], repeats: int = 20) -> dict[int, float]:
    """Median one-way time (half a round trip between ranks 0 and 1) for messages of each size in bytes."""
    out = {}
    for nbytes in sizes:
        x = np.ones(nbytes, np.uint8)

        def bounce(x=x):
            if c.rank == 0:
                c.send(x, 1)
                c.recv(1)
            elif c.rank == 1:
                c.send(c.recv(0), 0)

        out[int(nbytes)] = float(np.median(timed(c, bounce, repeats))) / 2
    return out


def exchange_times(c: comm.Comm, sizes: Sequence[int], repeats: int = 20) -> dict[int, float]:
    """Median time of one ring step: every rank sends to its right neighbour while receiving from its left."""
    right, left, out = (c.rank + 1) % c.size, (c.rank - 1) % c.size, {}
    for nbytes in sizes:
        x, into = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)
        call = lambda x=x, into=into: c.sendrecv_into(x, right, into, left)  # noqa: E731
        out[int(nbytes)] = float(np.median(timed(c, call, repeats)))
    return out


def allreduce_times(
    c: comm.Comm, algorithms: Sequence[str], sizes: Sequence[int], repeats: int = 10
) -> dict[tuple[str, int], float]:
    """Median time of each algorithm's all-reduce of float32 vectors of each size in bytes; results are checked."""
    out = {}
    for nbytes in sizes:
        x, want = np.full(nbytes // 4, c.rank + 1.0, np.float32), np.float32(c.size * (c.size + 1) / 2)
        result = np.empty_like(x)  # reused, as an MPI receive buffer is: no fresh pages to fault in each repeat
        for algorithm in algorithms:
            collectives.allreduce(x, c, algorithm=algorithm, out=result)
            if result.size and not (result[0] == want and result[-1] == want):
                raise comm.CommError(f"{algorithm} all-reduce gave {result[0]}, not {want}, on rank {c.rank}")
            call = lambda x=x, a=algorithm, r=result: collectives.allreduce(x, c, algorithm=a, out=r)  # noqa: E731
            out[(algorithm, int(nbytes))] = float(np.median(timed(c, call, repeats)))
    return out


def reduce_gamma(nbytes: int = 1 << 24, repeats: int = 10) -> float:
    """Seconds per byte of an in-place float32 np.add over ``nbytes``: the γ of the cost model on this machine."""
    a, b = np.ones(nbytes // 4, np.float32), np.ones(nbytes // 4, np.float32)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        np.add(a, b, out=a)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:])) / nbytes


def _measure(c: comm.Comm, algorithms, sizes, pingpong_sizes, repeats) -> dict:
    return {
        "pingpong": pingpong_times(c, pingpong_sizes, repeats),
        "exchange": exchange_times(c, pingpong_sizes, repeats),
        "gamma": reduce_gamma(),
        "allreduce": allreduce_times(c, algorithms, sizes, repeats),
    }


PINGPONG_SIZES = (1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22)  # 1 kB … 4 MB: both α and β show
SIZES = (1 << 12, 1 << 16, 1 << 20, 1 << 22)  # 4 kB … 4 MB: quick enough for a notebook


def measure(
    p: int,
    transport: str = "shm",
    algorithms: Sequence[str] = cost.ALGORITHMS,
    sizes: Sequence[int] = SIZES,
    pingpong_sizes: Sequence[int] = PINGPONG_SIZES,
    repeats: int = 10,
    timeout: float = 300.0,
) -> Measurement:
    """Ping-pong, exchange and all-reduce times on p real processes of this machine (``"shm"`` or ``"mpi"``)."""
    comm.check_transport(transport, ("shm", "mpi"), "measure")
    if p < 2:
        raise ValueError(f"measuring needs p >= 2 processes (a ping-pong takes two), got p={p}")
    args = (algorithms, sizes, pingpong_sizes, repeats)
    run = comm.run(_measure, p, transport=transport, timeout=timeout, args=args)
    return Measurement(transport, p, **run.values[0])  # _measure's keys are the fields' names


def measure_shm(p: int, **kwargs) -> Measurement:
    """`measure` on the ``"shm"`` transport (processes exchanging through shared memory)."""
    return measure(p, "shm", **kwargs)


def measure_mpi(p: int, **kwargs) -> Measurement:
    """`measure` under ``mpiexec -n p`` (labkit's algorithms on `comm.from_mpi`)."""
    return measure(p, "mpi", **kwargs)
