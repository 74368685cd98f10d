"""Measuring the serving schemes on real processes, and fitting the α-β model's device and links to this machine.

`measure_serving` times every scheme of `labkit.parallel.serving` on ``"shm"`` or under ``mpiexec -n p python
benchmarks/serving_fit.py DIR`` (a barrier, the slowest rank, the median, as `labkit.measure` times everything);
`fit_device`, `fit_shard_device`, `fit_ring_link` and `fit_gather_link` turn measurements into a `Device` and links;
`predict_time_fitted` extends the chapter's `serving.predict_time` with what one machine needs to be predicted
within 25 %: the shape check of every collective, the all-gather's own link, the ping-pong link and the sender's
cost of a pipeline's messages, ranks sharing cores. `benchmarks/inference.py` uses all of it.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # labkit, when run as a script under mpiexec

import fitting  # noqa: E402

from labkit import comm, cost  # noqa: E402
from labkit.comm import mpirun  # noqa: E402
from labkit.parallel import pipeline as pl  # noqa: E402
from labkit.parallel import serving  # noqa: E402
from labkit.parallel import tensor as tp  # noqa: E402

BATCHES = (1, 4, 16, 64, 256, 1024)  # batch sizes measured and modelled: one request to a thousand
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


@dataclass
class ServingMeasurement:
    """Median seconds per batch, (scheme, batch) → s, and the answers of each (checked against one device)."""

    transport: str
    p: int
    times: dict[tuple[str, int], float]
    outputs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False)


def batch_time(c: comm.Comm, call, repeats: int, warmup: int = 2, off_cache: int = 0) -> float:
    """Median seconds until every rank has finished ``call``: each repeat times the call *and a barrier after it*
    (without it, ranks that take turns on too few cores would each time only their own turn); an empty barrier
    right after each repeat measures what the barrier itself costs. The result is the median of the slowest rank's
    call-and-barrier less the fastest empty barrier (the least noisy estimate of the barrier: a busy machine makes
    some barriers slow, and subtracting those could leave a short call with a negative time). ``off_cache``: bytes
    each rank reads before each repeat, untimed (`fitting.timed`)."""
    evict = fitting.evictor(off_cache)
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


def _measure_rank(c: comm.Comm, schemes, batches, x, layers, repeats, micro_batches, shards=False, off_cache=0) -> dict:
    """On every rank: each scheme at each batch size, answers kept from a first call, then timed (`batch_time`);
    with ``shards``, also ("shards", B): this rank's Megatron pieces computed with no messages, every rank at once."""
    times, outputs = {}, {}
    with single_threaded():
        for scheme in schemes:
            for b in batches:
                serve_b, xb = serving.make_server(scheme, layers, c.size, c.rank, micro_batches), x[:b]
                outputs[(scheme, b)] = serve_b(xb, c)
                times[(scheme, b)] = batch_time(c, lambda f=serve_b, xb=xb: f(xb, c), repeats or repeats_for(b))
        if shards:
            pieces = tp.shard_model(layers, c.size, c.rank, "megatron")
            for b in batches:
                forward = _shard_forward(pieces, b)
                times[("shards", b)] = batch_time(c, forward, repeats or repeats_for(b), off_cache=off_cache)
    return {"times": times, "outputs": outputs}


def _collected(transport: str, p: int, values: list[dict]) -> ServingMeasurement:
    outputs = {k: serving.collect(k[0], [v["outputs"][k] for v in values]) for k in values[0]["outputs"]}
    return ServingMeasurement(transport, p, values[0]["times"], outputs)


