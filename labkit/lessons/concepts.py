"""Chapter 2's core concepts in one sitting: the three kinds of parallelism, and message traces made visible.

The parallel versions here are *simple teaching versions*, named so: one tiny function per idea, each equal to the
one-device computation it replaces. Chapter 6 builds the real tensor- and pipeline-parallel layers. Every function
that communicates takes a `labkit.comm.Comm` as its last argument, like `labkit.collectives`, so it runs on any
transport: ``comm.run(lambda c: simple_row_parallel_matmul(x, w, c), 4)``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from labkit import collectives
from labkit.comm import Comm, Message
from labkit.split import part, stage_layers  # noqa: F401 (chapter 2 shows both)
from labkit.viz.plots import RANK_COLORS

# --- data parallelism: replicate the model, split the batch, all-reduce the gradients ------------------------------


def mse_gradient(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """∇w of the mean squared error of a linear model on one device: 2/N · xᵀ(xw − y)."""
    return 2 / len(x) * x.T @ (x @ w - y)


def simple_data_parallel_gradient(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, comm: Comm, algorithm: str = "ring"
) -> np.ndarray:
    """Data parallelism, simple teaching version: each rank's gradient sum on its shard, all-reduced, over N."""
    rows = part(len(x), comm.size, comm.rank)
    local = 2 * x[rows].T @ (x[rows] @ w - y[rows])  # a sum over this shard's examples; the mean needs every shard
    return collectives.allreduce(local, comm, algorithm=algorithm) / len(x)


def simple_model_averaging(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, comm: Comm, lr: float = 0.1, local_steps: int = 1
) -> np.ndarray:
    """Weighted parameter averaging (local SGD, FedAvg), simple teaching version: Σ_r (n_r/N)·w_r after local steps.

    Each rank runs ``local_steps`` of gradient descent on its own shard (n_r examples), then an all-reduce averages
    the copies, each weighted by its share of the data. With one local step this is one gradient-descent step on
    the whole batch: Σ_r (n_r/N)(w − η g_r) = w − η Σ_r (n_r/N) g_r = w − η g.
    """
    rows = part(len(x), comm.size, comm.rank)
    mine = np.array(w, dtype=float)
    for _ in range(local_steps):
        mine = mine - lr * mse_gradient(x[rows], y[rows], mine)
    return collectives.allreduce(len(x[rows]) / len(x) * mine, comm)


# --- tensor (model) parallelism: split each weight matrix -----------------------------------------------------------


def row_partial(x: np.ndarray, w: np.ndarray, rank: int, p: int) -> np.ndarray:
    """What ``rank`` computes in a row split: x[:, I] @ w[I, :] over its rows I of w (a weighted sum over its shard)."""
    rows = part(w.shape[0], p, rank)
    return x[:, rows] @ w[rows, :]


def simple_row_parallel_matmul(x: np.ndarray, w: np.ndarray, comm: Comm, algorithm: str = "ring") -> np.ndarray:
    """x @ w with w split by rows: each rank's partial product, summed by an all-reduce (simple teaching version)."""
    return collectives.allreduce(row_partial(x, w, comm.rank, comm.size), comm, algorithm=algorithm)


def simple_column_parallel_matmul(x: np.ndarray, w: np.ndarray, comm: Comm) -> np.ndarray:
    """x @ w with w split by columns: each rank's output columns, joined by an all-gather (simple teaching version)."""
    mine = x @ w[:, part(w.shape[1], comm.size, comm.rank)]
    # all-gather joins pieces along axis 0, so the columns travel as rows of the transpose
    return collectives.allgather(np.ascontiguousarray(mine.T), comm).T


# --- pipeline parallelism: whole layers on each rank, micro-batches flowing through -------------------------------


def make_mlp(sizes: tuple[int, ...], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """A tiny NumPy MLP: one (weights, bias) pair per layer, sizes[i] → sizes[i + 1], scaled by 1/√fan-in."""
    rng = np.random.default_rng(seed)
    pairs = zip(sizes[:-1], sizes[1:], strict=True)
    return [(rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=b) * 0.1) for a, b in pairs]


