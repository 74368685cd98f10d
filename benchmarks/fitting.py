"""What the benchmarks measure beyond `labkit.measure`, to fit the α-β model closely to this one machine.

A model fitted to within a few per cent of one virtual machine needs more than the chapter's ping-pong and
exchange: the sender's side of a message (`send_times`), the shape check every labkit collective starts with
(`check_time`), labkit's all-gather (`allgather_times`), a ring step with the reduction (`reduce_step_times`),
ring steps timed back to back (``steps=``), caches emptied before each repeat (``off_cache=``, `cache_bytes`),
a quiet machine (`wait_idle`); one β on each side of the last-level cache is `regimes.py`. None of it is
in the lesson: these numbers are about one machine. `measure_shm` and `measure_mpi` here time all of it at once
(under MPI: ``mpiexec -n p python benchmarks/fitting.py --json FILE …``).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # labkit, when run as a script under mpiexec

from labkit import collectives, comm, cost, measure  # noqa: E402
from labkit.comm import mpirun  # noqa: E402


@dataclass
class Measurement(measure.Measurement):
    """`labkit.measure.Measurement` and what the benchmarks time beside it: the shape check, the sender's side of
    a message, labkit's all-gather, and how much was read before each repeat."""

    check: float = 0.0  # seconds of the shape-and-dtype check every labkit collective starts with (`check_time`)
    send: dict[int, float] = field(default_factory=dict)  # bytes -> seconds the sender spends in send (`send_times`)
    allgather: dict[int, float] = field(default_factory=dict)  # bytes each rank passes -> seconds (`allgather_times`)
    off_cache: int = 0  # bytes each rank read before each repeat, untimed (`timed`); 0: caches warm from the last

    def link(self, kind: str = "exchange", with_gamma: bool = True) -> cost.Link:
        """As `labkit.measure.Measurement.link`, and "send": what sending costs the sender alone (`send_times`),
        which a pipeline stage pays for every micro-batch it hands on."""
        if kind != "send":
            return super().link(kind, with_gamma)
        if len(self.send) < 2:
            raise ValueError(f"this Measurement has send times for {len(self.send)} size(s); fitting needs 2 or more")
        fitted = cost.fit_link(sorted(self.send), [self.send[n] for n in sorted(self.send)])
        return cost.Link(fitted.alpha, fitted.beta, self.gamma if with_gamma else 0.0)


def evictor(off_cache: int) -> np.ndarray:
    """An array of ``off_cache`` bytes to read (``.sum()``) before a timed call, pushing the call's code and data out
    of the cache (see `timed`); empty for 0."""
    if not isinstance(off_cache, (int, np.integer)) or off_cache < 0:
        raise ValueError(f"off_cache must be a whole number of bytes >= 0 (0: no eviction), got {off_cache!r}")
    return np.ones(int(off_cache) // 8)


def timed(c: comm.Comm, call: Callable[[], object], repeats: int, warmup: int = 2, off_cache: int = 0) -> list[float]:
    """`labkit.measure.timed`, each rank first reading ``off_cache`` bytes of its own before each repeat, untimed (as
    the Intel MPI Benchmarks' ``-off_cache`` option does): a call repeated in a loop finds its code and buffers in
    the core's cache, a collective inside a model finds them pushed out by the model's work."""
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


def _median(c, call, repeats: int, off_cache: int = 0, per: int = 1) -> float:
    return float(np.median(timed(c, call, repeats, off_cache=off_cache))) / per


def _check_steps(steps: int) -> int:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1 (ring steps per repeat), got {steps!r}")
    return int(steps)


def _repeat(steps: int, call: Callable, *args, **kwargs) -> None:
    for _ in range(steps):
        call(*args, **kwargs)


def pingpong_times(c: comm.Comm, sizes: Sequence[int], repeats: int = 20, off_cache: int = 0) -> dict[int, float]:
    """`labkit.measure.pingpong_times`, with ``off_cache`` (`timed`)."""

    def bounce(x):
        if c.rank == 0:
            c.send(x, 1)
            c.recv(1)
        elif c.rank == 1:
            c.send(c.recv(0), 0)

    buffers = {int(n): np.ones(n, np.uint8) for n in sizes}
    return {n: _median(c, lambda x=x: bounce(x), repeats, off_cache, per=2) for n, x in buffers.items()}


def exchange_times(
    c: comm.Comm, sizes: Sequence[int], repeats: int = 20, off_cache: int = 0, steps: int = 1
) -> dict[int, float]:
    """`labkit.measure.exchange_times` with ``off_cache`` and ``steps``: how many ring steps each repeat takes back
    to back (the time is per step). A ring takes p − 1 of them after one start: timed alone, each step would also
    pay for the ranks leaving the barrier at different times, which cost 5-12 µs a step here (4-256 KiB) when ranks
    share a core (p = 4 on 2 cores)."""
    right, left, steps = (c.rank + 1) % c.size, (c.rank - 1) % c.size, _check_steps(steps)
    out = {}
    for nbytes in sizes:
        x, into = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)
        call = lambda x=x, into=into: _repeat(steps, c.sendrecv_into, x, right, into, left)  # noqa: E731
        out[int(nbytes)] = _median(c, call, repeats, off_cache, steps)
    return out


