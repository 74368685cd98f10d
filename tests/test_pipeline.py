"""labkit.pipeline: outputs equal one device, the bubble is GPipe's (S−1)/(M+S−1), the Gantt chart shows the run."""

import numpy as np
import pytest

from labkit import comm, cost
from labkit.parallel import pipeline as pl
from labkit.parallel import tensor as tp
from labkit.viz import gantt, widgets

FREE = cost.Link(0.0, 0.0)


@pytest.mark.parametrize("p", range(1, 9))
@pytest.mark.parametrize("micro_batches", [1, 3, 8])
def test_outputs_equal_one_device(p, micro_batches):
    layers = pl.uniform_mlp(depth=8, width=24, seed=1)
    x = np.random.default_rng(p).normal(size=(11, 24)).astype(np.float32)  # 11 rows: micro-batches of unequal size
    run = comm.run(lambda c: pl.pipeline_forward(x, layers, c, micro_batches), p)
    assert run.values[:-1] == [None] * (p - 1)
    np.testing.assert_allclose(run.values[-1], tp.forward(x, layers), atol=1e-5, rtol=0)
    assert len(run.trace) == (p - 1) * micro_batches  # each micro-batch crosses each boundary once


def test_the_articles_mlp_on_up_to_three_stages():
    layers = tp.random_article_layers()
    x = np.random.default_rng(0).random((20, 784), dtype=np.float32)
    for p in (1, 2, 3):
        run = comm.run(lambda c: pl.pipeline_forward(x, layers, c, 4), p)
        np.testing.assert_allclose(run.values[-1], tp.forward(x, layers), atol=1e-5)
    with pytest.raises(ValueError, match="3 layers cannot fill 4 pipeline stages.*use p <= 3"):
        pl.stages(layers, 4)


def test_stages_balance_the_flops():
    layers = tp.random_article_layers()  # 78,400 / 10,000 / 1,000 multiply-adds a row
    assert pl.stages(layers, 2) == [range(0, 1), range(1, 3)]
    assert pl.stages(layers, 2, balance="count") == [range(0, 2), range(2, 3)]
    assert pl.stages(pl.uniform_mlp(8, 8), 4) == [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    assert pl.stages(pl.uniform_mlp(5, 8), 3) == pl.simple_stages(5, 3) == [range(0, 2), range(2, 4), range(4, 5)]
    with pytest.raises(ValueError, match="unknown balance"):
        pl.stages(layers, 2, balance="magic")


@pytest.mark.parametrize("p", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("micro_batches", [1, 2, 4, 16])
def test_the_bubble_is_gpipes_on_equal_stages_and_free_links(p, micro_batches):
    layers = pl.uniform_mlp(depth=2 * p, width=16)  # two layers a stage: equal stages
    x = np.zeros((16, 16), np.float32)
    run = comm.run(lambda c: pl.pipeline_forward(x, layers, c, micro_batches), p, link=FREE)
    assert pl.measured_bubble(run, p) == pytest.approx(pl.bubble_fraction(p, micro_batches), abs=1e-12)


@pytest.mark.parametrize("link", ["10 GbE", "shared memory"])
@pytest.mark.parametrize(("p", "micro_batches"), [(2, 4), (3, 8), (4, 4), (8, 16)])
def test_the_closed_form_equals_the_simulator(link, p, micro_batches):
    layers = pl.uniform_mlp(depth=8, width=32)  # p = 3: stages of 3, 3 and 2 layers; the slowest sets the pace
    x = np.zeros((64, 32), np.float32)  # 64 rows: equal micro-batches, where the closed form is exact
    lk = cost.preset(link)
    run = comm.run(lambda c: pl.pipeline_forward(x, layers, c, micro_batches), p, link=lk)
    assert run.time == pytest.approx(pl.pipeline_time(layers, 64, p, micro_batches, lk), rel=1e-12)


def test_micro_batches_must_fit_the_batch():
    with pytest.raises(ValueError, match="cannot cut a batch of 3 into 4 micro-batches"):
        pl.check_micro_batches(3, 4)
    with pytest.raises(comm.CommError, match="cannot cut a batch of 3"):
        comm.run(lambda c: pl.pipeline_forward(np.zeros((3, 8)), pl.uniform_mlp(2, 8), c, 4), 2)


def test_gantt_chart_from_a_real_trace():
    layers = pl.uniform_mlp(depth=4, width=16)
    run = comm.run(lambda c: pl.pipeline_forward(np.zeros((8, 16), np.float32), layers, c, 4), 4, link=FREE)
    fig, result = gantt.plot_gantt(run, "four stages")
    ax = fig.axes[0]
    assert len(ax.patches) == 16 + len(run.trace)  # 4 ranks × 4 micro-batches of compute, and the messages
    assert "four stages" in ax.get_title() and "µs" in ax.get_xlabel() and ax.get_ylabel()
    assert result["bubble"] == pytest.approx(3 / 7)
    assert result["busy"] == pytest.approx([4 / 7] * 4)


def test_the_explorer_redraws_from_its_controls():
    pytest.importorskip("ipywidgets")
    ex = widgets.pipeline_explorer({"deep": pl.uniform_mlp(8, 16), "article": tp.random_article_layers()})
    assert ex.result["p"] == 4 and ex.result["bubble"] == pytest.approx(ex.result["formula"])
    ex.controls["p"].value, ex.controls["micro_batches"].value = 4, 12
    assert ex.result["bubble"] == pytest.approx(3 / 15, abs=1e-3) and "bubble 20.0%" in ex.text  # 128 = 12 × 10.7
    ex.controls["model"].value = "article"  # 3 layers: 4 stages are clamped to 3
    assert ex.result["p"] == 3 and ex.result["bubble"] > ex.result["formula"]  # unequal stages idle more
    ex.controls["link_name"].value = "10 GbE"
    assert ex.result["time"] == pytest.approx(ex.result["predicted"], rel=0.05)
