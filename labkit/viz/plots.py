"""Pure functions that compute and draw the kit's figures; the widgets only wire controls to them.

Each returns ``(figure, result)``: a matplotlib Figure (titled, axes labelled with units) and the numbers it
drew, so a test can check both without a browser.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from labkit import cost
from labkit.i18n import pad, plot_tr, tr

#: One colour per rank (or micro-batch, or phase), shared by every figure of the kit.
RANK_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c")

COLORS = {
    "ps": "#c44e52",
    "tree": "#8172b2",
    "ring": "#4c72b0",
    "recursive_doubling": "#55a868",
    "halving_doubling": "#dd8452",
}


def si(x: float, unit: str) -> str:
    """x with an SI prefix: 1.08 MB, 550 µs."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x / 1e-9:.3g} n{unit}"


def _figure(ncols: int, width: float = 8.0, height: float = 3.2):
    from matplotlib.figure import Figure  # no pyplot: figures are not kept alive by a global registry

    fig = Figure(figsize=(width, height), dpi=80)
    # fixed margins, not tight_layout: measuring every tick label took most of a redraw's time
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.16, top=0.89, wspace=0.32)
    return fig, fig.subplots(1, ncols)


def welcome_numbers(p: int, params: int, link_name: str = "10 GbE", bytes_per_param: int = 4) -> dict:
    """Per algorithm (ps, tree, ring): bytes the busiest rank sends and modelled seconds of one gradient all-reduce."""
    link = cost.preset(link_name)
    nbytes = params * bytes_per_param
    return {
        alg: (cost.bytes_sent_per_rank(alg, nbytes, p), cost.allreduce_time(alg, nbytes, p, link))
        for alg in ("ps", "tree", "ring")
    }


def plot_welcome(p: int, params: int, link_name: str = "10 GbE"):
    """Two bar charts: bytes the busiest rank sends, and modelled time, per all-reduce algorithm."""
    numbers = welcome_numbers(p, params, link_name)
    fig, (ax_bytes, ax_time) = _figure(2)
    names = list(numbers)
    colors = [COLORS[a] for a in names]
    ax_bytes.bar(names, [numbers[a][0] / 1e6 for a in names], color=colors)
    ax_bytes.set(
        title=plot_tr("Bytes the busiest rank sends (p = {p})", p=p),
        ylabel=plot_tr("MB sent"),
        xlabel=plot_tr("algorithm"),
    )
    ax_time.bar(names, [numbers[a][1] * 1e3 for a in names], color=colors)
    ax_time.set(
        title=plot_tr("Modelled all-reduce time on {link}", link=link_name),
        ylabel=plot_tr("time (ms)"),
        xlabel=plot_tr("algorithm"),
    )
    return fig, numbers


