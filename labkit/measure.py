"""Measure collectives on real processes (``"shm"``) and under MPI, and fit the α-β model to what was measured.

Every timing is taken the same way: all ranks pass a barrier, each times the call, and a repeat counts as the
slowest rank's time; a size's time is the median over repeats after a warm-up. Under MPI the measuring function
runs in ``mpiexec -n p python -m labkit.measure …``, which writes its results as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labkit import collectives, comm, cost
from labkit.comm.mpirun import mpiexec, require_mpiexec, run_mpiexec  # noqa: F401 (chapter 8 calls measure.run_mpiexec)


@dataclass
class Measurement:
    """What one measuring run found: ping-pong, exchange and send times, all-reduce and all-gather times, and the
    links fitted to them."""

    transport: str
    p: int
    pingpong: dict[int, float]  # bytes -> one-way seconds (half a round trip between ranks 0 and 1)
    exchange: dict[int, float] = field(default_factory=dict)  # bytes -> seconds of one ring step, all ranks busy
    gamma: float = 0.0  # seconds per byte of np.add, measured in one process
    allreduce: dict[tuple[str, int], float] = field(default_factory=dict)  # (algorithm, bytes) -> seconds
    check: float = 0.0  # seconds of the shape-and-dtype check every labkit collective starts with (`check_time`)
    send: dict[int, float] = field(default_factory=dict)  # bytes -> seconds the sender spends in send (`send_times`)
    allgather: dict[int, float] = field(default_factory=dict)  # bytes each rank passes -> seconds (`allgather_times`)
    off_cache: int = 0  # bytes each rank read before each repeat, untimed (`timed`); 0: caches warm from the last

    def link(self, kind: str = "exchange", with_gamma: bool = True) -> cost.Link:
        """α and β fitted by least squares (`labkit.cost.fit_link`) to the ping-pong, the ring exchange or the
        sender's side of a message ("send").

        The ping-pong sees one message on an idle machine; the exchange sees every rank sending and receiving at
        once, as in an all-reduce, so its β includes the contention for memory bandwidth and cores. "send" is what
        sending costs the sender alone (`send_times`): a pipeline stage pays it for every micro-batch it hands on.
        """
        kinds = {"pingpong": self.pingpong, "exchange": self.exchange, "send": self.send}
        if kind not in kinds:
            raise ValueError(f"unknown kind {kind!r}: use one of {list(kinds)}")
        times = kinds[kind]
        if len(times) < 2:
            raise ValueError(
                f"this Measurement has {kind} times for {len(times)} size(s); fitting a link needs 2 or more "
                "(measure_shm and measure_mpi time every pingpong_sizes entry)"
            )
        sizes = sorted(times)
        fitted = cost.fit_link(sizes, [times[n] for n in sizes])
        return cost.Link(fitted.alpha, fitted.beta, self.gamma if with_gamma else 0.0)

    def compare(self, kind: str = "exchange", with_gamma: bool = True) -> list[dict]:
        """Per (algorithm, size): measured time, the α-β(-γ) prediction on the fitted link, the relative error."""
        link, rows = self.link(kind, with_gamma), []
        for (algorithm, nbytes), measured in sorted(self.allreduce.items()):
            predicted = cost.allreduce_time(algorithm, nbytes, self.p, link)
            rows.append(
                {
                    "algorithm": algorithm,
                    "bytes": nbytes,
                    "measured": measured,
                    "predicted": predicted,
                    "error": (predicted - measured) / measured,
                }
            )
        return rows


def evictor(off_cache: int) -> np.ndarray:
    """An array of ``off_cache`` bytes to read (``.sum()``) before a timed call, pushing the call's code and data out
    of the cache (see `timed`); empty for 0."""
    if not isinstance(off_cache, (int, np.integer)) or off_cache < 0:
        raise ValueError(f"off_cache must be a whole number of bytes >= 0 (0: no eviction), got {off_cache!r}")
    return np.ones(int(off_cache) // 8)


def timed(c: comm.Comm, call: Callable[[], object], repeats: int, warmup: int = 2, off_cache: int = 0) -> list[float]:
    """The slowest rank's time of each of ``repeats`` calls, each started right after a barrier (same on all ranks).

    ``off_cache``: bytes of an array of its own that each rank reads before each repeat, untimed (as the Intel MPI
    Benchmarks' ``-off_cache`` option does). A call repeated in a loop finds its code and buffers still in the
    core's cache from the repeat before; a collective inside a model finds them pushed out by the model's work. With
    the core's own cache's size (`cache_bytes` ``level=2``) each repeat starts as a collective in a model does."""
    evict = evictor(off_cache)
    for _ in range(warmup):
        call()
    mine = []
    for _ in range(repeats):
        evict.sum()  # reads the whole array (nothing when off_cache is 0)
        c.barrier()
        start = time.perf_counter()
        call()
        mine.append(time.perf_counter() - start)
    return np.max(np.array(c.allgather_object(mine)), axis=0).tolist()


def pingpong_times(c: comm.Comm, sizes: Sequence[int], repeats: int = 20, off_cache: int = 0) -> dict[int, float]:
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

        out[int(nbytes)] = float(np.median(timed(c, bounce, repeats, off_cache=off_cache))) / 2
    return out


def send_times(c: comm.Comm, sizes: Sequence[int], repeats: int = 20, off_cache: int = 0) -> dict[int, float]:
    """Median time rank 0 spends in ``send`` of a message of each size to rank 1, which is already waiting in
    ``recv``: the sender's side of a message (LogP's send overhead o, with its copy), which the α-β model charges
    to the receiver alone. The same on every rank (rank 0 shares its times). ``off_cache``: as in `timed`."""
    out, evict = {}, evictor(off_cache)
    for nbytes in sizes:
        x, mine = np.ones(nbytes, np.uint8), []
        for _ in range(repeats + 2):  # two to warm up
            evict.sum()
            c.barrier()
            if c.rank == 0:
                start = time.perf_counter()
                c.send(x, 1)
                mine.append(time.perf_counter() - start)
            elif c.rank == 1:
                c.recv(0)
        out[int(nbytes)] = float(np.median(mine[2:])) if c.rank == 0 else 0.0
    return c.allgather_object(out)[0]


def exchange_times(
    c: comm.Comm, sizes: Sequence[int], repeats: int = 20, off_cache: int = 0, steps: int = 1
) -> dict[int, float]:
    """Median time of one ring step: every rank sends to its right neighbour while receiving from its left, into
    an array it reuses (``sendrecv_into``, as the ring's all-gather steps do).

    ``steps``: how many steps each repeat takes back to back (the time is per step). A ring takes p − 1 of them
    after one start: timed alone, each step would also pay for the ranks leaving the barrier at different times,
    which cost 5-12 µs a step here (4-256 KiB) when ranks share a core (p = 4 on 2 cores)."""
    right, left, steps = (c.rank + 1) % c.size, (c.rank - 1) % c.size, _check_steps(steps)
    out = {}
    for nbytes in sizes:
        x, into = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)
        call = lambda x=x, into=into: _repeat(steps, c.sendrecv_into, x, right, into, left)  # noqa: E731
        out[int(nbytes)] = float(np.median(timed(c, call, repeats, off_cache=off_cache))) / steps
    return out


def _check_steps(steps: int) -> int:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1 (ring steps per repeat), got {steps!r}")
    return int(steps)


def _repeat(steps: int, call: Callable, *args, **kwargs) -> None:
    for _ in range(steps):
        call(*args, **kwargs)


def cache_bytes(root: str | Path = "/sys/devices/system/cpu/cpu0/cache", level: int | None = None) -> int | None:
    """Size in bytes of this machine's last-level (largest) CPU cache, or of its largest cache of ``level`` (2: on
    most machines a core's own cache, the one the work between two collectives fills), read from Linux's sysfs;
    None elsewhere."""
    sizes = []
    for entry in Path(root).glob("index*"):
        try:
            text = (entry / "size").read_text().strip()
            if level is not None and int((entry / "level").read_text()) != level:
                continue
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
        digits = text[:-1] if scale > 1 else text
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=None)


def reduce_gamma(nbytes: int = 1 << 24, repeats: int = 10) -> float:
    """Seconds per byte of an in-place float32 np.add over ``nbytes``: the γ of the cost model on this machine."""
    a, b = np.ones(nbytes // 4, np.float32), np.ones(nbytes // 4, np.float32)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        np.add(a, b, out=a)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:])) / nbytes


def reduce_step_times(c: comm.Comm, sizes: Sequence[int], repeats: int = 20, steps: int = 1) -> dict[int, float]:
    """Median time of one reduce-scatter step of the ring: every rank sends float32 ``x`` to its right neighbour
    while adding what its left one sends to its own chunk, out ← mine + incoming (``sendrecv_reduce(acc=)``).
    Less `exchange_times` of the same size, it is what the reduction adds to a step: the γ of the ring here.
    ``steps``: as in `exchange_times`."""
    right, left, steps = (c.rank + 1) % c.size, (c.rank - 1) % c.size, _check_steps(steps)
    out = {}
    for nbytes in sizes:
        x, mine, into = (np.ones(nbytes // 4, np.float32) for _ in range(3))
        call = lambda x=x, m=mine, o=into: _repeat(steps, c.sendrecv_reduce, x, right, o, left, acc=m)  # noqa: E731
        out[int(nbytes)] = float(np.median(timed(c, call, repeats))) / steps
    return out


def allreduce_times(
    c: comm.Comm, algorithms: Sequence[str], sizes: Sequence[int], repeats: int = 10, off_cache: int = 0
) -> dict[tuple[str, int], float]:
    """Median time of each algorithm's all-reduce of float32 vectors of each size in bytes; results are checked.
    ``off_cache``: as in `timed`."""
    out = {}
    for nbytes in sizes:
        x = np.full(nbytes // 4, c.rank + 1.0, np.float32)
        want = np.float32(c.size * (c.size + 1) / 2)
        result = np.empty_like(x)  # reused, as an MPI receive buffer is: no fresh pages to fault in each repeat
        for algorithm in algorithms:
            collectives.allreduce(x, c, algorithm=algorithm, out=result)
            if result.size and not (result[0] == want and result[-1] == want):
                raise comm.CommError(f"{algorithm} all-reduce gave {result[0]}, not {want}, on rank {c.rank}")
            call = lambda x=x, a=algorithm, r=result: collectives.allreduce(x, c, algorithm=a, out=r)  # noqa: E731
            times = timed(c, call, repeats, off_cache=off_cache)
            out[(algorithm, int(nbytes))] = float(np.median(times))
    return out


def allgather_times(c: comm.Comm, sizes: Sequence[int], repeats: int = 20, off_cache: int = 0) -> dict[int, float]:
    """Median time of labkit's all-gather (`collectives.allgather`, the column split's collective) when every rank
    passes ``nbytes`` of float32: its p − 1 ring steps and what it does around them (the shape check, the layout of
    the pieces, a fresh output array), which the all-reduce's per-step α does not hold. Results are checked."""
    out = {}
    for nbytes in sizes:
        x = np.full(max(nbytes // 4, 1), c.rank, np.float32)
        got = collectives.allgather(x, c).reshape(c.size, -1)
        if not np.array_equal(got[:, -1], np.arange(c.size, dtype=np.float32)):
            raise comm.CommError(f"all-gather gave {got[:, -1]}, not the ranks in order, on rank {c.rank}")
        call = lambda x=x: collectives.allgather(x, c)  # noqa: E731
        out[int(nbytes)] = float(np.median(timed(c, call, repeats, off_cache=off_cache)))
    return out


def check_time(c: comm.Comm, repeats: int = 20, off_cache: int = 0) -> float:
    """Median time of the check every labkit collective starts with: an object all-gather of each rank's shape and
    dtype, so that a rank passing a different array raises instead of hanging. It costs what a collective costs
    beyond its messages (on MPI, a pickled all-gather: tens of µs)."""
    layout = ((1000,), np.dtype(np.float32).str)
    return float(np.median(timed(c, lambda: c.allgather_object(layout), repeats, off_cache=off_cache)))


def _measure(c: comm.Comm, algorithms, sizes, pingpong_sizes, repeats, gather_sizes=(), off_cache=0) -> dict:
    two = c.size > 1
    return {
        "check": check_time(c, max(repeats, 20), off_cache) if two else 0.0,
        "pingpong": pingpong_times(c, pingpong_sizes, repeats, off_cache) if two else {},
        "exchange": exchange_times(c, pingpong_sizes, repeats, off_cache) if two else {},
        "send": send_times(c, pingpong_sizes, repeats, off_cache) if two else {},
        "gamma": reduce_gamma(),
        "allreduce": allreduce_times(c, algorithms, sizes, repeats, off_cache),
        "allgather": allgather_times(c, gather_sizes, repeats, off_cache) if two else {},
        "off_cache": off_cache,
    }


PINGPONG_SIZES = (1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22)  # 1 kB … 4 MB: both α and β show
SIZES = (1 << 12, 1 << 16, 1 << 20, 1 << 22)  # 4 kB … 4 MB: quick enough for a notebook


def measure_shm(
    p: int,
    algorithms: Sequence[str] = cost.ALGORITHMS,
    sizes: Sequence[int] = SIZES,
    pingpong_sizes: Sequence[int] = PINGPONG_SIZES,
    repeats: int = 10,
    timeout: float = 300.0,
    gather_sizes: Sequence[int] = (),
    off_cache: int = 0,
) -> Measurement:
    """Ping-pong and all-reduce times on p real processes of this machine (the ``"shm"`` transport), and the
    all-gather's for each of ``gather_sizes`` (bytes per rank; none by default). ``off_cache``: bytes each rank
    reads before each repeat (`timed`), so that every call starts with cold caches, as in a model."""
    if p < 2:
        raise ValueError(f"measuring needs p >= 2 processes (a ping-pong takes two), got p={p}")
    run = comm.run(
        _measure,
        p,
        transport="shm",
        timeout=timeout,
        args=(algorithms, sizes, pingpong_sizes, repeats, gather_sizes, off_cache),
    )
    return Measurement("shm", p, **run.values[0])  # _measure's keys are the fields' names


def wait_idle(seconds: float, below: float = 0.3) -> None:
    """Wait (up to ``seconds``) until the 1-minute load average drops below ``below``: other work skews every time."""
    deadline = time.monotonic() + seconds
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        print(f"waiting for a quiet machine (load average {os.getloadavg()[0]:.2f}) …", flush=True)
        time.sleep(15)


def measure_mpi(
    p: int,
    algorithms: Sequence[str] = cost.ALGORITHMS,
    sizes: Sequence[int] = SIZES,
    pingpong_sizes: Sequence[int] = PINGPONG_SIZES,
    repeats: int = 10,
    timeout: float = 300.0,
    gather_sizes: Sequence[int] = (),
    off_cache: int = 0,
) -> Measurement:
    """The same measurements under ``mpiexec -n p`` (labkit's algorithms on `comm.from_mpi`)."""
    launcher = require_mpiexec()
    with tempfile.TemporaryDirectory(prefix="labkit-measure-") as tmp:
        out = Path(tmp) / "measure.json"
        argv = [
            launcher,
            "-n",
            str(p),
            sys.executable,
            "-m",
            "labkit.measure",
            "--json",
            str(out),
            "--algorithms",
            *algorithms,
            "--sizes",
            *map(str, sizes),
            "--pingpong",
            *map(str, pingpong_sizes),
            "--repeats",
            str(repeats),
            "--off-cache",
            str(off_cache),
            "--gather",
            *map(str, gather_sizes),
        ]
        done = run_mpiexec(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not out.exists():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"mpiexec -n {p} failed (exit {done.returncode}):\n{tail}")
        got = json.loads(out.read_text())
    by_size = {k: {int(n): t for n, t in got[k].items()} for k in ("pingpong", "exchange", "send", "allgather")}
    allreduce = {(a, int(n)): t for a, n, t in got["allreduce"]}  # JSON keys are strings: back to (name, bytes)
    return Measurement("mpi", p, **(got | by_size | {"allreduce": allreduce}))


def main(argv: list[str] | None = None) -> None:
    """Under mpiexec: measure on `comm.from_mpi` and let rank 0 write the JSON that `measure_mpi` reads."""
    parser = argparse.ArgumentParser(description="labkit's MPI measuring worker (run by measure_mpi)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--algorithms", nargs="+", default=list(cost.ALGORITHMS))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--pingpong", type=int, nargs="+", default=list(PINGPONG_SIZES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--gather", type=int, nargs="*", default=[])
    parser.add_argument("--off-cache", type=int, default=0)
    args = parser.parse_args(argv)
    c = comm.from_mpi(timeout=300)
    got = _measure(c, args.algorithms, args.sizes, args.pingpong, args.repeats, args.gather, args.off_cache)
    if c.rank == 0:
        rows = [[a, n, t] for (a, n), t in got["allreduce"].items()]
        Path(args.json).write_text(json.dumps(got | {"allreduce": rows}))


if __name__ == "__main__":
    main()
