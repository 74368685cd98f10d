"""Pipeline-parallel inference: whole layers on each rank (a stage), micro-batches streaming through, GPipe-style.

Rank 0 cuts a batch of B requests into M micro-batches; each rank runs its stage on a micro-batch, sends the
activations to the next rank and goes on with the next micro-batch (GPipe: Huang et al. 2019, "GPipe: Efficient
Training of Giant Neural Networks using Pipeline Parallelism"). With S equal stages of t seconds per micro-batch and
free links the batch takes (M + S − 1)·t, of which each rank idles (S − 1)·t: the **bubble**, (S − 1)/(M + S − 1)
of the time. With per-stage times d_s (receive, then compute) the time is Σ d_s + (M − 1)·max d_s: the slowest
stage sets the pace. `labkit.viz.gantt` draws a real ``"sim"`` run as a Gantt chart, and
`labkit.widgets.pipeline_explorer` wires it to controls.
"""

from __future__ import annotations

import numpy as np

from labkit import cost
from labkit.comm import Comm, Run
from labkit.i18n import tr
from labkit.parallel.tensor import DEFAULT_DEVICE, Dense, Device, forward
from labkit.split import part, stage_layers


def simple_stages(n_layers: int, p: int) -> list[range]:
    """Layers per stage, as equal in number as whole layers allow (`split.stage_layers`, for every rank)."""
    return [stage_layers(n_layers, p, r) for r in range(p)]


def stages(layers: list[Dense], p: int, balance: str = "flops") -> list[range]:
    """Consecutive layers per stage: ``balance="flops"`` makes the largest stage's FLOPs as small as possible
    (dynamic programming over the cut points); ``"count"`` gives each stage the same number of layers."""
    if not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"p must be a whole number >= 1, got {p!r}")
    n = len(layers)
    if p > n:
        raise ValueError(
            tr(
                "{n} layers cannot fill {p} pipeline stages (a stage holds at least one whole layer): use p <= {n}, "
                "or split the layers themselves with tensor parallelism",
                n=n,
                p=p,
            )
        )
    if balance == "count":
        return simple_stages(n, p)
    if balance != "flops":
        raise ValueError(f"unknown balance {balance!r}: use 'flops' or 'count'")
    work = [0, *np.cumsum([layer.flops(1) for layer in layers]).tolist()]  # FLOPs of layers [0, i)
    best = {(0, 0): (0, [])}  # (stages used, layers placed) -> (largest stage so far, cut points)
    for s in range(1, p + 1):
        for i in range(s, n - (p - s) + 1):
            options = [
                (max(best[(s - 1, j)][0], work[i] - work[j]), [*best[(s - 1, j)][1], i])
                for j in range(s - 1, i)
                if (s - 1, j) in best
            ]
            # on a tie the later cuts win, so that equal layers are split as np.array_split splits them
            best[(s, i)] = min(options, key=lambda option: (option[0], [-cut for cut in option[1]]))
    cuts = [0, *best[(p, n)][1]]
    return [range(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def check_micro_batches(batch: int, micro_batches: int) -> None:
    """Raise a ValueError unless a batch of ``batch`` requests can be cut into ``micro_batches`` non-empty parts."""
    if not isinstance(micro_batches, (int, np.integer)) or not 1 <= micro_batches <= batch:
        raise ValueError(f"cannot cut a batch of {batch} into {micro_batches!r} micro-batches: use 1 to {batch}")


def pipeline_forward(
    x: np.ndarray,
    layers: list[Dense],
    comm: Comm,
    micro_batches: int = 4,
    device: Device = DEFAULT_DEVICE,
    balance: str = "flops",
) -> np.ndarray | None:
    """GPipe inference: the last rank returns forward(x, layers), the other ranks None."""
    p, r, batch = comm.size, comm.rank, len(x)
    check_micro_batches(batch, micro_batches)
    mine = [layers[i] for i in stages(layers, p, balance)[r]]
    outputs = []
    for m in range(micro_batches):
        label = f"micro-batch {m + 1}/{micro_batches}"
        a = x[part(batch, micro_batches, m)] if r == 0 else comm.recv(r - 1, label=label)
        comm.compute(device.time(sum(layer.flops(len(a)) for layer in mine), calls=len(mine)), label=label)
        a = forward(a, mine)
        if r < p - 1:
            comm.send(a, r + 1, label=label)
        else:
            outputs.append(a)
    return np.concatenate(outputs) if r == p - 1 else None


def bubble_fraction(p: int, micro_batches: int) -> float:
    """GPipe's idle share of the time with p equal stages and free links: (p − 1) / (M + p − 1)."""
    return (p - 1) / (micro_batches + p - 1)


def measured_bubble(run: Run, p: int) -> float:
    """The idle share of a sim run: 1 − (compute time of all ranks) / (p × the run's time)."""
    busy = sum(end - start for _, start, end, _ in run.compute)
    return 1 - busy / (p * run.time) if run.time > 0 else 0.0


def pipeline_time(
    layers: list[Dense],
    batch: int,
    p: int,
    micro_batches: int,
    link: cost.Link,
    device: Device = DEFAULT_DEVICE,
    balance: str = "flops",
    itemsize: int = 4,
) -> float:
    """Modelled time of `pipeline_forward`: Σ_s d_s + (M − 1)·max_s d_s, where d_s is what stage s spends on one
    micro-batch of ⌈B/M⌉ rows: receiving its input (α + nβ, none on stage 0), then computing it.

    Exact when M divides B; otherwise an upper bound (a few tenths of a percent here), since some micro-batches
    have a row fewer than the ⌈B/M⌉ the formula charges for every one.
    """
    check_micro_batches(batch, micro_batches)
    rows = -(-batch // micro_batches)
    per_stage = []
    for s, stage in enumerate(stages(layers, p, balance)):
        mine = [layers[i] for i in stage]
        receive = link.message_time(rows * mine[0].n_in * itemsize) if s > 0 else 0.0
        per_stage.append(receive + device.time(sum(layer.flops(rows) for layer in mine), calls=len(mine)))
    return sum(per_stage) + (micro_batches - 1) * max(per_stage)


def uniform_mlp(depth: int = 8, width: int = 256, seed: int = 0) -> list[Dense]:
    """``depth`` equal Dense layers width → width (ReLU, the last linear): stages balance perfectly."""
    rng = np.random.default_rng(seed)
    return [
        Dense(
            (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32),
            (rng.normal(size=width) * 0.1).astype(np.float32),
            "relu" if i < depth - 1 else "linear",
            f"layer_{i + 1}",
        )
        for i in range(depth)
    ]
