"""labkit.compress.explorer: bytes against codec.encode of schemes built here, accuracy against Keras; the widget
(labkit.viz.widgets.compression_explorer) prints what tradeoff computes."""

import numpy as np
import pytest

from labkit.compress import codec, explorer, gradients
from labkit.compress import weights as W


@pytest.fixture(scope="module")
def setup():
    """The article's MLP after two epochs on the offline MNIST subset, and the test subset."""
    from labkit import data, models

    x, y = data.load("mnist", "train", verbose=False)
    xt, yt = data.load("mnist", "test", verbose=False)
    model = models.compile_article(models.article_mlp(0))
    models.fit_timed(model, models.flatten(x), y, epochs=2)
    return model, models.flatten(xt), yt


def _pruned_copy(model, sparsity):
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    W.prune(copy, sparsity)  # Keras-side pruning: an independent path to the same kernels
    return copy


@pytest.mark.parametrize("sparsity, bits", [(0.0, 4), (0.9, 2), (0.95, 5)])
def test_bytes_are_those_of_codec_encode(setup, sparsity, bits):
    model, xt, yt = setup
    point = explorer.tradeoff(model, xt, yt, sparsity, bits)
    copy = _pruned_copy(model, sparsity)
    k = 1 << bits
    layouts = [codec.Scheme(values="codebook", clusters=k, sparse=s) for s in ((False, True) if sparsity else (False,))]
    blobs = [codec.encode(copy, s) for s in layouts]
    assert point.nbytes == min(len(b) for b in blobs)
    assert point.dense_bytes == 4 * 89_610 and point.ratio == pytest.approx(4 * 89_610 / point.nbytes)
    best = blobs[int(np.argmin([len(b) for b in blobs]))]
    decoded = codec.decode(best)  # Keras evaluates the same bytes: the NumPy forward pass must agree
    keras_accuracy = decoded.evaluate(xt, yt, verbose=0)[1]  # a float32 metric; one image is 1e-3
    assert point.accuracy == pytest.approx(keras_accuracy, abs=1e-6)


def test_wire_bytes_are_those_of_the_matching_gradient_compressor(setup):
    model, xt, yt = setup
    top = explorer.tradeoff(model, xt, yt, 0.99, 4, p=8)
    assert top.wire_bytes == 7 * (896 * (4 + 4))  # k = round(0.01 · 89,610) = 896, uint32 index + float32 value
    assert top.wire_dense == gradients.wire_bytes(None, 89_610, 8)
    q = explorer.tradeoff(model, xt, yt, 0.5, 3, p=4, gradient="qsgd")
    assert q.wire_bytes == 3 * (4 + (89_610 + 7) // 8 + (89_610 * 3 + 7) // 8)  # norm, signs, 3-bit levels


def test_sixteen_bits_dense_keeps_the_accuracy(setup):
    model, xt, yt = setup
    dense = model.evaluate(xt, yt, verbose=0)[1]
    point = explorer.tradeoff(model, xt, yt, 0.0, 16)
    assert point.scheme.values == "linear" and point.scheme.bits == 16
    assert abs(point.accuracy - dense) <= 0.002


def test_accuracy_falls_and_bytes_fall_as_sparsity_rises(setup):
    model, xt, yt = setup
    points = explorer.curve(model, xt, yt, bits=5, sparsities=(0.0, 0.5, 0.8, 0.9, 0.95, 0.99))
    acc = [q.accuracy for q in points]
    assert all(b <= a + 0.01 for a, b in zip(acc, acc[1:], strict=False))  # weakly: pruning may help a little
    assert acc[-1] < acc[0] - 0.2  # 99 % pruned without fine-tuning loses most of what was learned
    sizes = [q.nbytes for q in points]
    assert all(b <= a for a, b in zip(sizes, sizes[1:], strict=False))  # dense layout while it is the smaller
    assert sizes[2] < sizes[0] and sizes[-1] < sizes[0] / 5


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"sparsity": 1.0}, r"\[0, 1\)"),
        ({"sparsity": -0.1}, r"\[0, 1\)"),
        ({"bits": 0}, r"1\.\.16"),
        ({"bits": 2.5}, r"1\.\.16"),
        ({"clusters": 0}, "clusters"),
        ({"p": 1}, "≥ 2"),
        ({"gradient": "adam"}, "topk"),
    ],
)
def test_bad_inputs_name_the_fix(setup, kw, match):
    model, xt, yt = setup
    args = {"sparsity": 0.5, "bits": 4} | kw
    with pytest.raises(ValueError, match=match):
        explorer.tradeoff(model, xt, yt, **args)


def test_mismatched_data_is_an_error(setup):
    model, xt, yt = setup
    with pytest.raises(ValueError, match="one label per image"):
        explorer.tradeoff(model, xt, yt[:-1], 0.5, 4)


def test_widget_prints_what_tradeoff_computes(setup):
    model, xt, yt = setup
    from labkit.viz import widgets

    ex = widgets.compression_explorer(model, xt[:300], yt[:300], sparsity=0.5, bits=2)
    first = ex.text
    assert first.startswith(explorer.tradeoff(model, xt[:300], yt[:300], 0.5, 2).line())
    ex.controls["sparsity"].value = 0.95
    ex.controls["p"].value = 16
    want = explorer.tradeoff(model, xt[:300], yt[:300], 0.95, 2, p=16)
    assert ex.text != first and ex.text.startswith(want.line())
    assert ex.result == want
    assert ex.figure.axes[0].get_xlabel().startswith("bytes")
