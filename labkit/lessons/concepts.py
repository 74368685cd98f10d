"""Chapter 2's core concepts in one sitting: the three kinds of parallelism, and message traces made visible.

The parallel versions here are *simple teaching versions*, named so: one tiny function per idea, each equal to the
one-device computation it replaces. Chapter 6 builds the real tensor- and pipeline-parallel layers. Every function
that communicates takes a `labkit.comm.Comm` as its last argument, like `labkit.collectives`, so it runs on any
transport: ``comm.run(lambda c: simple_row_parallel_matmul(x, w, c), 4)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labkit import collectives
from labkit.comm import Comm, Message
from labkit.i18n import pad, plot_tr, tr
from labkit.i18n import width as columns
from labkit.lessons.diagrams import draw_parallelism  # noqa: F401 (chapter 2 draws the three kinds here)
from labkit.split import part, stage_layers  # noqa: F401 (chapter 2 shows both)
from labkit.viz.plots import RANK_COLORS
from labkit.viz.steps import label_text, phase_and_step  # noqa: F401 (chapter 2 reads labels with them)

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


def _and(items: list[str]) -> str:
    """['1', '2', '3'] → '1, 2 and 3'."""
    return items[0] if len(items) == 1 else tr("{items} and {last}", items=", ".join(items[:-1]), last=items[-1])


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
        return tr("no messages")
    top, most, ranks = busiest_senders(trace)
    if len(top) == ranks > 1:
        who = tr("every rank sends the same ({most} B)", most=most)
    elif len(top) == 1:
        who = tr("rank {r} sends the most ({most} B)", r=top[0], most=most)
    else:
        who = tr("ranks {ranks} send the most ({most} B each)", ranks=_and([str(r) for r in top]), most=most)
    n, steps = len(trace), len({m.label for m in trace})
    return tr(
        "{messages} in {steps}, {total} B in all; {who}; the last arrives at {end:.1f} µs",
        messages=tr("1 message") if n == 1 else tr("{n} messages", n=n),
        steps=tr("1 step") if steps == 1 else tr("{n} steps", n=steps),
        total=sum(m.nbytes for m in trace),
        who=who,
        end=max(m.end for m in trace) * 1e6,
    )


def show_buffers(before: list, after: list, trace: list[Message] | None = None) -> str:
    """A table of every rank's buffer before and after a collective (— where a rank has none), then the trace."""
    left = [_cells(a) for a in before]
    width = max(columns(tr("before")), *map(len, left))
    lines = [pad(tr("rank"), 6) + pad(tr("before"), width) + "   " + tr("after")]
    lines += [f"{r:<6}{left[r]:<{width}}   {_cells(a)}" for r, a in enumerate(after)]
    if trace is not None:
        lines.append(trace_summary(trace))
    return "\n".join(lines)


def format_trace(trace: list[Message], by_step: bool = True) -> str:
    """A trace as text: one line per step (its messages, their size and span in µs), or one line per message."""
    if not by_step:
        rows = [
            f"{m.src} → {m.dst}  {m.nbytes:5d} B  {m.start * 1e6:6.1f}–{m.end * 1e6:6.1f} µs  {label_text(m.label)}"
            for m in trace
        ]
        return "\n".join([trace_summary(trace), *rows])
    steps: dict[str, list[Message]] = {}
    for m in trace:
        steps.setdefault(m.label, []).append(m)
    width = max((columns(label_text(label)) for label in steps), default=0)
    lines = [trace_summary(trace)]
    for label, ms in steps.items():
        pairs = ", ".join(f"{m.src}→{m.dst}" for m in ms)
        sizes = tr("{sizes:>5} B each", sizes="/".join(str(s) for s in sorted({m.nbytes for m in ms})))
        span = f"{min(m.start for m in ms) * 1e6:.1f}–{max(m.end for m in ms) * 1e6:.1f} µs"
        lines.append(f"  {pad(label_text(label), width)}  {pairs:<22} {sizes}  {span}")
    return "\n".join(lines)


# --- figures -------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float, nrows: int = 1):
    from matplotlib.figure import Figure  # no pyplot: figures are not kept alive by a global registry

    fig = Figure(figsize=(width, height), dpi=80)
    return fig, fig.subplots(nrows, 1, squeeze=False)[:, 0]


def plot_timeline(traces: dict[str, list[Message]] | list[Message], title: str | None = None):
    """A Gantt view of sim traces: one row per rank, a bar per message on its sender's row from send to arrival.

    One panel per named trace (``title`` above them all), or one panel titled ``title`` for a single trace. An arrow
    at the arrival time points to the receiver; bars are coloured by phase and labelled by step. Returns
    (figure, rows): rows are (panel, src, dst, start µs, end µs, label), one per bar drawn.
    """
    from matplotlib.patches import Patch

    named, title = isinstance(traces, dict), plot_tr("Message trace") if title is None else title
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
        ax.set(title=name, xlabel=plot_tr("modelled time (µs)"), ylabel=plot_tr("rank"), xlim=(0, end * 1.02))
        ax.set_ylim(p - 0.5, -0.5)
        ax.set_yticks(range(p))
        colors = [RANK_COLORS[i % len(RANK_COLORS)] for i in range(len(phases))]
        handles = [Patch(color=c, alpha=0.75, label=label_text(ph, True)) for c, ph in zip(colors, phases, strict=True)]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=plot_tr("phase"))
    return fig, rows
