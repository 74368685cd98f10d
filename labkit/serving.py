"""Serving a model on p ranks three ways — data-parallel replicas, tensor parallelism, a pipeline — on every transport.

A batch of B requests arrives; every scheme returns the B answers, equal to the model on one device:

- ``"data"``: every rank holds the whole model (a replica) and answers its share of the requests; no messages.
- ``"tensor"``: every rank holds a slice of every layer (Megatron pairs, `labkit.tensor_parallel`) and works on
  every request; ``"tensor-column"`` and ``"tensor-row"`` split every layer one way.
- ``"pipeline"``: every rank holds whole layers, and micro-batches stream through (`labkit.pipeline`).
- ``"single"``: rank 0 alone, the reference.
- ``"replicas"``: every rank answers the whole batch by itself (p copies of the work, as p independent request
  streams would give): what one rank computes at while p ranks share the machine (`loaded_device`).

`serve` runs one batch on ``"sim"`` or ``"shm"``; `measure_serving` times batches on ``"shm"`` or under
``mpiexec -n p python -m labkit.serving`` (as `labkit.measure` times everything: barrier, slowest rank, median);
`predict_time` is the α-β model beside them. Ranks do NumPy on weight arrays (`tensor_parallel.from_keras`)
and never import TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labkit import comm, cost, measure
from labkit import pipeline as pl
from labkit import tensor_parallel as tp
from labkit.concepts import part

SCHEMES = ("single", "data", "replicas", "tensor", "tensor-column", "tensor-row", "pipeline")
SPLIT_OF = {"tensor": "megatron", "tensor-column": "column", "tensor-row": "row"}
BATCHES = (1, 4, 16, 64, 256, 1024)
#: Vector sizes (bytes) to fit `fit_ring_link` over: 1 kB … 1 MB, the range the article's MLP all-reduces and
#: all-gathers for these batches (20 B … 410 kB). Fit a line where it is used: MPI's per-message cost changes with
#: its protocol, so a line through 4 MB misses the small sizes (measured on MPI, 25–410 kB: off by up to 30 %
#: fitted to 4 kB … 4 MB, by up to 17 % fitted to these).
RING_SIZES = (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20)
#: Message sizes (bytes) to fit the pipeline's point-to-point link over (a ping-pong): 1 kB … 256 kB, around its
#: micro-batches' activations (2.4 kB … 51 kB for B ≥ 64): measured, a line fitted up to 4 MB missed them by up
#: to 27 %, one fitted to these by up to 16 %.
P2P_SIZES = (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18)
#: Bytes per rank to fit `fit_gather_link` over: 256 B … 256 kB, around the pieces column-split layers all-gather
#: for B ≥ 64 (the softmax layer's B · ⌈10 / p⌉ float32, 0.5 … 20 kB; the hidden layers' up to 205 kB).
GATHER_SIZES = (1 << 8, 1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18)


def default_micro_batches(batch: int, p: int) -> int:
    """GPipe's advice, M ≥ 4p micro-batches (bubble ≤ 20 %), as far as the batch allows; one when p = 1."""
    return 1 if p == 1 else min(batch, 4 * p)


def make_server(scheme: str, layers: list[tp.Dense], p: int, rank: int, micro_batches: int | None = None, device=None):
    """This rank's part of ``scheme``, sharded once: a function ``serve(x, comm)`` returning this rank's answers."""
    device = device or tp.DEFAULT_DEVICE
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}: use one of {SCHEMES}")
    if scheme == "single":
        return lambda x, c: _replica(x, layers, c, device) if c.rank == 0 else None
    if scheme == "data":
        return lambda x, c: _replica(x[part(len(x), c.size, c.rank)], layers, c, device)
    if scheme == "replicas":
        return lambda x, c: _replica(x, layers, c, device)
    if scheme == "pipeline":
        pl.stages(layers, p)  # fail early, on every rank, if the model has too few layers

        def run_pipeline(x, c):
            m = micro_batches or default_micro_batches(len(x), c.size)
            return pl.pipeline_forward(x, layers, c, m, device)

        return run_pipeline
    pieces = tp.shard_model(layers, p, rank, SPLIT_OF[scheme])
    return lambda x, c: tp.tensor_parallel_forward(x, pieces, c, device)