def measure_serving(
    layers, p: int, x, schemes=("data", "tensor", "pipeline"), batches=BATCHES, transport="shm", repeats=None,
    micro_batches=None, timeout=600.0, shards=False, off_cache=0,
) -> ServingMeasurement:  # fmt: skip
    """Time each scheme on p real processes, ``"shm"`` or ``"mpi"`` (``mpiexec -n p``); x holds max(batches) rows.

    ``shards``: also time ("shards", B), every rank computing its Megatron pieces at once with no messages (each
    repeat after reading ``off_cache`` bytes, as after a collective): `fit_shard_device` on those times is the
    device a tensor-parallel rank is while p ranks work."""
    x = np.asarray(x, np.float32)
    if len(x) < max(batches):
        raise ValueError(f"x has {len(x)} rows; the largest batch needs {max(batches)}")
    for scheme in schemes:  # an impossible split raises here, before any rank starts
        serving.make_server(scheme, layers, p, 0, micro_batches)
    job = (tuple(schemes), tuple(batches), x[: max(batches)], layers, repeats, micro_batches, shards, off_cache)
    if transport == "shm":
        return _collected("shm", p, comm.run(_measure_rank, p, "shm", timeout=timeout, args=job).values)
    if transport != "mpi":
        raise ValueError(f"unknown transport {transport!r}: use 'shm' or 'mpi'")
    with tempfile.TemporaryDirectory(prefix="labkit-serving-") as tmp:
        (Path(tmp) / "job.pkl").write_bytes(pickle.dumps(job))
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        argv = [mpirun.require_mpiexec(), "-n", str(p), sys.executable, __file__, tmp]
        done = mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=timeout, env=env)
        files = [Path(tmp) / f"rank{r}.pkl" for r in range(p)]
        if done.returncode != 0 or not all(f.exists() for f in files):
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"mpiexec -n {p} python {__file__} failed (exit {done.returncode}):\n{tail}")
        return _collected("mpi", p, [pickle.loads(f.read_bytes()) for f in files])


def fit_device(single: ServingMeasurement, layers: list[tp.Dense]) -> tp.Device:
    """The `Device` that fits measured one-rank times best: t(B) = L·overhead + FLOPs(B)/flops (`cost.fit_link`)."""
    return _fit_device({b: t for (_, b), t in single.times.items()}, layers)


def _fit_device(times: dict, layers: list) -> tp.Device:
    """t(B) = len(layers)·overhead + Σ FLOPs(B)/flops fitted to {batch: seconds}; ``layers``: the whole model's or
    one rank's shards."""
    rows = sorted(times.items())
    fitted = cost.fit_link([sum(layer.flops(b) for layer in layers) for b, _ in rows], [t for _, t in rows])
    return tp.Device(flops=1 / fitted.beta, overhead=fitted.alpha / len(layers))


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


def shard_times(layers, p: int, batches, repeats: int = 30, split: str = "megatron", off_cache: int = 0) -> dict:
    """{batch: seconds} of rank 0's share of a tensor-parallel forward pass, computed alone in this process (no
    messages). Narrow shards multiply at a lower rate than whole layers, so `fit_shard_device` on these times is the
    device a tensor-parallel rank is when it runs alone. ``off_cache``: as in `fitting.timed`."""
    pieces, out, evict = tp.shard_model(layers, p, 0, split), {}, fitting.evictor(off_cache)
    with single_threaded():
        for b in batches:
            forward, times = _shard_forward(pieces, b), []
            for _ in range(2):
                forward()
            for _ in range(repeats):
                evict.sum()
                start = time.perf_counter()
                forward()
                times.append(time.perf_counter() - start)
            out[b] = float(np.median(times))
    return out


def fit_shard_device(times: dict, layers: list[tp.Dense], p: int, split: str = "megatron") -> tp.Device:
    """The `Device` that fits `shard_times` best, as `fit_device` does for whole layers."""
    return _fit_device(times, [shard for _, shard in tp.shard_model(layers, p, 0, split)])


def fit_ring_link(m: fitting.Measurement) -> cost.Link:
    """The link labkit's own ring all-reduce sees: t = check + 2(p − 1)(α + (n/p)β), fitted to m's ring times less
    ``m.check`` (the shape check every collective starts with; `predict_time_fitted` adds it once a collective).
    Its α includes what a step of a Python collective costs beyond one message (the loop, the bookkeeping)."""
    rows = sorted((n, t) for (algorithm, n), t in m.allreduce.items() if algorithm == "ring")
    steps = 2 * (m.p - 1)
    return cost.fit_link([n / m.p for n, _ in rows], [max(t - m.check, 1e-9) / steps for _, t in rows])


def fit_gather_link(m: fitting.Measurement) -> cost.Link:
    """The link labkit's all-gather sees: t = check + (p − 1)(α + nβ), n the bytes each rank passes, fitted to m's
    all-gather times less ``m.check``. Its α holds what the all-gather does once around its p − 1 steps (laying out
    the pieces, a fresh output array): measured here, 6–19 µs more than the ring link's α."""
    if len(m.allgather) < 2:
        raise ValueError(
            f"this Measurement has all-gather times for {len(m.allgather)} size(s); fitting needs 2 or more: measure "
            "with gather_sizes=serving_fit.GATHER_SIZES"
        )
    rows = sorted(m.allgather.items())
    return cost.fit_link([n for n, _ in rows], [max(t - m.check, 1e-9) / (m.p - 1) for _, t in rows])


