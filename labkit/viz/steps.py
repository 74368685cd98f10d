"""Step through an all-reduce: who sends which chunk to whom, and what each rank's buffer holds after each step.

The all-reduce runs for real on the ``"sim"`` transport, with inputs chosen so that every number says where it came
from: element i of rank r starts as 2^r + i·2^p. A sum over a set S of ranks is then mask(S) + |S|·i·2^p, so the
low p bits of any value name the ranks whose contributions it holds, and the rest gives back the element index i.
The steps are decoded from the real trace (`Message.payload`), not drawn from a script of what should happen.
`plot_step` draws one step (the widget's picture); `plot_ring_chunks` draws every step of the ring at once, for a
page that cannot run a widget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from labkit import collectives, comm, cost
from labkit.i18n import plot_tr, plots_translated, tr

MAX_RANKS = 16  # the encoding needs p bits per value, and a grid wider than 16 ranks is unreadable anyway


@dataclass(frozen=True)
class Sent:
    """One decoded message: which elements it carried and whose contributions each of them held."""

    src: int
    dst: int
    elements: tuple[int, ...]
    holders: tuple[frozenset[int], ...]  # per element: the ranks whose values are summed in it
    label: str


@dataclass(frozen=True)
class Step:
    """One step of the algorithm (one label of its trace) and every rank's buffer after it."""

    label: str
    messages: tuple[Sent, ...]
    buffers: np.ndarray  # (p, n) bit masks: bit r set = rank r's contribution is in that element


def encode(rank: int, p: int, n: int) -> np.ndarray:
    """Rank ``rank``'s input: element i is 2^rank + i·2^p (int64), so sums can be decoded."""
    return (np.int64(1) << rank) + np.arange(n, dtype=np.int64) * (np.int64(1) << p)


def decode(values: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(masks, element indices) of encoded sums: mask = low p bits; index = high part / (ranks in the mask)."""
    values = np.asarray(values, dtype=np.int64)
    masks = values & ((1 << p) - 1)
    counts = np.array([bin(int(m)).count("1") for m in masks.ravel()], dtype=np.int64).reshape(masks.shape)
    return masks, (values >> p) // np.maximum(counts, 1)


def _ranks(mask: int) -> frozenset[int]:
    return frozenset(r for r in range(mask.bit_length()) if mask >> r & 1)


def _step_order(trace: list[comm.Message], p: int) -> list[str]:
    """Labels in the order the ranks meet them: by the latest place a label takes in any rank's own sequence."""
    rank_of_step: dict[str, int] = {}
    first_end: dict[str, float] = {}
    for r in range(p):
        # a receive that ends at t comes before a send that starts at t (the send may forward what arrived)
        sends = [(m.start, 1, m.label) for m in trace if m.src == r]
        events = sorted(sends + [(m.end, 0, m.label) for m in trace if m.dst == r])
        seen: list[str] = []
        for _, _, label in events:
            if label not in seen:
                seen.append(label)
        for pos, label in enumerate(seen):
            rank_of_step[label] = max(pos, rank_of_step.get(label, 0))
    for m in trace:
        first_end[m.label] = min(m.end, first_end.get(m.label, np.inf))
    return sorted(rank_of_step, key=lambda label: (rank_of_step[label], first_end[label]))


def trace_steps(algorithm: str, p: int, n: int | None = None) -> list[Step]:
    """Run ``algorithm`` on p simulated ranks with n encoded elements each; return its steps in order."""
    if not 1 <= p <= MAX_RANKS:
        raise ValueError(f"the step-through shows 1 to {MAX_RANKS} ranks, got p={p}")
    n = p if n is None else n
    run = comm.run(
        lambda c: collectives.allreduce(encode(c.rank, p, n), c, algorithm=algorithm),
        p,
        link=cost.Link(alpha=1e-6, beta=1e-9),
        payloads=True,
    )
    order = _step_order(run.trace, p)
    buffers = np.array([1 << r for r in range(p)], dtype=np.int64)[:, None].repeat(n, axis=1)
    steps = []
    for label in order:
        sent = []
        for m in (m for m in run.trace if m.label == label):
            masks, idx = decode(m.payload, p)
            # a receiver reduces (or copies a fuller sum) into those elements: its contributions are the union
            buffers[m.dst, idx] |= masks
            sent.append(Sent(m.src, m.dst, tuple(int(i) for i in idx), tuple(_ranks(int(k)) for k in masks), label))
        steps.append(Step(label, tuple(sent), buffers.copy()))
    expected = sum(encode(r, p, n) for r in range(p))
    if not all(np.array_equal(v, expected) for v in run.values):  # the run itself must be right
        raise AssertionError(f"{algorithm} all-reduce gave a wrong sum on p={p}")
    return steps


def phase_and_step(label: str) -> tuple[str, str]:
    """'reduce-scatter 2/3' → ('reduce-scatter', '2/3'); a label without a step number keeps it all as the phase."""
    match = re.fullmatch(r"(.*?)\s*(\d+/\d+)", label)
    return (match[1], match[2]) if match else (label, "")


def label_text(label: str, plot: bool = False) -> str:
    """A message label as a student reads it, 'reduce-scatter 2/3' with its phase in the current language (the
    labels themselves stay English: code compares them); ``plot=True``: for a figure, as `plot_tr` says it."""
    phase, k = phase_and_step(label)
    if plot and not plots_translated():
        return label
    names = {
        "reduce-scatter": tr("reduce-scatter {k}", k=k),
        "all-gather": tr("all-gather {k}", k=k),
        "reduce": tr("reduce {k}", k=k),
        "broadcast": tr("broadcast {k}", k=k),
        "gather to master": tr("gather to master {k}", k=k),
        "send back": tr("send back {k}", k=k),
        "recursive-doubling": tr("recursive-doubling {k}", k=k),
        "fold-in": tr("fold-in {k}", k=k),
        "fold-out": tr("fold-out {k}", k=k),
        "micro-batch": tr("micro-batch {k}", k=k),
    }
    return names[phase].strip() if phase in names else label


def _ranges(items: tuple[int, ...]) -> str:
    """Element indices as compact ranges: (0, 1, 2, 5) → '0-2,5'."""
    out, items = [], sorted(items)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out)