def _replica(x: np.ndarray, layers: list[tp.Dense], c: comm.Comm, device: tp.Device) -> np.ndarray:
    """The whole model on this rank's requests (none is fine: a replica with no requests idles)."""
    if len(x):
        c.compute(device.time(sum(layer.flops(len(x)) for layer in layers), calls=len(layers)), label="replica")
    return tp.forward(x, layers)


def collect(scheme: str, values: list) -> np.ndarray:
    """The B answers from every rank's return value: replicas' shares joined, or the rank that holds them all."""
    if scheme == "data":
        return np.concatenate(values)
    return values[-1] if scheme == "pipeline" else values[0]


@dataclass
class Served:
    """One batch served: the answers, the time (modelled on sim, measured on shm) and the run (trace, compute)."""

    output: np.ndarray
    time: float
    run: comm.Run


def _serve_rank(c: comm.Comm, scheme: str, x: np.ndarray, layers: list, micro_batches: int | None, device) -> Any:
    return make_server(scheme, layers, c.size, c.rank, micro_batches, device)(x, c)


def serve(
    scheme: str,
    x: np.ndarray,
    layers: list[tp.Dense],
    p: int,
    transport: str = "sim",
    link: cost.Link | None = None,
    device: tp.Device | None = None,
    micro_batches: int | None = None,
    timeout: float = 60.0,
) -> Served:
    """Serve the batch x once with ``scheme`` on p ranks of ``transport`` ("sim" or "shm")."""
    make_server(scheme, layers, p, 0, micro_batches)  # an impossible split raises here, before any rank starts
    if scheme == "pipeline" and micro_batches is not None:
        pl.check_micro_batches(len(x), micro_batches)
    args = (scheme, np.asarray(x, np.float32), layers, micro_batches, device)
    run = comm.run(_serve_rank, p, transport=transport, link=link, timeout=timeout, args=args)
    return Served(collect(scheme, run.values), run.time, run)


def memory_per_rank(layers: list[tp.Dense], p: int, scheme: str) -> list[int]:
    """Bytes of parameters each rank holds under ``scheme`` (rank 0 first)."""
    if scheme in SPLIT_OF:
        return tp.shard_bytes(layers, p, SPLIT_OF[scheme])
    if scheme == "pipeline":
        return [sum(layers[i].nbytes for i in stage) for stage in pl.stages(layers, p)]
    whole = sum(layer.nbytes for layer in layers)
    return [whole] + [whole if scheme in ("data", "replicas") else 0] * (p - 1)


