"""Why distribute: models, compute and data have grown faster than one device. Published figures, each cited.

Three small tables of published numbers (model sizes, GPU memories, training runs, data sets), the two formulas
that turn them into the chapter's argument, and pure plotting functions that return ``(figure, data)``:

- memory to hold a model's *states* (activations excluded): N parameters × bytes per parameter, where training
  with Adam in mixed precision takes 2 + 2 + 4 + 4 + 4 = 16 bytes (Rajbhandari et al. 2020, ZeRO, SC'20) and
  fp16 inference 2 bytes;
- training compute: C ≈ 6·N·D floating-point operations for N parameters and D tokens (Kaplan et al. 2020,
  arXiv:2001.08361): 2N per token forward (a multiply and an add per weight), 4N backward.

``year`` is when a model, data set or device appeared (arXiv or launch); the citation says where the number is
published. 1 GB = 10⁹ bytes throughout (vendors' "80 GB" are within 7 % of that either way).
"""

from __future__ import annotations

import math

import numpy as np

from labkit.i18n import pad, plot_tr, tr, width

# The published numbers live in `published`; the chapter reaches them here.
from labkit.lessons.published import (  # noqa: E402, F401
    BYTES_PER_PARAM,
    DATASETS,
    DEVICES,
    GB,
    LLAMA3_RELIABILITY,
    MODELS,
    PEAK_FLOPS,
    RUNS,
    Dataset,
    Device,
    Model,
    TrainingRun,
)


def memory_breakdown(params: float, regime: str = "train_mixed") -> dict[str, float]:
    """Bytes of each kind of state for ``params`` parameters: params × bytes per parameter, per kind."""
    if regime not in BYTES_PER_PARAM:
        raise ValueError(f"unknown regime {regime!r}: use one of {list(BYTES_PER_PARAM)}")
    return {kind: params * b for kind, b in BYTES_PER_PARAM[regime].items()}


def state_name(kind: str) -> str:
    """A kind of model state (a key of `memory_breakdown`) as a student reads it, in the current language."""
    names = {
        "fp16 weights": tr("fp16 weights"),
        "fp16 gradients": tr("fp16 gradients"),
        "fp32 weights": tr("fp32 weights"),
        "fp32 gradients": tr("fp32 gradients"),
        "fp32 master weights": tr("fp32 master weights"),
        "fp32 Adam momentum": tr("fp32 Adam momentum"),
        "fp32 Adam variance": tr("fp32 Adam variance"),
    }
    return names.get(kind, kind)


def memory_bytes(params: float, regime: str = "train_mixed") -> float:
    """Bytes to hold a model's states: N × (16 training with Adam in mixed precision, 2 fp16 inference, …)."""
    return sum(memory_breakdown(params, regime).values())


def min_devices(params: float, device_gb: float, regime: str = "train_mixed") -> int:
    """The fewest devices of ``device_gb`` GB whose memories together hold the states (nothing else counted)."""
    return math.ceil(memory_bytes(params, regime) / (device_gb * GB) - 1e-12)


def training_flops(params: float, tokens: float) -> float:
    """Training compute C ≈ 6·N·D FLOPs (Kaplan et al. 2020): 2N forward and 4N backward per token or sample."""
    return 6.0 * params * tokens


def doubling_time_months(years, values) -> float:
    """Months to double, from a least-squares fit of log2(value) against year."""
    slope = np.polyfit(np.asarray(years, float), np.log2(np.asarray(values, float)), 1)[0]
    return 12.0 / slope


