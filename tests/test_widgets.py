"""labkit.widgets: the pure functions against the cost model, and the widgets driven by setting .value."""

import matplotlib
import pytest

from labkit import cost, widgets

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
    fig, numbers = widgets.plot_welcome(8, 25_557_032, "InfiniBand HDR")
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
    assert widgets._si(1_080_000, "B") == "1.08 MB"
    assert widgets._si(0.00055, "s") == "550 µs"
    assert widgets._si(2.5e-8, "s") == "25 ns"