def _log_ticks(axis, lo: float, hi: float, unit: str) -> None:
    """Decade ticks labelled in plain units (1 kB, 10 ms): clearer than 10^x, and far faster to draw."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    decades = np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
    step = max(1, int(np.ceil(len(decades) / 6)))
    ticks = 10.0 ** decades[::step]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_ticklabels([si(t, unit) for t in ticks])
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def cost_table(algorithms: tuple[str, ...], nbytes: float, p: int, link: cost.Link) -> dict[str, dict[str, float]]:
    """At one message size: time (s), algbw and busbw (bytes/s, nccl-tests' definitions) per algorithm."""
    table = {}
    for alg in algorithms:
        t = cost.allreduce_time(alg, nbytes, p, link)
        table[alg] = {"time": t, "algbw": cost.algbw(nbytes, t), "busbw": cost.busbw(nbytes, t, p)}
    return table


def crossovers(algorithms: tuple[str, ...], p: int, link: cost.Link, lo: float, hi: float) -> list[tuple]:
    """Every (alg_a, alg_b, nbytes) where two of the algorithms take equal time, for sizes in [lo, hi]."""
    found = []
    for a, b in combinations(algorithms, 2):
        n = cost.crossover(a, b, p, link, lo=lo, hi=hi)
        if n is not None:
            found.append((a, b, n))
    return sorted(found, key=lambda row: row[2])


def plot_cost(
    algorithms: tuple[str, ...],
    nbytes: float,
    p: int,
    link: cost.Link,
    lo: float = 1.0,
    hi: float = 1e10,
    points: int = 121,
):
    """Modelled all-reduce time and bus bandwidth against message size, crossovers marked, the chosen size lined."""
    if not algorithms:
        raise ValueError(tr("choose at least one algorithm to plot"))
    sizes = np.logspace(np.log10(lo), np.log10(hi), points)
    fig, (ax_t, ax_bw) = _figure(2, width=9.5, height=3.6)
    for alg in algorithms:
        t = cost.allreduce_time(alg, sizes, p, link)
        ax_t.loglog(sizes, t, label=alg, color=COLORS.get(alg))
        ax_bw.semilogx(sizes, cost.busbw(sizes, t, p) / 1e9, label=alg, color=COLORS.get(alg))
    marks = crossovers(algorithms, p, link, lo, hi)
    for a, b, n in marks:
        t = cost.allreduce_time(a, n, p, link)
        ax_t.plot([n], [t], "ko", markersize=4)
        ax_t.annotate(f"{a} = {b}\n{si(n, 'B')}", (n, t), fontsize=7, xytext=(4, -14), textcoords="offset points")
    for ax in (ax_t, ax_bw):
        ax.axvline(nbytes, color="gray", linestyle=":", linewidth=1)
        _log_ticks(ax.xaxis, lo, hi, "B")
    _log_ticks(ax_t.yaxis, *ax_t.get_ylim(), "s")
    ax_t.set(
        title=plot_tr("All-reduce time, p = {p}", p=p),
        xlabel=plot_tr("message size (bytes)"),
        ylabel=plot_tr("time (log scale)"),
    )
    ax_bw.set(
        title=plot_tr("Bus bandwidth ({gbps:.3g} GB/s link)", gbps=link.bandwidth / 1e9),
        xlabel=plot_tr("message size (bytes)"),
        ylabel=plot_tr("bus bandwidth (GB/s)"),
    )
    ax_t.legend(fontsize=7)
    return fig, {"table": cost_table(algorithms, nbytes, p, link), "crossovers": marks}


def format_cost_table(table: dict[str, dict[str, float]]) -> str:
    """The numbers of `cost_table` as fixed-width text (time with its unit, bandwidths in GB/s)."""
    lines = [pad(tr("algorithm"), 20) + pad(tr("time"), 12, ">") + f"{'algbw GB/s':>12}{'busbw GB/s':>12}"]
    for alg, row in table.items():
        lines.append(f"{alg:<20}{si(row['time'], 's'):>12}{row['algbw'] / 1e9:>12.3f}{row['busbw'] / 1e9:>12.3f}")
    return "\n".join(lines)


def plot_measured(*measurements, kind: str = "exchange"):
    """Measured all-reduce times (dots) beside the α-β-γ model on the fitted link (lines), one panel a transport.

    Returns the figure and, per panel ("shm, p = 4"), the median |model error| over messages of 1 MB and more.
    """
    fig, axes = _figure(len(measurements), width=4.8 * len(measurements), height=3.6)
    axes = np.atleast_1d(axes)
    errors = {}
    for ax, m in zip(axes, measurements, strict=True):
        rows = m.compare(kind)
        link = m.link(kind)
        sizes = sorted({r["bytes"] for r in rows})
        grid = np.logspace(np.log10(sizes[0]), np.log10(sizes[-1]), 50)
        for alg in sorted({r["algorithm"] for r in rows}):
            mine = [r for r in rows if r["algorithm"] == alg]
            ax.loglog(
                [r["bytes"] for r in mine],
                [r["measured"] for r in mine],
                "o",
                color=COLORS.get(alg),
                label=alg,
                markersize=4,
            )
            ax.loglog(grid, cost.allreduce_time(alg, grid, m.p, link), "-", color=COLORS.get(alg), linewidth=1)
        _log_ticks(ax.xaxis, sizes[0], sizes[-1], "B")
        _log_ticks(ax.yaxis, *ax.get_ylim(), "s")
        ax.set(
            title=plot_tr("{transport}, p = {p}: measured (dots), model (lines)", transport=m.transport, p=m.p),
            xlabel=plot_tr("message size (bytes)"),
            ylabel=plot_tr("time (log scale)"),
        )
        big = [abs(r["error"]) for r in rows if r["bytes"] >= 1 << 20]
        errors[f"{m.transport}, p = {m.p}"] = float(np.median(big)) if big else float("nan")
    axes[0].legend(fontsize=7)
    return fig, errors
