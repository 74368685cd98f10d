"""labkit.widgets: the pure functions against the cost model, and the widgets driven by setting .value."""

import matplotlib
import pytest

from labkit import cost
from labkit.viz import plots, widgets

matplotlib.use("Agg")


def test_welcome_numbers_are_the_cost_model():
    n = 89_610 * 4
    link = cost.preset("10 GbE")
    numbers = widgets.welcome_numbers(4, 89_610, "10 GbE")
    assert list(numbers) == ["ps", "tree", "ring"]
    # independent reference: the closed forms written out by hand for p = 4
    assert numbers["ring"][0] == pytest.approx(2 * 3 / 4 * n)
    assert numbers["ps"][0] == pytest.approx(3 * n)
    assert numbers["ring"][1] == pytest.approx(2 * 3 * link.alpha + 2 * 3 / 4 * n * link.beta)
    assert numbers["ps"][1] == pytest.approx(2 * 3 * (link.alpha + n * link.beta))


def test_plot_welcome_draws_what_it_returns():
    fig, numbers = plots.plot_welcome(8, 25_557_032, "InfiniBand HDR")
    ax_bytes, ax_time = fig.axes
    heights = [bar.get_height() for bar in ax_bytes.patches]
    assert heights == pytest.approx([numbers[a][0] / 1e6 for a in numbers])
    assert ax_bytes.get_title() and ax_bytes.get_ylabel() == "MB sent" and ax_time.get_ylabel() == "time (ms)"
    assert "InfiniBand HDR" in ax_time.get_title()


def test_welcome_widget_responds_to_its_controls():
    explorer = widgets.bytes_per_worker()
    first = explorer.result
    assert explorer.text.startswith("p=4, 89,610 parameters:")
    explorer.controls["p"].value = 16
    assert explorer.text.startswith("p=16,")
    assert explorer.result["ps"][0] == pytest.approx(5 * first["ps"][0])  # the master sends p−1 copies: 15 vs 3
    explorer.controls["params"].value = widgets.MODELS["ResNet-50 (25.6 M)"]
    assert explorer.result["ring"][0] == pytest.approx(2 * 15 / 16 * 25_557_032 * 4)
    before = explorer.result["ring"][1]
    explorer.controls["link_name"].value = "NVLink 4 (H100)"
    assert explorer.result["ring"][1] < before / 100  # 450 GB/s against 1.25 GB/s
    assert explorer.figure.axes[1].get_title().endswith("NVLink 4 (H100)")


def test_si_prefixes():
    assert plots.si(1_080_000, "B") == "1.08 MB"
    assert plots.si(0.00055, "s") == "550 µs"
    assert plots.si(2.5e-8, "s") == "25 ns"


def test_cost_table_matches_the_closed_forms():
    link = cost.Link(alpha=1e-6, beta=1e-9)
    table = plots.cost_table(("ring", "ps"), 1e6, 4, link)
    ring = 2 * 3 * 1e-6 + 2 * 3 / 4 * 1e6 * 1e-9  # hand-computed closed form
    assert table["ring"]["time"] == pytest.approx(ring)
    assert table["ring"]["algbw"] == pytest.approx(1e6 / ring)
    assert table["ring"]["busbw"] == pytest.approx(1e6 / ring * 2 * 3 / 4)


def test_plot_cost_marks_the_crossover_where_times_are_equal():
    link = cost.preset("10 GbE")
    fig, result = plots.plot_cost(("ring", "tree"), 1e6, 8, link)
    ((a, b, n),) = result["crossovers"]
    assert cost.allreduce_time(a, n, 8, link) == pytest.approx(cost.allreduce_time(b, n, 8, link))
    ax_t, ax_bw = fig.axes
    assert [line.get_label() for line in ax_t.get_lines()[:2]] == ["ring", "tree"]
    assert ax_t.get_title() == "All-reduce time, p = 8" and ax_t.get_xlabel() == "message size (bytes)"
    assert ax_bw.get_ylabel() == "bus bandwidth (GB/s)"
    with pytest.raises(ValueError, match="at least one algorithm"):
        plots.plot_cost((), 1e6, 8, link)


def test_cost_explorer_responds_to_every_control():
    explorer = widgets.cost_explorer()
    assert explorer.text.startswith("p=8, n=1 MB, link=10 GbE")
    ring_8 = explorer.result["table"]["ring"]["time"]
    explorer.controls["p"].value = 64
    assert explorer.result["table"]["ring"]["time"] > ring_8  # more steps of α
    explorer.controls["nbytes"].value = 1e9
    assert explorer.text.startswith("p=64, n=1 GB")
    explorer.controls["algorithms"].value = ("ring", "halving_doubling")
    assert set(explorer.result["table"]) == {"ring", "halving_doubling"}
    explorer.controls["preset"].value = widgets.CUSTOM
    explorer.controls["alpha_us"].value = 100.0
    explorer.controls["GBps"].value = 1.0
    expected = cost.allreduce_time("ring", 1e9, 64, cost.Link.from_bandwidth(100e-6, 1.0))
    assert explorer.result["table"]["ring"]["time"] == pytest.approx(expected)
    labels = [line.get_label() for line in explorer.figure.axes[0].get_lines()]
    assert "halving_doubling" in labels and "ps" not in labels