def shared_device(device: tp.Device, p: int, cores: int | None) -> tp.Device:
    """The device each of p ranks sees on ``cores`` cores, naively: p / cores times slower when ranks outnumber
    cores, as if taking turns were free. The benchmark measures the slowdown instead: `fit_device` on every rank
    serving a whole batch at once ("replicas"), `fit_shard_device` on every rank computing its shards ("shards")."""
    if cores is None or p <= cores:
        return device
    if int(cores) < 1:
        raise ValueError(f"cores must be ≥ 1 (or None: a core per rank), got {cores}")
    share = p / int(cores)
    return tp.Device(flops=device.flops / share, overhead=device.overhead * share)


def pipeline_time_fitted(layers, batch: int, p: int, micro_batches: int, link, device, send=None) -> float:
    """`pipeline.pipeline_time`, each stage but the last also handing its output on: ``send.message_time(n)`` per
    micro-batch, what a message costs its sender (`fitting.send_times`; LogP's send overhead). The α-β model charges
    a message to its receiver only, as "sim" does; a real sender spends time in every send, and on the slowest
    stage that time repeats M times. None: not counted (the chapter's model)."""
    pl.check_micro_batches(batch, micro_batches)
    rows, plan, per_stage = -(-batch // micro_batches), pl.stages(layers, p), []
    for s, stage in enumerate(plan):
        mine = [layers[i] for i in stage]
        receive = link.message_time(rows * mine[0].n_in * 4) if s > 0 else 0.0
        give = send.message_time(rows * mine[-1].n_out * 4) if send is not None and s < len(plan) - 1 else 0.0
        per_stage.append(receive + device.time(sum(layer.flops(rows) for layer in mine), calls=len(mine)) + give)
    return sum(per_stage) + (micro_batches - 1) * max(per_stage)


def predict_time_fitted(
    scheme, batch, layers, p, link, device=None, micro_batches=None, p2p=None, cores=None, check=0.0, send=None,
    gather=None,
) -> float:  # fmt: skip
    """`serving.predict_time` with what this machine adds. ``check``: seconds each collective first spends checking
    that every rank passes the same shape and dtype (`fitting.check_time`). ``gather``: the column split's
    all-gather on a link of its own (`fit_gather_link`; default ``link``). ``p2p``: the pipeline's single messages
    on a ping-pong's link (default ``link``), and ``send``: their sender's cost (`pipeline_time_fitted`). ``cores``:
    how many cores the p ranks share (`shared_device`; the links, measured as crowded, are left as they are)."""
    device = shared_device(device or tp.DEFAULT_DEVICE, p, cores)
    if scheme == "pipeline":
        m = micro_batches or serving.default_micro_batches(batch, p)
        return pipeline_time_fitted(layers, batch, p, m, p2p or link, device, send=send)
    total = serving.predict_time(scheme, batch, layers, p, link, device, micro_batches)
    for how, shard in tp.shard_model(layers, p, 0, serving.SPLIT_OF[scheme]) if scheme in serving.SPLIT_OF else []:
        nbytes = batch * shard.n_out * shard.kernel.itemsize
        if how == "column":  # the chapter's all-gather, moved to the gather link
            total += check + (p - 1) * ((gather or link).message_time(nbytes) - link.message_time(nbytes))
        elif how in ("row", "pair-row"):
            total += check
    return total


def main(argv: list[str] | None = None) -> None:
    """Under mpiexec: run the job in DIR/job.pkl on `comm.from_mpi`; every rank writes DIR/rank<r>.pkl."""
    parser = argparse.ArgumentParser(description="the benchmarks' MPI serving worker (run by measure_serving)")
    parser.add_argument("dir")
    folder = Path(parser.parse_args(argv).dir)
    c = comm.from_mpi(timeout=300)
    result = _measure_rank(c, *pickle.loads((folder / "job.pkl").read_bytes()))
    (folder / f"rank{c.rank}.pkl").write_bytes(pickle.dumps(result))


if __name__ == "__main__":
    main()
