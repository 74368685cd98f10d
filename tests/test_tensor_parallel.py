"""labkit.tensor_parallel: every split equals one device (and Keras), holds what a hand count says, fails clearly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import comm
from labkit.parallel import tensor as tp


def dense(n_in, n_out, activation="relu", seed=0, name="dense"):
    rng = np.random.default_rng(seed)
    kernel = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    return tp.Dense(kernel, (rng.normal(size=n_out) * 0.1).astype(np.float32), activation, name)


def article_layers(seed=0):
    """The article's shapes in NumPy: 784 → 100 (linear) → 100 (ReLU) → 10 (softmax)."""
    return [
        dense(784, 100, "linear", seed, "dense_1"),
        dense(100, 100, "relu", seed + 1, "dense_2"),
        dense(100, 10, "softmax", seed + 2, "softmax"),
    ]


def run_split(x, layers, p, split):
    run = comm.run(lambda c: tp.tensor_parallel_forward(x, tp.shard_model(layers, c.size, c.rank, split), c), p)
    return run


@pytest.mark.parametrize("split", tp.SPLITS)
@pytest.mark.parametrize("p", range(1, 9))
def test_every_split_equals_one_device_on_the_articles_shapes(split, p):
    layers = article_layers()
    x = np.random.default_rng(p).random((13, 784), dtype=np.float32)  # 13 rows, 100 and 10 units: rarely divisible
    run = run_split(x, layers, p, split)
    reference = tp.forward(x, layers)
    for y in run.values:  # every rank ends with the whole answer
        np.testing.assert_allclose(y, reference, atol=1e-5, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(8, 40), min_size=2, max_size=5),
    batch=st.integers(1, 9),
    p=st.integers(1, 8),
    split=st.sampled_from(tp.SPLITS),
)
def test_any_widths_and_any_p_equal_one_device(widths, batch, p, split):
    layers = [dense(a, b, "tanh", seed=i) for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))]
    x = np.random.default_rng(batch).normal(size=(batch, widths[0])).astype(np.float32)
    run = run_split(x, layers, p, split)
    np.testing.assert_allclose(run.values[p - 1], tp.forward(x, layers), atol=1e-5, rtol=0)


def test_the_articles_step_two_is_a_row_split():
    # 在每个计算节点上对模型参数子集进行加权求和: each rank's weighted sum over its rows, added up, is x W.
    layer = dense(10, 4, "linear")
    x = np.random.default_rng(1).normal(size=(3, 10)).astype(np.float32)
    partials = [x[:, tp.part(10, 3, r)] @ tp.row_shard(layer, 3, r).kernel for r in range(3)]
    np.testing.assert_allclose(sum(partials), x @ layer.kernel, atol=1e-6)
    run = comm.run(lambda c: tp.row_parallel(x[:, tp.part(10, 3, c.rank)], tp.row_shard(layer, 3, c.rank), c), 3)
    np.testing.assert_allclose(run.values[0], layer(x), atol=1e-6)


def test_megatron_needs_one_all_reduce_per_block_and_the_simple_version_agrees():
    first, second = dense(12, 24, "relu", 0), dense(24, 12, "linear", 1)
    x = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    real = run_split(x, [first, second], 4, "megatron")
    simple = comm.run(lambda c: tp.simple_megatron_mlp(x, first, second, c), 4)
    reference = second(first(x))
    for y in real.values + simple.values:
        np.testing.assert_allclose(y, reference, atol=1e-5)
    assert {m.label.split()[0] for m in real.trace} == {"reduce-scatter", "all-gather"}  # one ring all-reduce
    assert len(real.trace) == 2 * (4 - 1) * 4  # its 2(p − 1) steps, on each of the 4 ranks
    assert tp.collectives_per_forward([first, second], "megatron") == {"all-gather": 0, "all-reduce": 1}
    assert tp.collectives_per_forward([first, second], "column") == {"all-gather": 2, "all-reduce": 0}
    assert tp.collectives_per_forward(article_layers(), "megatron") == {"all-gather": 1, "all-reduce": 1}


def test_softmax_waits_for_the_whole_row():
    layer = dense(6, 9, "softmax")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    run = comm.run(lambda c: tp.column_parallel(x, tp.column_shard(layer, c.size, c.rank), c), 3)
    np.testing.assert_allclose(run.values[1].sum(axis=1), 1.0, atol=1e-6)  # normalised over all 9, not per shard
    np.testing.assert_allclose(run.values[1], layer(x), atol=1e-6)


