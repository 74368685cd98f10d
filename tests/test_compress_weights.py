"""Weight compression (labkit.compress.weights, codec, smaller) against hand counts, closed forms and Keras/TFLite."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from labkit.compress import weights as W
from labkit.compress.codec import _gaps


@pytest.fixture(scope="module")
def mnist():
    from labkit import data, models

    x, y = data.load("mnist", "train", verbose=False)
    xt, yt = data.load("mnist", "test", verbose=False)
    return models.flatten(x), y, models.flatten(xt), yt


@pytest.fixture(scope="module")
def trained(mnist):
    """The article's MLP after one epoch on the offline MNIST subset."""
    from labkit import models

    model = models.compile_article(models.article_mlp(0))
    models.fit_timed(model, mnist[0], mnist[1], epochs=1)
    return model


def _copy(model):
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return copy


# --- linear quantisation ---------------------------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8), elements=finite),
    st.integers(2, 16),
    st.booleans(),
    st.booleans(),
)
def test_quantise_within_half_a_step(w, bits, symmetric, per_channel):
    qt = W.quantize(w, bits, symmetric, per_channel)
    assert qt.q.min() >= 0 and qt.q.max() <= (1 << bits) - 1
    bound = qt.error_bound() if not per_channel else qt.error_bound()[None, :]
    error = np.abs(qt.dequantize().astype(np.float64) - w)
    assert np.all(error <= bound * (1 + 1e-5) + 1e-30 + np.abs(w) * 1e-6)  # float32 storage of the result


def test_int8_by_hand():
    qt = W.quantize(np.array([-1.0, 0.0, 0.5, 1.0]), bits=8)
    assert qt.scale == pytest.approx(1 / 127)
    assert (qt.q - qt.zero_point).tolist() == [-127, 0, 64, 127]  # 63.5 rounds to even
    asym = W.quantize(np.array([0.0, 1.0, 3.0]), bits=2, symmetric=False)
    assert asym.scale == pytest.approx(1.0) and asym.q.tolist() == [0, 1, 3]


def test_per_channel_beats_per_tensor_with_one_large_column():
    w = np.random.default_rng(0).normal(size=(50, 8))
    w[:, 3] *= 100
    tensor = np.abs(W.quantize(w, 8).dequantize() - w)
    channel = np.abs(W.quantize(w, 8, per_channel=True).dequantize() - w)
    assert channel.max() <= tensor.max()
    assert channel[:, [0, 1, 2, 4]].max() < tensor[:, [0, 1, 2, 4]].max() / 10  # small columns get small steps


@pytest.mark.parametrize("bits", [0, 1, 17, 32])
def test_bits_outside_range(bits):
    with pytest.raises(ValueError, match=r"2\.\.16"):
        W.quantize(np.ones((2, 2)), bits)


# --- k-means, pruning --------------------------------------------------------------------------------------------


def test_kmeans_exact_when_enough_clusters():
    v = np.array([0.0, 0.1, 10.0, 0.1, 0.0, -3.0])  # 4 distinct; linear init leaves clusters empty
    for k in (4, 7):
        centroids, labels = W.kmeans_1d(v, k)
        np.testing.assert_allclose(centroids[labels], v, atol=1e-7)
    centroids, labels = W.kmeans_1d(v, 1)
    assert centroids[0] == pytest.approx(v.mean())
    c2, l2 = W.kmeans_1d(v, 2)
    assert np.array_equal(l2, W.kmeans_1d(v, 2)[1])  # deterministic
    assert sorted(c2.tolist()) == pytest.approx([np.mean([0, 0.1, 0.1, 0, -3]), 10.0])


def test_kmeans_errors():
    with pytest.raises(ValueError, match="clusters must be"):
        W.kmeans_1d([1.0], 0)
    with pytest.raises(ValueError, match="at least one value"):
        W.kmeans_1d([], 2)


def test_magnitude_masks_by_hand():
    k = {"a": np.array([[0.1, -5.0], [0.3, -0.2]]), "b": np.array([[1.0, 0.05]])}
    layer = W.magnitude_masks(k, 0.5)
    assert layer["a"].tolist() == [[False, True], [True, False]] and layer["b"].tolist() == [[True, False]]
    glob = W.magnitude_masks(k, 0.5, scope="global")  # the 3 smallest of 6: 0.05, 0.1, 0.2
    assert glob["a"].tolist() == [[False, True], [True, False]] and glob["b"].tolist() == [[True, False]]
    assert W.magnitude_masks(k, {"a": 0.75})["b"].all()
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            W.magnitude_masks(k, bad)
    with pytest.raises(ValueError, match="no weights"):
        W.magnitude_masks({"e": np.zeros((0, 3))}, 0.5)