def forward(x: np.ndarray, layers: list, final: bool = True) -> np.ndarray:
    """x through the layers, ReLU after each; ``final=True``: these end the model, so the last layer has none."""
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if not (final and i == len(layers) - 1):
            x = np.maximum(x, 0)
    return x


def simple_pipeline_forward(x: np.ndarray, layers: list, comm: Comm, micro_batches: int = 4) -> np.ndarray | None:
    """Pipeline-parallel inference, simple teaching version: the last rank returns forward(x); the others None.

    Rank 0 cuts the batch into micro-batches; each rank runs its stage and sends the activations to the next rank.
    """
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    p, r = comm.size, comm.rank
    mine = [layers[i] for i in stage_layers(len(layers), p, r)]
    outputs = []
    for m in range(micro_batches):
        label = f"micro-batch {m + 1}/{micro_batches}"
        a = x[part(len(x), micro_batches, m)] if r == 0 else comm.recv(r - 1, label=label)
        a = forward(a, mine, final=r == p - 1)
        if r < p - 1:
            comm.send(a, r + 1, label=label)
        else:
            outputs.append(a)
    return np.concatenate(outputs) if r == p - 1 else None


# --- buffers and traces as text ------------------------------------------------------------------------------------


def demo_inputs(p: int = 4, n: int = 8) -> list[np.ndarray]:
    """Inputs whose numbers say where they came from: rank r holds 10r, 10r + 1, …, 10r + n − 1 (int64)."""
    return [10 * r + np.arange(n, dtype=np.int64) for r in range(p)]


def _cells(a: Any) -> str:
    if a is None:
        return "—"
    a = np.asarray(a)
    fmt = (lambda v: f"{v:3d}") if a.dtype.kind in "iub" else (lambda v: f"{v:6.3g}")
    return "[" + " ".join(fmt(v) for v in a.ravel()) + "]"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _and(items: list[str]) -> str:
    """['1', '2', '3'] → '1, 2 and 3'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def busiest_senders(trace: list[Message]) -> tuple[list[int], int, int]:
    """(the ranks that send the most bytes, in rank order; those bytes each; the ranks the trace shows)."""
    ranks = 1 + max(max(m.src, m.dst) for m in trace)
    sent = [0] * ranks
    for m in trace:
        sent[m.src] += m.nbytes
    most = max(sent)
    return [r for r in range(ranks) if sent[r] == most], most, ranks


def trace_summary(trace: list[Message]) -> str:
    """One line: messages, steps, bytes in all, who sends the most bytes (all tied ranks named), the last arrival."""
    if not trace:
        return "no messages"
    top, most, ranks = busiest_senders(trace)
    if len(top) == ranks > 1:
        who = f"every rank sends the same ({most} B)"
    elif len(top) == 1:
        who = f"rank {top[0]} sends the most ({most} B)"
    else:
        who = f"ranks {_and([str(r) for r in top])} send the most ({most} B each)"
    steps = len({m.label for m in trace})
    total = sum(m.nbytes for m in trace)
    return (
        f"{_count(len(trace), 'message')} in {_count(steps, 'step')}, {total} B in all; {who};"
        f" the last arrives at {max(m.end for m in trace) * 1e6:.1f} µs"
    )


def show_buffers(before: list, after: list, trace: list[Message] | None = None) -> str:
    """A table of every rank's buffer before and after a collective (— where a rank has none), then the trace."""
    left = [_cells(a) for a in before]
    width = max(len("before"), *map(len, left))
    lines = [f"{'rank':<6}{'before':<{width}}   after"]
    lines += [f"{r:<6}{left[r]:<{width}}   {_cells(a)}" for r, a in enumerate(after)]
    if trace is not None:
        lines.append(trace_summary(trace))
    return "\n".join(lines)


