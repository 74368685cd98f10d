"""labkit.background: the memory and compute formulas against hand counts and the papers' own totals; every
published figure carries its citation; the plots are titled, labelled and have legends."""

import re

import matplotlib
import pytest

from labkit.lessons import background as bg

matplotlib.use("Agg")


def test_training_memory_is_16_bytes_a_parameter_as_zero_counts_it():
    # ZeRO (Rajbhandari et al. 2020): 2 (fp16 weights) + 2 (fp16 grads) + 12 (fp32 weights, momentum, variance)
    assert bg.memory_bytes(1, "train_mixed") == 2 + 2 + 4 + 4 + 4
    assert bg.memory_bytes(1.5e9) == pytest.approx(24e9)  # the paper's 1.5 B GPT-2: 24 GB of model states
    assert bg.memory_bytes(7.5e9) == pytest.approx(120e9)  # the paper's Figure 1 example: 7.5 B → 120 GB
    assert bg.memory_bytes(1.5e9, "infer_fp16") == pytest.approx(3e9)  # "3GB ... for its weights in 16-bit"
    assert bg.memory_bytes(10, "train_fp32") == 10 * (4 + 4 + 4 + 4)
    assert bg.memory_bytes(10, "infer_fp32") == 40
    parts = bg.memory_breakdown(1e6)
    assert parts["fp32 Adam variance"] == 4e6 and sum(parts.values()) == 16e6
    with pytest.raises(ValueError, match="unknown regime"):
        bg.memory_bytes(1, "training")


def test_min_devices_rounds_up_but_not_past_an_exact_fit():
    assert bg.min_devices(175e9, 80) == 35  # 2,800 GB / 80 GB
    assert bg.min_devices(5e9, 80) == 1  # exactly 80 GB fits in one
    assert bg.min_devices(5e9 + 1e3, 80) == 2
    assert bg.min_devices(175e9, 80, "infer_fp16") == 5  # 350 GB


def test_six_n_d_agrees_with_the_papers_own_totals():
    assert bg.training_flops(175e9, 300e9) == pytest.approx(3.15e23)
    for run in bg.RUNS:
        if run.reported_flops:
            assert bg.training_flops(run.params, run.tokens) == pytest.approx(run.reported_flops, rel=0.05), run.name


def test_doubling_time_of_an_exact_exponential():
    years = [2000, 2002, 2004, 2010]
    assert bg.doubling_time_months(years, [2 ** ((y - 2000) / 2) for y in years]) == pytest.approx(24.0)


@pytest.mark.parametrize(
    "rows", [bg.MODELS, bg.DEVICES, bg.RUNS, bg.DATASETS], ids=["models", "devices", "runs", "data"]
)
def test_every_published_figure_is_cited(rows):
    for row in rows:
        assert re.search(r"(19|20)\d\d|datasheet", row.citation), f"{row.name}: citation without a year or source"
        assert 1990 <= row.year <= 2030


def test_cited_counts_of_keras_models():
    keras = pytest.importorskip("keras")
    counts = {m.name: m.params for m in bg.MODELS}
    assert keras.applications.VGG16(weights=None).count_params() == pytest.approx(counts["VGG-16"], rel=0.005)
    assert keras.applications.ResNet50(weights=None).count_params() == pytest.approx(counts["ResNet-50"], rel=0.005)


def assert_labelled(fig):
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), "every axis titled and labelled"
        assert ax.get_legend() is not None, f"no legend on {ax.get_title()!r}"
    assert fig.dpi <= 90


def test_plots_are_titled_labelled_and_return_what_they_drew():
    fig, data = bg.plot_memory()
    assert_labelled(fig)
    assert "GB" in fig.axes[0].get_ylabel()
    gpt3 = next(row for row in data["models"] if row[0] == "GPT-3")
    assert gpt3[2:] == pytest.approx((2800.0, 350.0))  # GB to train, GB to serve
    fig, data = bg.plot_compute(reference=("the article's MLP", 1e11))
    assert_labelled(fig)
    assert [row["name"] for row in data] == [r.name for r in bg.RUNS]
    assert data[0]["years_on_one_gpu"] == pytest.approx(3.15e23 / 989e12 / (365.25 * 86400))
    fig, data = bg.plot_data()
    assert_labelled(fig)
    assert len(data) == len(bg.DATASETS)
    fig, data = bg.plot_baseline({"accuracy": [0.8, 0.9], "val_accuracy": [0.85, 0.88]}, [1.0, 0.2])
    assert_labelled(fig)
    assert data == {"epochs": [1, 2], "seconds": [1.0, 0.2]}


def test_table_aligns_columns():
    text = bg.table([("a", 1), ("bbb", 22)], ("name", "n"))
    assert text.splitlines() == ["name   n", "a      1", "bbb   22"]


def test_short_counts():
    assert [bg.short(n) for n in (60e6, 1.5e9, 15.6e12, 89_610, 12)] == ["60 M", "1.5 B", "15.6 T", "89.6 k", "12"]


def test_devices_are_data_centre_gpus_growing_in_memory():
    # the memory line is labelled "data-centre GPU": no consumer GeForce card (AlexNet's GTX 580) belongs in it
    assert not [d.name for d in bg.DEVICES if "GTX" in d.name or "GeForce" in d.name]
    memories = [d.memory_gb for d in bg.DEVICES]
    assert memories == sorted(memories) and [d.year for d in bg.DEVICES] == sorted(d.year for d in bg.DEVICES)


def test_min_devices_rounds_up_a_fractional_count():
    # 175 B × 16 B = 2,800 GB on 141 GB H200s: 19.86 by division, 20 GPUs in fact (19 hold only 2,679 GB)
    assert 2800 / 141 == pytest.approx(19.86, abs=0.01)
    assert bg.min_devices(175e9, 141) == 20
