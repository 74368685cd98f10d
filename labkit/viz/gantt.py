"""The pipeline's schedule as a Gantt chart, drawn from a real ``"sim"`` run: compute spans from ``Run.compute``,
messages from ``Run.trace`` (`labkit.parallel.pipeline` computes; this draws)."""

from __future__ import annotations

import re

import numpy as np

from labkit import comm, cost
from labkit.comm import Run
from labkit.i18n import plot_tr
from labkit.parallel import pipeline
from labkit.parallel.tensor import DEFAULT_DEVICE, Dense, Device
from labkit.viz.plots import RANK_COLORS


def _micro_batch(label: str) -> int:
    match = re.search(r"(\d+)/\d+", label)
    return int(match[1]) if match else 0


def plot_gantt(run: Run, title: str | None = None):
    """A Gantt chart of a sim run: one row per rank, compute spans as wide bars (coloured and numbered by
    micro-batch), messages as thin grey bars on the sender's row from send to arrival. Returns (figure, result):
    the time, the measured bubble, and each rank's busy share."""
    from matplotlib.figure import Figure  # no pyplot: figures are not kept alive by a global registry
    from matplotlib.patches import Patch

    p = 1 + max([r for r, *_ in run.compute] + [max(m.src, m.dst) for m in run.trace] + [0])
    scale, unit = (1e6, "µs") if run.time < 1e-3 else (1e3, "ms")
    fig = Figure(figsize=(8.0, 0.9 + 0.45 * p + 0.6), dpi=80)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.08, right=0.78, bottom=0.9 / (1.5 + 0.45 * p), top=1 - 0.45 / (1.5 + 0.45 * p))
    busy = [0.0] * p
    for rank, start, end, label in run.compute:
        k = _micro_batch(label)
        busy[rank] += end - start
        color = RANK_COLORS[(k - 1) % len(RANK_COLORS)] if k else "#888888"
        ax.barh(rank, (end - start) * scale, left=start * scale, height=0.6, color=color, edgecolor="white")
        if k and (end - start) * scale > 0.025 * run.time * scale:
            ax.text((start + end) / 2 * scale, rank, str(k), ha="center", va="center", fontsize=7, color="white")
    for m in run.trace:
        ax.barh(m.src + 0.38, (m.end - m.start) * scale, left=m.start * scale, height=0.12, color="0.55")
        ax.annotate(
            "",
            xy=(m.end * scale, m.dst - 0.3),
            xytext=(m.end * scale, m.src + 0.38),
            arrowprops={"arrowstyle": "->", "color": "0.5", "lw": 0.6},
        )
    bubble = pipeline.measured_bubble(run, p)
    title = plot_tr("Pipeline schedule") if title is None else title
    ax.set(
        title=title
        + "\n"
        + plot_tr(
            "modelled time {t:.4g} {unit}, idle (bubble) {bubble:.1%}", t=run.time * scale, unit=unit, bubble=bubble
        ),
        xlabel=plot_tr("modelled time ({unit})", unit=unit),
        ylabel=plot_tr("rank (= stage)"),
        xlim=(0, run.time * scale * 1.01 or 1),
        ylim=(p - 0.4, -0.6),
        yticks=range(p),
    )
    handles = [
        Patch(color=RANK_COLORS[0], label=plot_tr("compute\n(no. = micro-batch)")),
        Patch(color="0.55", label=plot_tr("message")),
        Patch(facecolor="white", edgecolor="0.7", label=plot_tr("idle")),
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig, {"time": run.time, "bubble": bubble, "busy": [b / run.time if run.time else 0.0 for b in busy]}


FREE_LINK = "free (α = β = 0)"


def draw_pipeline(
    layers: list[Dense], p: int, micro_batches: int, batch: int, link_name: str, device: Device = DEFAULT_DEVICE
):
    """Serve a batch with `pipeline_forward` on p simulated ranks and draw its Gantt chart; (figure, result)."""
    p = min(p, len(layers))
    micro_batches = min(micro_batches, batch)
    link = cost.Link(0.0, 0.0) if link_name == FREE_LINK else cost.preset(link_name)
    x = np.zeros((batch, layers[0].n_in), np.float32)
    run = comm.run(lambda c: pipeline.pipeline_forward(x, layers, c, micro_batches, device), p, link=link)
    title = plot_tr(
        "GPipe inference: {p} stages, {m} micro-batches of a batch of {batch}, {link}",
        p=p,
        m=micro_batches,
        batch=batch,
        link=plot_tr("free (α = β = 0)") if link_name == FREE_LINK else link_name,
    )
    fig, result = plot_gantt(run, title)
    result.update(
        p=p,
        micro_batches=micro_batches,
        formula=pipeline.bubble_fraction(p, micro_batches),
        predicted=pipeline.pipeline_time(layers, batch, p, micro_batches, link, device),
    )
    return fig, result
