"""Measuring the serving schemes on real processes, and fitting the α-β model's device and links to what was measured.

`measure_serving` times every scheme of `labkit.serving` on ``"shm"`` or under ``mpiexec -n p python -m
labkit.serving_measure`` (as `labkit.measure` times everything: a barrier, the slowest rank, the median);
`fit_device`, `fit_shard_device`, `fit_ring_link` and `fit_gather_link` turn measurements into the `Device` and the
links that `serving.predict_time` takes. `labkit.serving` re-exports every public name here, so a notebook needs
one module.
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

from labkit import comm, cost, measure
from labkit.comm import mpirun
from labkit.parallel import tensor as tp

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


def _measure_rank(c: comm.Comm, schemes, batches, x, layers, repeats, micro_batches, shards=False, off_cache=0) -> dict:
    """On every rank: each scheme at each batch size, answers kept from a first call, then timed (`batch_time`);
    with ``shards``, also ("shards", B): this rank's Megatron pieces computed with no messages, every rank at once."""
    from labkit.parallel import serving

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
    from labkit.parallel import serving

    outputs = {k: serving.collect(k[0], [v["outputs"][k] for v in values]) for k in values[0]["outputs"]}
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
    device a tensor-parallel rank is while p ranks work."""
    from labkit.parallel import serving

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
    launcher = mpirun.require_mpiexec()
    with tempfile.TemporaryDirectory(prefix="labkit-serving-") as tmp:
        (Path(tmp) / "job.pkl").write_bytes(pickle.dumps(job))
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        argv = [launcher, "-n", str(p), sys.executable, "-m", "labkit.serving_measure", tmp]
        done = mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=timeout, env=env)
        files = [Path(tmp) / f"rank{r}.pkl" for r in range(p)]
        if done.returncode != 0 or not all(f.exists() for f in files):
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(
                f"mpiexec -n {p} python -m labkit.serving_measure failed (exit {done.returncode}):\n{tail}"
            )
        return _collected("mpi", p, [pickle.loads(f.read_bytes()) for f in files])


def fit_device(single: Measured, layers: list[tp.Dense]) -> tp.Device:
    """The `Device` that fits measured one-rank times best: t(B) = L·overhead + FLOPs(B)/flops (`cost.fit_link`)."""
    return _fit_device({b: t for (_, b), t in single.times.items()}, layers)


def _fit_device(times: dict, layers: list) -> tp.Device:
    """t(B) = len(layers)·overhead + Σ FLOPs(B)/flops fitted to {batch: seconds} (`cost.fit_link`); ``layers``: the
    whole model's or one rank's shards."""
    rows = sorted(times.items())
    flops = [sum(layer.flops(b) for layer in layers) for b, _ in rows]
    fitted = cost.fit_link(flops, [t for _, t in rows])
    return tp.Device(flops=1 / fitted.beta, overhead=fitted.alpha / len(layers))


def shard_times(
    layers: list[tp.Dense], p: int, batches, repeats: int = 30, split: str = "megatron", off_cache: int = 0
) -> dict:
    """{batch: seconds} of rank 0's share of a tensor-parallel forward pass, computed alone in this process (no
    messages): each piece's product, bias and activation, and the transposes a column piece's all-gather makes.
    Narrow shards multiply at a lower rate than whole layers, so `fit_shard_device` on these times is the device a
    tensor-parallel rank is when it runs alone. ``off_cache``: bytes read before each repeat, untimed
    (`measure.timed`), so that the weights start out of the core's cache, as they do after a collective."""
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
    return _fit_device(times, [shard for _, shard in tp.shard_model(layers, p, 0, split)])


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
    which is not what a step of the all-reduce costs: measured here, 6–19 µs more than the ring link's α."""
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


if __name__ == "__main__":
    main()