def reduce_step_times(c: comm.Comm, sizes: Sequence[int], repeats: int = 20, steps: int = 1) -> dict[int, float]:
    """Median time of one reduce-scatter step of the ring: every rank sends float32 ``x`` to its right neighbour
    while adding what its left one sends to its own chunk, out ← mine + incoming (``sendrecv_reduce(acc=)``).
    Less `exchange_times` of the same size, it is what the reduction adds to a step: the γ of the ring here."""
    right, left, steps = (c.rank + 1) % c.size, (c.rank - 1) % c.size, _check_steps(steps)
    out = {}
    for nbytes in sizes:
        x, mine, into = (np.ones(nbytes // 4, np.float32) for _ in range(3))
        call = lambda x=x, m=mine, o=into: _repeat(steps, c.sendrecv_reduce, x, right, o, left, acc=m)  # noqa: E731
        out[int(nbytes)] = _median(c, call, repeats, per=steps)
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


def allreduce_times(
    c: comm.Comm, algorithms: Sequence[str], sizes: Sequence[int], repeats: int = 10, off_cache: int = 0
) -> dict[tuple[str, int], float]:
    """`labkit.measure.allreduce_times` (results checked), with ``off_cache`` (`timed`)."""
    out = {}
    for nbytes in sizes:
        x = np.full(nbytes // 4, c.rank + 1.0, np.float32)
        result = np.empty_like(x)
        for algorithm in algorithms:
            collectives.allreduce(x, c, algorithm=algorithm, out=result)
            if result.size and not result[0] == result[-1] == np.float32(c.size * (c.size + 1) / 2):
                raise comm.CommError(f"{algorithm} all-reduce gave {result[0]} on rank {c.rank}")
            call = lambda x=x, a=algorithm, r=result: collectives.allreduce(x, c, algorithm=a, out=r)  # noqa: E731
            out[(algorithm, int(nbytes))] = _median(c, call, repeats, off_cache)
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
        out[int(nbytes)] = _median(c, lambda x=x: collectives.allgather(x, c), repeats, off_cache)
    return out


def check_time(c: comm.Comm, repeats: int = 20, off_cache: int = 0) -> float:
    """Median time of the check every labkit collective starts with: an object all-gather of each rank's shape and
    dtype, so that a rank passing a different array raises instead of hanging (on MPI, a pickled all-gather)."""
    layout = ((1000,), np.dtype(np.float32).str)
    return _median(c, lambda: c.allgather_object(layout), repeats, off_cache)


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


def wait_idle(seconds: float, below: float = 0.3) -> None:
    """Wait (up to ``seconds``) until the 1-minute load average drops below ``below``: other work skews every time."""
    deadline = time.monotonic() + seconds
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        print(f"waiting for a quiet machine (load average {os.getloadavg()[0]:.2f}) …", flush=True)
        time.sleep(15)


def _measure(c: comm.Comm, algorithms, sizes, pingpong_sizes, repeats, gather_sizes=(), off_cache=0) -> dict:
    return {
        "check": check_time(c, max(repeats, 20), off_cache),
        "pingpong": pingpong_times(c, pingpong_sizes, repeats, off_cache),
        "exchange": exchange_times(c, pingpong_sizes, repeats, off_cache),
        "send": send_times(c, pingpong_sizes, repeats, off_cache),
        "gamma": measure.reduce_gamma(),
        "allreduce": allreduce_times(c, algorithms, sizes, repeats, off_cache),
        "allgather": allgather_times(c, gather_sizes, repeats, off_cache),
        "off_cache": off_cache,
    }


def measure_shm(p: int, algorithms, sizes, pingpong_sizes, repeats=10, gather_sizes=(), off_cache=0) -> Measurement:
    """Everything `_measure` times, on p real processes of this machine (``"shm"``); p >= 2."""
    args = (algorithms, sizes, pingpong_sizes, repeats, gather_sizes, off_cache)
    return Measurement("shm", p, **comm.run(_measure, p, transport="shm", timeout=600, args=args).values[0])


def measure_mpi(p: int, algorithms, sizes, pingpong_sizes, repeats=10, gather_sizes=(), off_cache=0) -> Measurement:
    """The same under ``mpiexec -n p python benchmarks/fitting.py`` (labkit's algorithms on `comm.from_mpi`)."""
    launcher = mpirun.require_mpiexec()
    with tempfile.TemporaryDirectory(prefix="labkit-fitting-") as tmp:
        out = Path(tmp) / "measure.json"
        argv = [launcher, "-n", str(p), sys.executable, __file__, "--json", str(out), "--algorithms", *algorithms]
        argv += ["--sizes", *map(str, sizes), "--pingpong", *map(str, pingpong_sizes), "--repeats", str(repeats)]
        argv += ["--off-cache", str(off_cache), "--gather", *map(str, gather_sizes)]
        done = mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not out.exists():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"mpiexec -n {p} failed (exit {done.returncode}):\n{tail}")
        got = json.loads(out.read_text())
    by_size = {k: {int(n): t for n, t in got[k].items()} for k in ("pingpong", "exchange", "send", "allgather")}
    allreduce = {(a, int(n)): t for a, n, t in got["allreduce"]}  # JSON keys are strings: back to (name, bytes)
    return Measurement("mpi", p, **(got | by_size | {"allreduce": allreduce}))


def main(argv: list[str] | None = None) -> None:
    """Under mpiexec: measure on `comm.from_mpi` and let rank 0 write the JSON that `measure_mpi` reads."""
    parser = argparse.ArgumentParser(description="the benchmarks' MPI measuring worker (run by measure_mpi)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--algorithms", nargs="+", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--pingpong", type=int, nargs="+", required=True)
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