def predict_time(
    scheme: str,
    batch: int,
    layers: list[tp.Dense],
    p: int,
    link: cost.Link,
    device: tp.Device | None = None,
    micro_batches: int | None = None,
    p2p: cost.Link | None = None,
    cores: int | None = None,
    check: float = 0.0,
    send: cost.Link | None = None,
    gather: cost.Link | None = None,
) -> float:
    """The α-β model of one batch: the busiest rank's compute (`Device`) plus the ring collectives on ``link``.

    A column-split layer all-gathers (p − 1)(α + n_max β), n_max the largest piece, on ``gather`` (default:
    ``link``; measured, `fit_gather_link`, as the all-gather's own setup is not the all-reduce's); a row-split layer
    all-reduces its output with the ring (`cost.allreduce_time`); a pipeline follows `pipeline.pipeline_time`, its
    single messages on ``p2p`` (default: ``link``; measured, a ping-pong's link, as a collective's α includes more).

    ``check``: seconds each collective spends first checking that every rank passes the same shape and dtype
    (`measure.check_time`; 0 on ``"sim"``, where it is free).

    ``send``: what a message costs its sender (`measure.send_times`), counted for each micro-batch a pipeline stage
    hands on (`pipeline.pipeline_time`); None on "sim", where sending does not hold the sender's clock.

    ``cores``: how many cores the p ranks share (default: one each). With fewer cores than ranks the ranks take
    turns, so every rank computes p / cores times slower (`shared_device`); the links, measured on the same
    crowded machine, already include what the turns cost the messages.
    """
    device = shared_device(device or tp.DEFAULT_DEVICE, p, cores)
    if scheme == "pipeline":
        m = micro_batches or default_micro_batches(batch, p)
        return pl.pipeline_time(layers, batch, p, m, p2p or link, device, send=send)
    if scheme in ("single", "data", "replicas"):
        rows = -(-batch // p) if scheme == "data" else batch
        return device.time(sum(layer.flops(rows) for layer in layers), calls=len(layers))
    total = 0.0
    for how, shard in tp.shard_model(layers, p, 0, SPLIT_OF[scheme]):  # rank 0 holds the largest shards
        total += device.time(shard.flops(batch))
        nbytes = batch * shard.n_out * shard.kernel.itemsize
        if how == "column":
            total += check + (p - 1) * (gather or link).message_time(nbytes)
        elif how in ("row", "pair-row"):
            total += check + cost.allreduce_time("ring", nbytes, p, link)
    return total


def shared_device(device: tp.Device, p: int, cores: int | None) -> tp.Device:
    """The device each of p ranks sees on ``cores`` cores, naively: p / cores times slower when ranks outnumber
    cores, as if taking turns were free. `loaded_device` measures the slowdown instead."""
    if cores is None or p <= cores:
        return device
    if int(cores) < 1:
        raise ValueError(f"cores must be ≥ 1 (or None: a core per rank), got {cores}")
    share = p / int(cores)
    return tp.Device(flops=device.flops / share, overhead=device.overhead * share)


def loaded_device(device: tp.Device, alone: tp.Device, loaded: tp.Device) -> tp.Device:
    """``device`` slowed as much as measured: ``alone`` fitted to one rank's times (`fit_device` on "single"),
    ``loaded`` to the same work on every one of p ranks at once ("replicas"). It is what `shared_device` assumes
    (p / cores) measured instead: ranks that take turns on too few cores also pay for the switches and the
    barriers' waits, and ranks on cores of their own still share the memory bus and the caches."""
    overhead = device.overhead * loaded.overhead / alone.overhead if alone.overhead > 0 else loaded.overhead
    return tp.Device(flops=device.flops * loaded.flops / alone.flops, overhead=overhead)


# --- measuring on real processes -----------------------------------------------------------------------------------


def repeats_for(batch: int) -> int:
    """More repeats for small batches: their times are tens of µs and noisy."""
    return 60 if batch <= 16 else 30 if batch <= 256 else 15


def single_threaded():
    """One BLAS thread in this process (a rank is one device, one core); nothing if threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn (through mlxtend); the limit is an optimisation
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _measure_rank(c: comm.Comm, schemes, batches, x, layers, repeats, micro_batches, shards=False, off_cache=0) -> dict:
    """On every rank: each scheme at each batch size, answers kept from a first call, then timed (`batch_time`);
    with ``shards``, also ("shards", B): this rank's Megatron pieces computed with no messages, every rank at once."""
    times, outputs = {}, {}
    with single_threaded():
        for scheme in schemes:
            for b in batches:
                serve_b, xb = make_server(scheme, layers, c.size, c.rank, micro_batches), x[:b]
                outputs[(scheme, b)] = serve_b(xb, c)
                times[(scheme, b)] = batch_time(c, lambda f=serve_b, xb=xb: f(xb, c), repeats or repeats_for(b))
        if shards:
            pieces = tp.shard_model(layers, c.size, c.rank, "megatron")
            for b in batches:
                forward = _shard_forward(pieces, b)
                times[("shards", b)] = batch_time(c, forward, repeats or repeats_for(b), off_cache=off_cache)
    return {"times": times, "outputs": outputs}


def batch_time(c: comm.Comm, call, repeats: int, warmup: int = 2, off_cache: int = 0) -> float:
    """Median seconds until every rank has finished ``call``: each repeat times the call *and a barrier after it*
    (without it, ranks that take turns on too few cores would each time only their own turn); an empty barrier
    right after each repeat measures what the barrier itself costs. The result is the median of the slowest rank's
    call-and-barrier less the fastest empty barrier (the least noisy estimate of the barrier: a busy machine makes
    some barriers slow, and subtracting those could leave a short call with a negative time). ``off_cache``: bytes
    each rank reads before each repeat, untimed (`measure.timed`)."""
    evict = measure.evictor(off_cache)
    for _ in range(warmup):
        call()
    both, empty = [], []
    for _ in range(repeats):
        evict.sum()
        c.barrier()
        start = time.perf_counter()
        call()
        c.barrier()
        middle = time.perf_counter()
        c.barrier()
        both.append(middle - start)
        empty.append(time.perf_counter() - middle)
    slowest = np.max(np.array(c.allgather_object((both, empty))), axis=0)
    return float(np.median(slowest[0]) - np.min(slowest[1]))


@dataclass
class Measured:
    """Median seconds per batch, (scheme, batch) → s, and the answers of each (checked against one device)."""

    transport: str
    p: int
    times: dict[tuple[str, int], float]
    outputs: dict[tuple[str, int], np.ndarray] = field(repr=False)


def _collected(transport: str, p: int, values: list[dict]) -> Measured:
    outputs = {k: collect(k[0], [v["outputs"][k] for v in values]) for k in values[0]["outputs"]}
    return Measured(transport, p, values[0]["times"], outputs)


def measure_serving(
    layers: list[tp.Dense],
    p: int,
    x: np.ndarray,
    schemes=("data", "tensor", "pipeline"),
    batches=BATCHES,
    transport: str = "shm",
    repeats: int | None = None,
    micro_batches: int | None = None,
    timeout: float = 600.0,
    shards: bool = False,
    off_cache: int = 0,
) -> Measured:
    """Time each scheme on p real processes, ``"shm"`` or ``"mpi"`` (``mpiexec -n p``); x holds max(batches) rows.

    ``shards``: also time ("shards", B), every rank computing its Megatron pieces at once with no messages (each
    repeat after reading ``off_cache`` bytes, as after a collective): `fit_shard_device` on those times is the
    device a tensor-parallel rank is while p ranks work, measured rather than scaled (`loaded_device`)."""
    x = np.asarray(x, np.float32)
    if len(x) < max(batches):
        raise ValueError(f"x has {len(x)} rows; the largest batch needs {max(batches)}")
    for scheme in schemes:  # an impossible split raises here, before any rank starts
        make_server(scheme, layers, p, 0, micro_batches)
    job = (tuple(schemes), tuple(batches), x[: max(batches)], layers, repeats, micro_batches, shards, off_cache)
    if transport == "shm":
        return _collected("shm", p, comm.run(_measure_rank, p, "shm", timeout=timeout, args=job).values)
    if transport != "mpi":
        raise ValueError(f"unknown transport {transport!r}: use 'shm' or 'mpi'")
    launcher = measure.mpiexec()
    if launcher is None:
        raise RuntimeError("no mpiexec found: pip install mpi4py mpich (or install MPI with your package manager)")
    with tempfile.TemporaryDirectory(prefix="labkit-serving-") as tmp:
        (Path(tmp) / "job.pkl").write_bytes(pickle.dumps(job))
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        argv = [launcher, "-n", str(p), sys.executable, "-m", "labkit.serving", tmp]
        done = measure.run_mpiexec(argv, capture_output=True, text=True, timeout=timeout, env=env)
        files = [Path(tmp) / f"rank{r}.pkl" for r in range(p)]
        if done.returncode != 0 or not all(f.exists() for f in files):
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"mpiexec -n {p} python -m labkit.serving failed (exit {done.returncode}):\n{tail}")
        return _collected("mpi", p, [pickle.loads(f.read_bytes()) for f in files])


