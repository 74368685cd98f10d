"""Chapter 2's diagrams of the three kinds of parallelism (`draw_parallelism`; `labkit.lessons.concepts` has it too):
what each rank holds and computes, and GPipe's schedule. Every word drawn is in the current language (`plot_tr`)."""

from __future__ import annotations

from labkit.i18n import plot_tr
from labkit.viz.plots import RANK_COLORS


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: figures are not kept alive by a global registry

    fig = Figure(figsize=(width, height), dpi=80)
    return fig, fig.subplots()


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str = "#dde6f2") -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", fc=color, ec="0.3", lw=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5)


def _arrow(ax, x0: float, y0: float, x1: float, y1: float) -> None:
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "-|>", "color": "0.3", "lw": 0.8})


def _draw_replicas(ax, p: int, kind: str) -> None:
    """Per rank, top to bottom: its input, what it computes, the collective, what it ends with."""
    if kind == "data":  # templates: {r} is filled in per rank below
        top, middle = plot_tr("batch shard {r}"), plot_tr("whole model\n(a replica)\n→ gradient $g_{r}$")
        out, collective = plot_tr("same update\nw ← w − η·g/N"), plot_tr("all-reduce: g = Σ$_r$ $g_r$")
    else:
        top, middle = (
            plot_tr("whole X\n(its columns $I_{r}$)"),
            plot_tr("$X_{{:,I_{r}}}\\,W_{{I_{r},:}}$\n= partial $Y_{r}$"),
        )
        out, collective = "Y = X W", plot_tr("all-reduce: Y = Σ$_r$ $Y_r$")
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
    ax.text(micro + p - 1.15, 0, plot_tr("inference\nstops here →"), ha="right", va="center", fontsize=7)
    ax.set(xlim=(0, slots), ylim=(p - 0.5, -0.5), yticks=range(p), xticks=range(0, slots + 1, 2))
    ax.set(xlabel=plot_tr("time (slots of one stage's forward pass)"), ylabel=plot_tr("rank (= stage)"))


def draw_parallelism(kind: str, p: int = 4, micro_batches: int = 4):
    """A diagram of ``kind`` ("data", "tensor" or "pipeline") parallelism on p ranks; returns (figure, kind)."""
    titles = {
        "data": plot_tr("Data parallelism: replicate the model, split the batch, all-reduce the gradients"),
        "tensor": plot_tr("Tensor parallelism (row split): each rank multiplies its rows of W, an all-reduce sums"),
        "pipeline": plot_tr(
            "Pipeline parallelism: {p} stages, {m} micro-batches (GPipe training schedule)", p=p, m=micro_batches
        ),
    }
    if kind not in titles:
        raise ValueError(f"unknown kind {kind!r}: use one of {list(titles)}")
    fig, ax = _figure(8.0, 3.0 if kind == "pipeline" else 3.4)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.17, top=0.88)
    if kind == "pipeline":
        _draw_pipeline(ax, p, micro_batches)
    else:
        _draw_replicas(ax, p, kind)
        ax.set(xlim=(-0.6, p - 0.4), ylim=(0, 5.6), xticks=range(p), yticks=[], xlabel=plot_tr("rank"))
        ax.set_ylabel(plot_tr("data flows down ↓"))
        ax.grid(False)
        for side in ("left", "top", "right"):
            ax.spines[side].set_visible(False)
    ax.set_title(titles[kind], fontsize=10)
    return fig, kind