def describe(step: Step, k: int, total: int) -> str:
    """One line per step: its label and each message as 'src→dst elements [holders]'."""
    parts = []
    for m in step.messages:
        holders = "+".join(str(r) for r in sorted(set().union(*m.holders))) if m.holders else "-"
        parts.append(f"{m.src}→{m.dst} e[{_ranges(m.elements)}] ({holders})")
    return tr("step {k}/{total} {label}: ", k=k, total=total, label=label_text(step.label)) + "; ".join(parts)


def plot_step(steps: list[Step], k: int, algorithm: str = ""):
    """Ranks on a circle with this step's messages as arrows, beside a rank × element grid of contributions."""
    from matplotlib.figure import Figure

    if not 1 <= k <= len(steps):
        raise ValueError(f"step must be 1..{len(steps)}, got {k}")
    step = steps[k - 1]
    p, n = step.buffers.shape
    fig = Figure(figsize=(9, 3.8), dpi=80)
    ax_net, ax_buf = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    fig.subplots_adjust(left=0.02, right=0.97, bottom=0.13, top=0.85, wspace=0.15)
    angle = np.pi / 2 - 2 * np.pi * np.arange(p) / p
    xy = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    ax_net.scatter(xy[:, 0], xy[:, 1], s=420, color="#dde6f2", edgecolor="#4c72b0", zorder=2)
    for r in range(p):
        ax_net.text(*xy[r], str(r), ha="center", va="center", fontsize=10, zorder=3)
    for m in step.messages:
        ax_net.annotate(
            "",
            xy=xy[m.dst],
            xytext=xy[m.src],
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#c44e52",
                "shrinkA": 11,
                "shrinkB": 11,
                "connectionstyle": "arc3,rad=0.15",
            },
        )
        mid = (xy[m.src] + xy[m.dst]) / 2 * 1.12
        ax_net.text(*mid, f"e{_ranges(m.elements)}", fontsize=7, color="#c44e52", ha="center", va="center")
    ax_net.set(
        xlim=(-1.4, 1.4), ylim=(-1.4, 1.4), aspect="equal", title=plot_tr("messages in {label}", label=step.label)
    )
    ax_net.axis("off")
    counts = np.vectorize(lambda m: bin(int(m)).count("1"))(step.buffers)
    ax_buf.imshow(counts, cmap="Blues", vmin=0, vmax=p, aspect="auto")
    if p * n <= 100:
        for r in range(p):
            for i in range(n):
                ax_buf.text(
                    i,
                    r,
                    str(counts[r, i]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if counts[r, i] > p / 2 else "black",
                )
    ax_buf.set(
        title=plot_tr("contributions each element holds"),
        xlabel=plot_tr("element of the vector"),
        ylabel=plot_tr("rank"),
        xticks=range(n),
        yticks=range(p),
    )
    fig.suptitle(
        plot_tr(
            "{algorithm} all-reduce, p = {p}: step {k} of {total}", algorithm=algorithm, p=p, k=k, total=len(steps)
        ).strip()
    )
    return fig, step


def ring_chunks(p: int = 4) -> list[tuple[str, np.ndarray, frozenset[tuple[int, int]]]]:
    """The ring all-reduce of p chunks per rank, state by state: (title, (p, p) masks, the (rank, chunk)s that arrived).

    The first state is the start (rank r holds only its own contribution in every chunk); then one per step.
    """
    steps = trace_steps("ring", p, n=p)  # one element per chunk, so element i is chunk i
    start = np.array([1 << r for r in range(p)], dtype=np.int64)[:, None].repeat(p, axis=1)
    states = [(plot_tr("start"), start, frozenset())]
    for step in steps:
        phase, k = step.label.rsplit(" ", 1)
        arrived = frozenset((m.dst, i) for m in step.messages for i in m.elements)
        states.append((plot_tr("{phase}\nstep {k}", phase=phase, k=k), step.buffers, arrived))
    return states


def plot_ring_chunks(p: int = 4):
    """A static figure of the ring all-reduce: each rank's p chunks after each of the 2(p − 1) steps.

    A chunk is a cell cut into p stripes; stripe j has rank j's colour when rank j's contribution is summed in it,
    and is white otherwise. The chunks that arrived in a step are outlined. Decoded from a real sim trace
    (`ring_chunks`). Returns (figure, states), the states as `ring_chunks` gives them.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    from labkit.viz.plots import RANK_COLORS

    if not 2 <= p <= len(RANK_COLORS):
        raise ValueError(f"the chunk figure shows 2 to {len(RANK_COLORS)} ranks, got p={p}")
    states = ring_chunks(p)
    fig = Figure(figsize=(1.45 * len(states) + 1.2, 2.6), dpi=80)
    axes = fig.subplots(1, len(states), sharey=True)
    fig.subplots_adjust(left=0.05, right=1 - 1.3 / (1.45 * len(states) + 1.2), bottom=0.17, top=0.72, wspace=0.12)
    for ax, (title, masks, arrived) in zip(axes, states, strict=True):
        for r in range(p):
            for c in range(p):
                for j in range(p):  # stripe j of the chunk: rank j's contribution, present or not
                    held = masks[r, c] >> j & 1
                    color = RANK_COLORS[j] if held else "white"
                    ax.add_patch(Rectangle((c - 0.45 + 0.9 * j / p, r - 0.4), 0.9 / p, 0.8, fc=color, lw=0))
                edge = ("#c00000", 2.2) if (r, c) in arrived else ("0.55", 0.6)
                ax.add_patch(Rectangle((c - 0.45, r - 0.4), 0.9, 0.8, fill=False, ec=edge[0], lw=edge[1]))
        ax.set(xlim=(-0.6, p - 0.4), ylim=(p - 0.5, -0.5), xticks=range(p), yticks=range(p), xlabel=plot_tr("chunk"))
        ax.set_title(title, fontsize=8)
        ax.grid(False)
        ax.set_aspect("equal")
    axes[0].set_ylabel(plot_tr("rank"))
    handles = [Patch(color=RANK_COLORS[j], label=plot_tr("rank {j}'s part", j=j)) for j in range(p)]
    handles.append(Patch(fill=False, ec="#c00000", lw=2, label=plot_tr("just arrived")))
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(
        plot_tr(
            "Ring all-reduce on p = {p}: reduce-scatter ({steps} steps) sums chunk k onto rank k, "
            "all-gather ({steps} steps) copies it to all\n(stripes: whose contributions each chunk holds)",
            p=p,
            steps=p - 1,
        ),
        fontsize=9,
    )
    return fig, states