def short(n: float) -> str:
    """A count with a thousands suffix: 60 M, 1.5 B, 15.6 T."""
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {suffix}"
    return f"{n:.3g}"


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    """Rows as fixed-width text: the first column left-aligned, the others right-aligned (Chinese counts double)."""
    cells = [tuple(headers)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(width(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(pad(c, w, "<" if i == 0 else ">") for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join(line(r) for r in cells)


def _figure(ncols: int = 1, width: float = 7.5, height: float = 3.6):
    from matplotlib.figure import Figure  # no pyplot: nothing keeps the figure alive after it is shown

    fig = Figure(figsize=(width, height), dpi=80)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.9, wspace=0.3)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _label_points(ax, xs, ys, names, fontsize: int = 6) -> None:
    """Name each point; points sharing a year alternate right and left of their marker so labels do not collide."""
    seen: dict = {}
    for x, y, name in zip(xs, ys, names, strict=True):
        left = seen.get(x, 0) % 2 == 1
        seen[x] = seen.get(x, 0) + 1
        ax.annotate(
            name,
            (x, y),
            xytext=(-3 if left else 3, 2),
            textcoords="offset points",
            fontsize=fontsize,
            ha="right" if left else "left",
        )


def _years_axis(ax, years, right_margin: float = 1.5) -> None:
    """Whole years on the x axis, with room on the right for the last point's label."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(min(years) - 0.7, max(years) + right_margin)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_memory(models=MODELS, devices=DEVICES):
    """Memory to train (16 B/param) and to serve (2 B/param) each model, against the largest data-centre GPU."""
    fig, ax = _figure()
    years = [m.year for m in models]
    train = [memory_bytes(m.params, "train_mixed") / GB for m in models]
    infer = [memory_bytes(m.params, "infer_fp16") / GB for m in models]
    ax.semilogy(
        years, train, "o", color="#c44e52", label=plot_tr("training states: Adam, mixed precision (16 B/param)")
    )
    ax.semilogy(years, infer, "x", color="#4c72b0", label=plot_tr("inference weights: fp16 (2 B/param)"))
    _label_points(ax, years, train, [m.name for m in models])
    dev_years = [d.year for d in devices] + [max(years + [d.year for d in devices]) + 1]
    dev_gb = [d.memory_gb for d in devices] + [devices[-1].memory_gb]
    ax.step(
        dev_years,
        dev_gb,
        where="post",
        color="black",
        label=plot_tr("memory of one data-centre GPU (largest of its day)"),
    )
    _years_axis(ax, dev_years)
    ax.set(title=plot_tr("What a model needs against what one GPU holds"), xlabel=plot_tr("year"))
    ax.set_ylabel(plot_tr("memory (GB, log scale)"))
    ax.legend(fontsize=7, loc="upper left")
    data = {
        "models": [(m.name, m.year, t, i) for m, t, i in zip(models, train, infer, strict=True)],
        "devices": [(d.name, d.year, d.memory_gb) for d in devices],
    }
    return fig, data


def plot_compute(runs=RUNS, device: str = "H100 SXM", reference: tuple[str, float] | None = None):
    """Training compute of each run (6ND and the paper's own total), and the years it would take one GPU at peak.

    ``reference`` = (label, FLOPs) draws a horizontal line for comparison, e.g. the article's MLP on MNIST.
    """
    fig, (ax_c, ax_t) = _figure(2, width=9.0)
    peak = PEAK_FLOPS[device]
    years = [r.year for r in runs]
    c6 = [training_flops(r.params, r.tokens) for r in runs]
    ax_c.semilogy(years, c6, "o", color="#c44e52", label="C = 6·N·D")
    reported = [r for r in runs if r.reported_flops]
    ax_c.semilogy(
        [r.year for r in reported],
        [r.reported_flops for r in reported],
        "k+",
        markersize=10,
        label=plot_tr("the paper's own total"),
    )
    _label_points(ax_c, years, c6, [r.name for r in runs])
    if reference:
        ax_c.axhline(reference[1], color="gray", linestyle=":", label=reference[0])
    _years_axis(ax_c, years, 1.8)
    ax_c.set(title=plot_tr("Training compute"), xlabel=plot_tr("year"), ylabel=plot_tr("FLOPs (log scale)"))
    ax_c.legend(fontsize=7, loc="center left")
    one_gpu_years = [c / peak / (365.25 * 86400) for c in c6]
    one = plot_tr("one {device} at {tflops:.0f} TFLOP/s", device=device, tflops=peak / 1e12)
    ax_t.bar([r.name for r in runs], one_gpu_years, color="#dd8452", label=one)
    ax_t.set_yscale("log")
    ax_t.set(title=plot_tr("Time on one GPU at its peak"), xlabel=plot_tr("training run"))
    ax_t.set_ylabel(plot_tr("years (log scale)"))
    ax_t.tick_params(axis="x", labelsize=7)
    ax_t.legend(fontsize=7)
    data = [
        {"name": r.name, "flops_6nd": c, "reported": r.reported_flops, "years_on_one_gpu": t}
        for r, c, t in zip(runs, c6, one_gpu_years, strict=True)
    ]
    return fig, data


def plot_data(datasets=DATASETS):
    """Training-set sizes over the years: images for vision, words or tokens for language."""
    fig, ax = _figure()
    styles = {
        "images": ("s", "#55a868", plot_tr("images")),
        "words": ("^", "#8172b2", plot_tr("words")),
        "tokens": ("o", "#4c72b0", plot_tr("tokens")),
    }
    for unit, (marker, color, name) in styles.items():
        rows = [d for d in datasets if d.unit == unit]
        if rows:
            ax.semilogy([d.year for d in rows], [d.size for d in rows], marker, color=color, label=name)
    _label_points(ax, [d.year for d in datasets], [d.size for d in datasets], [d.name for d in datasets], 7)
    _years_axis(ax, [d.year for d in datasets], 3.0)
    ax.set(
        title=plot_tr("Training data grows too"),
        xlabel=plot_tr("year"),
        ylabel=plot_tr("training-set size (items, log scale)"),
    )
    ax.legend(fontsize=7, loc="upper left", title=plot_tr("items are"), title_fontsize=7)
    return fig, [(d.name, d.year, d.size, d.unit) for d in datasets]


def plot_baseline(history: dict[str, list[float]], epoch_seconds: list[float]):
    """One worker's training: accuracy per epoch (train, and test if given) and the seconds each epoch took."""
    fig, (ax_a, ax_t) = _figure(2, width=9.0, height=3.2)
    epochs = np.arange(1, len(epoch_seconds) + 1)
    ax_a.plot(epochs, history["accuracy"], "o-", label=plot_tr("training set"))
    if "val_accuracy" in history:
        ax_a.plot(epochs, history["val_accuracy"], "s--", label=plot_tr("test set"))
    ax_a.set(title=plot_tr("Accuracy after each epoch"), xlabel=plot_tr("epoch"))
    ax_a.set_ylabel(plot_tr("accuracy (fraction correct)"))
    ax_a.legend(fontsize=7)
    ax_t.bar(epochs, epoch_seconds, color="#dd8452", label=plot_tr("measured on this machine"))
    ax_t.set(title=plot_tr("Time per epoch (the first builds the graph)"), xlabel=plot_tr("epoch"))
    ax_t.set_ylabel(plot_tr("time (s)"))
    ax_t.legend(fontsize=7)
    return fig, {"epochs": epochs.tolist(), "seconds": list(epoch_seconds)}