def test_pruning_mask_holds_after_fine_tuning(trained, mnist):
    model = _copy(trained)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    masks = W.prune(model, 0.8)
    before = [np.asarray(layer.kernel).copy() for layer in model.layers]
    W.fine_tune(model, masks, mnist[0][:512], mnist[1][:512], epochs=1, batch_size=64)
    for layer, old in zip(model.layers, before, strict=True):
        kernel, mask = np.asarray(layer.kernel), masks[layer.name]
        assert np.all(kernel[~mask] == 0)
        assert 1 - mask.mean() == pytest.approx(0.8, abs=1e-3)
        assert not np.array_equal(kernel[mask], old[mask])  # it did train
    assert np.count_nonzero(np.asarray(model.layers[0].bias))  # biases are not pruned


def test_cluster_fine_tuning_keeps_k_values(trained, mnist):
    model = _copy(trained)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    masks = W.prune(model, 0.5)
    labels = W.cluster(model, 4, masks)
    W.fine_tune(model, masks, mnist[0][:256], mnist[1][:256], labels=labels)
    for layer in model.layers:
        assert len(np.unique(np.asarray(layer.kernel))) <= 4 + 1  # 4 shared values and the pruned zero


def test_fine_tune_decays_the_rate_and_leaves_no_constraint(trained, mnist):
    model = _copy(trained)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    masks = W.prune(model, 0.7)
    W.fine_tune(model, masks, mnist[0][:256], mnist[1][:256], epochs=2, final_learning_rate=1e-5)
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(1e-5, rel=1e-3)
    assert all(layer.kernel.constraint is None for layer in model.layers)  # the masks do not outlive the call
    W.fine_tune(model, {}, mnist[0][:128], mnist[1][:128])  # no masks now: trained weights may leave zero
    assert any(np.any(np.asarray(layer.kernel)[~masks[layer.name]] != 0) for layer in model.layers)


def test_cubic_sparsity_schedule_by_hand():
    assert W.sparsity_at(0, 100, 0.9) == 0 and W.sparsity_at(100, 100, 0.9) == pytest.approx(0.9)
    assert W.sparsity_at(50, 100, 0.9) == pytest.approx(0.9 * (1 - 0.5**3))  # 0.7875
    assert W.sparsity_at(500, 100, 0.9) == pytest.approx(0.9)  # held after the ramp
    assert W.sparsity_at(0, 100, 0.9, initial=0.5) == pytest.approx(0.5)
    s = [W.sparsity_at(t, 100, 0.9) for t in range(101)]
    assert all(a <= b for a, b in zip(s, s[1:], strict=False))  # rises,
    assert s[10] - s[0] > s[100] - s[90]  # fast first, slowly last


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gradual_pruning_reaches_the_target_and_holds_it(trained, mnist, scope):
    model = _copy(trained)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    seen = []
    masks = W.gradual_prune(model, mnist[0][:1024], mnist[1][:1024], 0.8, epochs=2, frequency=4, scope=scope)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.size for m in masks.values())
    assert total - kept == int(np.floor(0.8 * total)) or scope == "layer"
    for layer in model.layers:
        kernel, mask = np.asarray(layer.kernel), masks[layer.name]
        assert np.all(kernel[~mask] == 0)
        seen.append(1 - mask.mean())
        assert layer.kernel.constraint is None
    if scope == "layer":
        assert seen == pytest.approx([0.8] * 3, abs=1e-3)
    with pytest.raises(ValueError, match="frequency"):
        W.gradual_prune(model, mnist[0][:64], mnist[1][:64], 0.5, frequency=0)


def test_trained_centroids_step_is_the_sum_of_their_weights_gradients():
    """One SGD step of `train_codebook` on a 6 → 3 softmax layer, against NumPy's gradient summed per cluster."""
    import keras

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 6)).astype(np.float32), rng.integers(0, 3, 8)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax", name="out")])
    labels = {"out": rng.integers(-1, 3, size=(6, 3))}  # 3 clusters, −1 pruned
    book, bias = np.array([-0.5, 0.1, 0.7], np.float32), rng.normal(size=3).astype(np.float32)
    kernel = np.where(labels["out"] >= 0, book[np.maximum(labels["out"], 0)], 0).astype(np.float32)
    model.set_weights([kernel, bias])
    lr = 0.1
    W.train_codebook(model, labels, x, y, epochs=1, batch_size=8, optimizer=keras.optimizers.SGD(lr))

    logits = x.astype(np.float64) @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(3)[y]) / len(x)  # ∂(mean cross-entropy)/∂logits
    grad_w, grad_b = x.T @ dz, dz.sum(0)
    grad_c = np.array([grad_w[labels["out"] == k].sum() for k in range(3)])
    want = np.where(labels["out"] >= 0, (book - lr * grad_c)[np.maximum(labels["out"], 0)], 0)
    got_kernel, got_bias = model.get_weights()
    np.testing.assert_allclose(got_kernel, want, atol=1e-6)
    np.testing.assert_allclose(got_bias, bias - lr * grad_b, atol=1e-6)