def test_memory_per_rank_matches_a_hand_count():
    layers = article_layers()
    # megatron, p = 4: dense_1 columns 0:25 (784·25 + 25), dense_2 rows 0:25 (25·100 + 100 bias, whole),
    # softmax columns 0:3 of 10 (100·3 + 3) on rank 0; ranks 2 and 3 get 2 of the 10 softmax columns.
    rank0 = (784 * 25 + 25) + (25 * 100 + 100) + (100 * 3 + 3)
    rank3 = (784 * 25 + 25) + (25 * 100 + 100) + (100 * 2 + 2)
    assert tp.shard_bytes(layers, 4, "megatron") == [4 * rank0, 4 * rank0, 4 * rank3, 4 * rank3]
    # column, p = 3: 100 → 34, 33, 33 and 10 → 4, 3, 3
    assert tp.shard_bytes(layers, 3, "column")[0] == 4 * ((784 * 34 + 34) + (100 * 34 + 34) + (100 * 4 + 4))
    # row, p = 3: 784 → 262, 261, 261 rows; 100 → 34, 33, 33; every rank keeps each whole bias
    assert tp.shard_bytes(layers, 3, "row")[0] == 4 * ((262 * 100 + 100) + (34 * 100 + 100) + (34 * 10 + 10))
    whole = 4 * 89_610
    assert sum(tp.shard_bytes(layers, 5, "column")) == whole  # a column split stores every parameter once
    assert sum(tp.shard_bytes(layers, 5, "row")) == whole + 4 * (5 - 1) * (100 + 100 + 10)  # biases repeated


def test_impossible_splits_raise_clear_errors():
    layers = article_layers()
    with pytest.raises(ValueError, match="cannot split the 10 output columns of softmax over 11 ranks.*p <= 10"):
        tp.shard_model(layers, 11, 0, "column")
    with pytest.raises(ValueError, match="cannot split the 3 input rows"):
        tp.row_shard(dense(3, 5), 4, 0)
    with pytest.raises(ValueError, match="ends in softmax.*cannot be applied on a column shard"):
        tp.shard_model([dense(4, 6, "softmax"), dense(6, 2)], 2, 0, "megatron")
    with pytest.raises(ValueError, match="unknown split 'diagonal'"):
        tp.shard_model(layers, 2, 0, "diagonal")
    with pytest.raises(ValueError, match="activation 'selu' is not supported"):
        dense(3, 3, "selu")
    with pytest.raises(ValueError, match="p must be a whole number"):
        tp.column_shard(layers[0], 0, 0)


def test_the_keras_model_is_the_numpy_model_and_splits_equal_it():
    pytest.importorskip("tensorflow")
    from labkit import models

    model = models.article_mlp(seed=3)
    layers = tp.from_keras(model)
    assert [(layer.name, layer.activation, layer.kernel.shape) for layer in layers] == [
        ("dense_1", "linear", (784, 100)),
        ("dense_2", "relu", (100, 100)),
        ("softmax", "softmax", (100, 10)),
    ]
    x = np.random.default_rng(0).random((32, 784), dtype=np.float32)
    keras_out = model.predict(x, verbose=0)
    np.testing.assert_allclose(tp.forward(x, layers), keras_out, atol=1e-5)
    for split in tp.SPLITS:
        np.testing.assert_allclose(run_split(x, layers, 3, split).values[0], keras_out, atol=1e-5)


def test_layers_that_are_not_dense_cannot_be_split():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()])
    with pytest.raises(TypeError, match="is a Conv2D: labkit splits Dense layers only"):
        tp.from_keras(model)


def test_random_article_layers_have_the_articles_shapes_and_answer_with_probabilities():
    layers = tp.random_article_layers(seed=3)
    assert [(d.n_in, d.n_out, d.activation) for d in layers] == [
        (784, 100, "linear"),
        (100, 100, "relu"),
        (100, 10, "softmax"),
    ]
    assert sum(d.kernel.size + d.bias.size for d in layers) == 89_610  # the article's MLP, counted in chapter 1
    out = tp.forward(np.random.default_rng(0).random((5, 784), dtype=np.float32), layers)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.array_equal(layers[0].kernel, tp.random_article_layers(seed=4)[0].kernel)