def fit_device(single: Measured, layers: list[tp.Dense]) -> tp.Device:
    """The `Device` that fits measured one-rank times best: t(B) = L·overhead + FLOPs(B)/flops (`cost.fit_link`)."""
    rows = sorted((b, t) for (_, b), t in single.times.items())
    flops = [sum(layer.flops(b) for layer in layers) for b, _ in rows]
    fitted = cost.fit_link(flops, [t for _, t in rows])
    return tp.Device(flops=1 / fitted.beta, overhead=fitted.alpha / len(layers))


def shard_times(
    layers: list[tp.Dense], p: int, batches, repeats: int = 30, split: str = "megatron", off_cache: int = 0
) -> dict:
    """{batch: seconds} of rank 0's share of a tensor-parallel forward pass, computed alone in this process (no
    messages): each piece's product, bias and activation, and the transposes a column piece's all-gather makes.
    Narrow shards multiply at a lower rate than whole layers, so `fit_device` on these times is the device that
    tensor-parallel ranks really are. ``off_cache``: bytes read before each repeat, untimed (`measure.timed`), so
    that the weights start out of the core's cache, as they do after a collective."""
    pieces = tp.shard_model(layers, p, 0, split)
    out, evict = {}, measure.evictor(off_cache)
    with single_threaded():
        for b in batches:
            forward = _shard_forward(pieces, b)
            for _ in range(2):
                forward()
            times = []
            for _ in range(repeats):
                evict.sum()
                start = time.perf_counter()
                forward()
                times.append(time.perf_counter() - start)
            out[b] = float(np.median(times))
    return out