def format_trace(trace: list[Message], by_step: bool = True) -> str:
    """A trace as text: one line per step (its messages, their size and span in µs), or one line per message."""
    if not by_step:
        rows = [
            f"{m.src} → {m.dst}  {m.nbytes:5d} B  {m.start * 1e6:6.1f}–{m.end * 1e6:6.1f} µs  {m.label}" for m in trace
        ]
        return "\n".join([trace_summary(trace), *rows])
    steps: dict[str, list[Message]] = {}
    for m in trace:
        steps.setdefault(m.label, []).append(m)
    width = max((len(label) for label in steps), default=0)
    lines = [trace_summary(trace)]
    for label, ms in steps.items():
        pairs = ", ".join(f"{m.src}→{m.dst}" for m in ms)
        sizes = "/".join(str(s) for s in sorted({m.nbytes for m in ms}))
        span = f"{min(m.start for m in ms) * 1e6:.1f}–{max(m.end for m in ms) * 1e6:.1f} µs"
        lines.append(f"  {label:<{width}}  {pairs:<22} {sizes:>5} B each  {span}")
    return "\n".join(lines)


# --- figures -------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float, nrows: int = 1):
    from matplotlib.figure import Figure  # no pyplot: figures are not kept alive by a global registry

    fig = Figure(figsize=(width, height), dpi=80)
    return fig, fig.subplots(nrows, 1, squeeze=False)[:, 0]


def phase_and_step(label: str) -> tuple[str, str]:
    """'reduce-scatter 2/3' → ('reduce-scatter', '2/3'); a label without a step number keeps it all as the phase."""
    match = re.fullmatch(r"(.*?)\s*(\d+/\d+)", label)
    return (match[1], match[2]) if match else (label, "")


def plot_timeline(traces: dict[str, list[Message]] | list[Message], title: str = "Message trace"):
    """A Gantt view of sim traces: one row per rank, a bar per message on its sender's row from send to arrival.

    One panel per named trace (``title`` above them all), or one panel titled ``title`` for a single trace. An arrow
    at the arrival time points to the receiver; bars are coloured by phase and labelled by step. Returns
    (figure, rows): rows are (panel, src, dst, start µs, end µs, label), one per bar drawn.
    """
    from matplotlib.patches import Patch

    named = isinstance(traces, dict)
    traces = traces if named else {title: traces}
    height = 0.5 + 0.3 * named + 1.9 * len(traces)
    fig, axes = _figure(8.5, height, nrows=len(traces))
    fig.subplots_adjust(left=0.08, right=0.76, bottom=0.5 / height, top=1 - (0.3 + 0.3 * named) / height, hspace=0.75)
    if named:
        fig.suptitle(title, fontsize=11)
    end = max((m.end for trace in traces.values() for m in trace), default=1e-6) * 1e6
    rows = []
    for ax, (name, trace) in zip(axes, traces.items(), strict=True):
        p = 1 + max((max(m.src, m.dst) for m in trace), default=0)
        phases = list(dict.fromkeys(phase_and_step(m.label)[0] for m in trace))
        for m in trace:
            phase, step = phase_and_step(m.label)
            t0, t1 = m.start * 1e6, m.end * 1e6
            color = RANK_COLORS[phases.index(phase) % len(RANK_COLORS)]
            ax.barh(m.src, t1 - t0, left=t0, height=0.5, color=color, alpha=0.75, edgecolor="white")
            ax.annotate("", xy=(t1, m.dst), xytext=(t1, m.src), arrowprops={"arrowstyle": "->", "color": "0.35"})
            if step:
                ax.text((t0 + t1) / 2, m.src, step, ha="center", va="center", fontsize=6)
            rows.append((name, m.src, m.dst, t0, t1, m.label))
        ax.set(title=name, xlabel="modelled time (µs)", ylabel="rank", xlim=(0, end * 1.02), ylim=(p - 0.5, -0.5))
        ax.set_yticks(range(p))
        handles = [Patch(color=RANK_COLORS[i % len(RANK_COLORS)], alpha=0.75, label=ph) for i, ph in enumerate(phases)]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="phase")
    return fig, rows


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str = "#dde6f2") -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", fc=color, ec="0.3", lw=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5)