def test_trained_centroids_keep_k_values_and_masks(trained, mnist):
    model = _copy(trained)  # compiled with the loss as a string: train_codebook must take that too
    masks = W.prune(model, {"dense_1": 0.9, "dense_2": 0.5})
    labels = W.cluster(model, 7, {"dense_1": masks["dense_1"]})  # softmax left alone, dense_2 pruned only
    labels.pop("dense_2")
    losses = W.train_codebook(model, labels, mnist[0][:512], mnist[1][:512], epochs=2, learning_rate=1e-3, masks=masks)
    assert len(losses) == 2 and losses[1] < losses[0]
    d1, d2 = (np.asarray(model.get_layer(n).kernel) for n in ("dense_1", "dense_2"))
    assert len(np.unique(d1[masks["dense_1"]])) <= 7 and np.all(d1[~masks["dense_1"]] == 0)
    assert np.all(d2[~masks["dense_2"]] == 0) and len(np.unique(d2)) > 8  # trained freely where kept


# --- the stored format ----------------------------------------------------------------------------------------


def test_gaps_with_filler_by_hand():
    gaps, stored = _gaps(np.array([0, 5, 15]), index_bits=2)  # the longest gap 2 bits can say is 3 zeros
    assert gaps.tolist() == [0, 3, 0, 3, 3, 1]
    assert stored.tolist() == [0, 4, 5, 9, 13, 15]  # fillers at 4, 9, 13 hold zeros


def test_size_counted_by_hand():
    kernel = np.zeros((4, 4), np.float32)
    kernel.flat[[0, 5, 15]] = [0.5, -1.0, 2.0]
    scheme = W.Scheme(sparse=True, index_bits=2, values="codebook", clusters=3)  # 3 centroids + zero: 2 bits
    blob = W.encode([W.Layer("d", kernel, None, "linear")], scheme)
    # file 4 + 2 + 4; layer name 1 + 1, activation 1 + 6, shape/flags 19; codebook 3·4; 6 entries (3 fillers):
    # gaps 6·2 bits = 2 bytes, indices 6·2 bits = 2 bytes
    assert len(blob) == 10 + 2 + 7 + 19 + 12 + 2 + 2
    report = W.size_report(blob)
    assert sum(n for _, _, n in report.rows) == len(blob) == report.total
    assert report.by_layer()["d"] == {"header": 28, "codebook": 12, "indices": 2, "weights": 2}
    assert report.dense_bytes == 64
    np.testing.assert_array_equal(W.decode_layers(blob)[0].kernel, kernel)