def _shard_forward(pieces: list[tp.Piece], batch: int, seed: int = 0):
    """A function computing ``pieces`` for ``batch`` rows of random input, with no messages: each piece's product,
    bias and activation, and the transposes a column piece's all-gather makes."""
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((batch, shard.n_in), np.float32) for _, shard in pieces]

    def forward():
        for (how, shard), x in zip(pieces, inputs, strict=True):
            z = x @ shard.kernel + shard.bias
            if how == "column":  # its all-gather sends zᵀ and transposes what it gathers back
                z = np.ascontiguousarray(np.ascontiguousarray(z.T).T)
            tp.ACTIVATIONS[shard.activation](z)

    return forward


def fit_shard_device(times: dict, layers: list[tp.Dense], p: int, split: str = "megatron") -> tp.Device:
    """The `Device` that fits `shard_times` best, as `fit_device` does for whole layers."""
    pieces = tp.shard_model(layers, p, 0, split)
    rows = sorted(times.items())
    flops = [sum(shard.flops(b) for _, shard in pieces) for b, _ in rows]
    fitted = cost.fit_link(flops, [t for _, t in rows])
    return tp.Device(flops=1 / fitted.beta, overhead=fitted.alpha / len(pieces))


def fit_ring_link(m: measure.Measurement) -> cost.Link:
    """The link that labkit's own ring all-reduce sees: t = check + 2(p − 1)(α + (n/p)β), fitted to m's ring times
    less ``m.check`` (the shape check every collective starts with, measured on its own; pass it to
    `predict_time` as ``check=``, once per collective).

    Its α includes what a step of a Python collective costs beyond one message (the loop, the bookkeeping), which a
    ping-pong or a single exchange does not show."""
    rows = sorted((n, t) for (algorithm, n), t in m.allreduce.items() if algorithm == "ring")
    steps = 2 * (m.p - 1)
    return cost.fit_link([n / m.p for n, _ in rows], [max(t - m.check, 1e-9) / steps for _, t in rows])


