"""Serving a model on p ranks three ways — data-parallel replicas, tensor parallelism, a pipeline — on every transport.

A batch of B requests arrives; every scheme returns the B answers, equal to the model on one device:

- ``"data"``: every rank holds the whole model (a replica) and answers its share of the requests; no messages.
- ``"tensor"``: every rank holds a slice of every layer (Megatron pairs, `labkit.tensor_parallel`) and works on
  every request; ``"tensor-column"`` and ``"tensor-row"`` split every layer one way.
- ``"pipeline"``: every rank holds whole layers, and micro-batches stream through (`labkit.pipeline`).
- ``"single"``: rank 0 alone, the reference.
- ``"replicas"``: every rank answers the whole batch by itself (p copies of the work, as p independent request
  streams would give): what one rank computes at while p ranks share the machine.

`serve` runs one batch on ``"sim"``, ``"shm"`` or under MPI; `predict_time` is the α-β model: compute, the
collectives of each scheme, the pipeline's bubble. Ranks do NumPy on weight arrays (`tensor_parallel.from_keras`) and
never import TensorFlow. (Fitting the model to one machine's measured times is `benchmarks/serving_fit.py`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from labkit import comm, cost
from labkit.i18n import pad, plot_tr, tr
from labkit.parallel import pipeline as pl
from labkit.parallel import tensor as tp
from labkit.split import part

SCHEMES = ("single", "data", "replicas", "tensor", "tensor-column", "tensor-row", "pipeline")
SPLIT_OF = {"tensor": "megatron", "tensor-column": "column", "tensor-row": "row"}


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
    """Serve the batch x once with ``scheme`` on p ranks of ``transport`` ("sim", "shm" or "mpi")."""
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
) -> float:
    """The α-β model of one batch: the busiest rank's compute (`Device`) plus its scheme's messages on ``link``.

    Replicas send nothing: ⌈B/p⌉ requests through the whole model. A column-split layer all-gathers
    (p − 1)(α + n_max β), n_max the largest piece (rank 0's); a row-split layer all-reduces its output with the ring
    (`cost.allreduce_time`). A pipeline is `pipeline.pipeline_time`: its slowest stage once per micro-batch, and
    the bubble while the stages fill and drain.
    """
    device = device or tp.DEFAULT_DEVICE
    if scheme == "pipeline":
        m = micro_batches or default_micro_batches(batch, p)
        return pl.pipeline_time(layers, batch, p, m, link, device)
    if scheme in ("single", "data", "replicas"):
        rows = -(-batch // p) if scheme == "data" else batch
        return device.time(sum(layer.flops(rows) for layer in layers), calls=len(layers))
    total = 0.0
    for how, shard in tp.shard_model(layers, p, 0, SPLIT_OF[scheme]):  # rank 0 holds the largest shards
        total += device.time(shard.flops(batch))
        nbytes = batch * shard.n_out * shard.kernel.itemsize
        if how == "column":
            total += (p - 1) * link.message_time(nbytes)
        elif how in ("row", "pair-row"):
            total += cost.allreduce_time("ring", nbytes, p, link)
    return total


# --- latency against throughput ------------------------------------------------------------------------------------

COLORS = {"single": "0.3", "data": "#4c72b0", "replicas": "#8172b3", "tensor": "#dd8452", "pipeline": "#55a868"}


def plot_latency_throughput(panels: dict[str, dict[tuple[str, int], float]], title: str | None = None):
    """One panel per name: for each scheme, latency (ms) against throughput (requests/s), a point per batch size.

    Returns (figure, rows): rows are (panel, scheme, batch, latency s, throughput requests/s)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(4.2 * len(panels) + 0.6, 3.7), dpi=80)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.8, wspace=0.08)
    fig.suptitle(plot_tr("Latency and throughput") if title is None else title, fontsize=11)
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
        ax.set(title=name, xlabel=plot_tr("throughput (requests/s)"))
        ax.legend(fontsize=7)
    axes[0].set_ylabel(plot_tr("latency of a batch (ms)"))
    return fig, rows


def format_times(times: dict[tuple[str, int], float], predicted: dict | None = None) -> str:
    """Times as a table, one row per batch size, one column per scheme (ms), with predictions beside if given."""
    schemes = list(dict.fromkeys(s for s, _ in times))
    head = "".join(f"{s:>12}" + (pad(tr("model"), 9, ">") if predicted else "") for s in schemes)
    lines = [pad(tr("batch"), 6, ">") + head + "   (ms)"]
    for b in sorted({b for _, b in times}):
        cells = [
            f"{times[(s, b)] * 1e3:>12.3f}" + (f"{predicted[(s, b)] * 1e3:>9.3f}" if predicted else "") for s in schemes
        ]
        lines.append(f"{b:>6}" + "".join(cells))
    return "\n".join(lines)