def test_half_bias_by_hand_and_old_blobs_unchanged():
    kernel = np.zeros((4, 4), np.float32)
    kernel.flat[[0, 5, 15]] = [0.5, -1.0, 2.0]
    bias = np.array([0.1, -2.5, 3e-3, 60000.0], np.float32)
    full = W.Scheme(sparse=True, index_bits=2, values="codebook", clusters=3)
    half = W.Scheme(sparse=True, index_bits=2, values="codebook", clusters=3, half_bias=True)
    old = W.encode([W.Layer("d", kernel, bias, "linear")], full)
    new = W.encode([W.Layer("d", kernel, bias, "linear")], half)
    assert len(old) == 10 + 2 + 7 + 19 + 12 + 2 + 2 + 16 and len(new) == len(old) - 8
    assert W.size_report(new).by_layer()["d"]["bias"] == 8
    assert old[27] & 128 == 0 and new[27] & 128  # flag bit 7 of the layer's flags byte (after 10 + 2 + 7 + 8)
    np.testing.assert_array_equal(W.decode_layers(old)[0].bias, bias)  # float32 as before
    np.testing.assert_array_equal(W.decode_layers(new)[0].bias, bias.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(W.decode_layers(new)[0].kernel, kernel)
    with pytest.raises(ValueError, match="65504"):
        W.encode([W.Layer("d", kernel, bias * 2, "linear")], half)


SCHEMES = [
    W.Scheme(),
    W.Scheme(sparse=True),
    W.Scheme(sparse=True, index_bits=3, values="codebook", clusters=16, huffman=True),
    W.Scheme(values="codebook", clusters=8),
    W.Scheme(values="linear", bits=8),
    W.Scheme(values="linear", bits=4, symmetric=False, per_channel=True, huffman=True),
    W.Scheme(sparse=True, values="linear", bits=6, per_channel=True),
    W.Scheme(sparse=True, values="codebook", clusters=7, huffman=True, half_bias=True),
]


@pytest.mark.parametrize("scheme", SCHEMES, ids=range(len(SCHEMES)))
def test_decoded_model_equals_compressed_model(trained, mnist, scheme):
    model = _copy(trained)
    W.prune(model, 0.9)
    blob = W.encode(model, scheme)
    W.apply_scheme(model, scheme)
    decoded = W.decode(blob)
    x = mnist[2][:300]
    np.testing.assert_allclose(decoded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    report = W.size_report(blob)
    assert sum(report.by_part().values()) == len(blob)


def test_sparse_equals_dense_and_pipeline_is_exact(trained, mnist):
    model = _copy(trained)
    masks = W.prune(model, 0.9)
    W.cluster(model, 15, masks)
    dense = W.decode_layers(W.encode(model))
    full = W.Scheme(sparse=True, values="codebook", clusters=15, huffman=True)
    blob = W.encode(model, full)
    for a, b in zip(dense, W.decode_layers(blob), strict=True):
        np.testing.assert_array_equal(a.kernel, b.kernel)  # already shared: storing it loses nothing
    assert len(blob) * 20 < len(W.encode(trained))
    x = mnist[2][:300]
    np.testing.assert_allclose(W.decode(blob).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_codec_errors(trained):
    import keras

    with pytest.raises(ValueError, match="Dense layers only"):
        W.encode(keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="no Dense layers"):
        W.encode([])
    with pytest.raises(ValueError, match="0 weights"):
        W.encode([W.Layer("e", np.zeros((0, 3)), None)])
    with pytest.raises(ValueError, match="clusters must be"):
        W.Scheme(values="codebook", clusters=0)
    with pytest.raises(ValueError, match="LKW1"):
        W.decode(b"nope" + W.encode(trained)[4:])
    with pytest.raises(ValueError, match="truncated"):
        W.size_report(W.encode(trained)[:-3])


# --- low rank, distillation, reference engines -------------------------------------------------------------------


def test_low_rank_full_rank_reproduces_w():
    w = np.random.default_rng(0).normal(size=(12, 5))
    a, b = W.svd_factors(w, rank=5)
    np.testing.assert_allclose(a @ b, w, atol=1e-5)
    a1, b1 = W.svd_factors(w, rank=1)
    u, s, vt = np.linalg.svd(w)
    np.testing.assert_allclose(a1 @ b1, s[0] * np.outer(u[:, 0], vt[0]), atol=1e-5)  # Eckart-Young rank 1
    # energies 9, 4, 1 of 14
    assert W.rank_for_energy([3.0, 2.0, 1.0], 9 / 14) == 1 and W.rank_for_energy([3.0, 2.0, 1.0], 13 / 14) == 2
    with pytest.raises(ValueError, match=r"1\.\.5"):
        W.svd_factors(w, rank=6)


def test_low_rank_model(trained, mnist):
    x = mnist[2][:200]
    full = W.low_rank(trained, rank={"dense_1": 100, "dense_2": 100}, only_if_smaller=False)
    np.testing.assert_allclose(full.predict(x, verbose=0), trained.predict(x, verbose=0), atol=1e-4)
    small = W.low_rank(trained, rank=16)
    assert [layer.name for layer in small.layers][:2] == ["dense_1_u", "dense_1_v"]
    assert small.count_params() < trained.count_params() / 3


def test_distilled_student_beats_a_random_one(trained, mnist):
    import keras

    x, y, xt, yt = mnist
    student = W.student_mlp(16, seed=1)
    untrained = keras.losses.SparseCategoricalCrossentropy()(yt, student.predict(xt, verbose=0))
    losses = W.distill(trained, student, x[:2000], y[:2000], epochs=2)
    trained_loss = keras.losses.SparseCategoricalCrossentropy()(yt, student.predict(xt, verbose=0))
    assert losses[1] < losses[0]
    assert float(trained_loss) < float(untrained)


def test_int8_agrees_with_keras_and_tflite(trained, mnist):
    xt, yt = mnist[2], mnist[3]
    blob = W.encode(trained, W.Scheme(values="linear", bits=8, per_channel=True))
    ours = W.decode(blob).evaluate(xt, yt, verbose=0)[1]
    keras_acc = W.keras_int8(trained).evaluate(xt, yt, verbose=0)[1]
    tflite = W.tflite_int8(trained)
    tflite_acc = W.tflite_evaluate(tflite, xt, yt)
    assert abs(ours - keras_acc) <= 0.005 and abs(ours - tflite_acc) <= 0.005
    assert W.size_report(blob).ratio == pytest.approx(len(W.encode(trained)) / len(blob), rel=0.01)
    assert len(blob) < len(tflite)  # no flatbuffer graph to carry