def fit_gather_link(m: measure.Measurement) -> cost.Link:
    """The link that labkit's all-gather sees: t = check + (p − 1)(α + nβ), n the bytes each rank passes, fitted to
    m's all-gather times (`measure.allgather_times`, ``gather_sizes=`` of `measure.measure_shm`) less ``m.check``.

    Its α holds what the all-gather does once around its p − 1 steps (laying out the pieces, a fresh output array),
    which is not what a step of the all-reduce costs: measured here, 6–12 µs more than the ring link's α."""
    if len(m.allgather) < 2:
        raise ValueError(
            f"this Measurement has all-gather times for {len(m.allgather)} size(s); fitting needs 2 or more: measure "
            "with gather_sizes=serving.GATHER_SIZES"
        )
    rows = sorted(m.allgather.items())
    return cost.fit_link([n for n, _ in rows], [max(t - m.check, 1e-9) / (m.p - 1) for _, t in rows])


def main(argv: list[str] | None = None) -> None:
    """Under mpiexec: run the job in DIR/job.pkl on `comm.from_mpi`; every rank writes DIR/rank<r>.pkl."""
    parser = argparse.ArgumentParser(description="labkit's MPI serving worker (run by measure_serving)")
    parser.add_argument("dir")
    folder = Path(parser.parse_args(argv).dir)
    c = comm.from_mpi(timeout=300)
    result = _measure_rank(c, *pickle.loads((folder / "job.pkl").read_bytes()))
    (folder / f"rank{c.rank}.pkl").write_bytes(pickle.dumps(result))


# --- latency against throughput ------------------------------------------------------------------------------------

COLORS = {"single": "0.3", "data": "#4c72b0", "replicas": "#8172b3", "tensor": "#dd8452", "pipeline": "#55a868"}


def plot_latency_throughput(panels: dict[str, dict[tuple[str, int], float]], title: str = "Latency and throughput"):
    """One panel per name: for each scheme, latency (ms) against throughput (requests/s), a point per batch size.

    Returns (figure, rows): rows are (panel, scheme, batch, latency s, throughput requests/s)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(4.2 * len(panels) + 0.6, 3.7), dpi=80)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.8, wspace=0.08)
    fig.suptitle(title, fontsize=11)
    rows = []
    for ax, (name, times) in zip(axes, panels.items(), strict=True):
        for scheme in dict.fromkeys(s for s, _ in times):
            batches = sorted(b for s, b in times if s == scheme)
            lat = np.array([times[(scheme, b)] for b in batches])
            thr = np.array(batches) / lat
            ax.loglog(thr, lat * 1e3, "o-", color=COLORS.get(scheme), label=scheme, markersize=3.5, linewidth=1)
            if not rows or rows[-1][0] != name:  # the first curve of a panel says which point is which batch
                for b, x, y in zip(batches, thr, lat, strict=True):
                    ax.annotate(f"B={b}", (x, y * 1e3), fontsize=6, xytext=(-6, 4), textcoords="offset points")
            rows += [(name, scheme, b, t, b / t) for b, t in zip(batches, lat, strict=True)]
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels collide
        ax.set(title=name, xlabel="throughput (requests/s)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("latency of a batch (ms)")
    return fig, rows


def format_times(times: dict[tuple[str, int], float], predicted: dict | None = None) -> str:
    """Times as a table, one row per batch size, one column per scheme (ms), with predictions beside if given."""
    schemes = list(dict.fromkeys(s for s, _ in times))
    head = "".join(f"{s:>12}" + (f"{'model':>9}" if predicted else "") for s in schemes)
    lines = [f"{'batch':>6}{head}   (ms)"]
    for b in sorted({b for _, b in times}):
        cells = [
            f"{times[(s, b)] * 1e3:>12.3f}" + (f"{predicted[(s, b)] * 1e3:>9.3f}" if predicted else "") for s in schemes
        ]
        lines.append(f"{b:>6}" + "".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