def _arrow(ax, x0: float, y0: float, x1: float, y1: float) -> None:
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "-|>", "color": "0.3", "lw": 0.8})


def _draw_replicas(ax, p: int, kind: str) -> None:
    """Per rank, top to bottom: its input, what it computes, the collective, what it ends with."""
    top, middle, out = {
        "data": ("batch shard {r}", "whole model\n(a replica)\n→ gradient $g_{r}$", "same update\nw ← w − η·g/N"),
        "tensor": ("whole X\n(its columns $I_{r}$)", "$X_{{:,I_{r}}}\\,W_{{I_{r},:}}$\n= partial $Y_{r}$", "Y = X W"),
    }[kind]
    collective = "all-reduce: g = Σ$_r$ $g_r$" if kind == "data" else "all-reduce: Y = Σ$_r$ $Y_r$"
    for r in range(p):
        tint = RANK_COLORS[r] + "40"  # the rank's colour, mostly transparent
        _box(ax, r, 5.1, 0.8, 0.8, top.format(r=r), tint)
        _box(ax, r, 3.3, 0.86, 1.5, middle.format(r=r), tint)
        _box(ax, r, 0.5, 0.8, 0.8, out, "#eeeeee")
        _arrow(ax, r, 4.7, r, 4.05)
        _arrow(ax, r, 2.55, r, 2.05)
        _arrow(ax, r, 1.35, r, 0.9)
    _box(ax, (p - 1) / 2, 1.7, p - 0.3, 0.5, collective, "#f6e3c6")


def _draw_pipeline(ax, p: int, micro: int) -> None:
    """GPipe's training schedule: forwards F1…FM down the stages, then backwards in reverse; grey gaps are bubbles."""
    slots = 2 * (micro + p - 1)
    ax.barh(range(p), slots, left=0, height=0.8, color="#eeeeee")
    for s in range(p):
        for m in range(micro):
            for t, name in ((m + s, "F"), (micro + p - 1 + m + (p - 1 - s), "B")):
                color = RANK_COLORS[m % len(RANK_COLORS)] + ("c0" if name == "F" else "60")
                ax.barh(s, 1, left=t, height=0.8, color=color, edgecolor="white")
                ax.text(t + 0.5, s, f"{name}{m + 1}", ha="center", va="center", fontsize=7)
    ax.axvline(micro + p - 1, color="0.3", linestyle=":", linewidth=1)
    ax.text(micro + p - 1.15, 0, "inference\nstops here →", ha="right", va="center", fontsize=7)
    ax.set(xlim=(0, slots), ylim=(p - 0.5, -0.5), yticks=range(p), xticks=range(0, slots + 1, 2))
    ax.set(xlabel="time (slots of one stage's forward pass)", ylabel="rank (= stage)")


def draw_parallelism(kind: str, p: int = 4, micro_batches: int = 4):
    """A diagram of ``kind`` ("data", "tensor" or "pipeline") parallelism on p ranks; returns (figure, kind)."""
    titles = {
        "data": "Data parallelism: replicate the model, split the batch, all-reduce the gradients",
        "tensor": "Tensor parallelism (row split): each rank multiplies its rows of W, an all-reduce sums",
        "pipeline": f"Pipeline parallelism: {p} stages, {micro_batches} micro-batches (GPipe training schedule)",
    }
    if kind not in titles:
        raise ValueError(f"unknown kind {kind!r}: use one of {list(titles)}")
    fig, (ax,) = _figure(8.0, 3.0 if kind == "pipeline" else 3.4)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.17, top=0.88)
    if kind == "pipeline":
        _draw_pipeline(ax, p, micro_batches)
    else:
        _draw_replicas(ax, p, kind)
        ax.set(xlim=(-0.6, p - 0.4), ylim=(0, 5.6), xticks=range(p), yticks=[], xlabel="rank", ylabel="")
        ax.set_ylabel("data flows down ↓")
        ax.grid(False)
        for side in ("left", "top", "right"):
            ax.spines[side].set_visible(False)
    ax.set_title(titles[kind], fontsize=10)
    return fig, kind
