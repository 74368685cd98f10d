"""labkit.models: the article's MLP, layer by layer against a hand count, and the training/timing helpers."""

import numpy as np
import pytest

from labkit import models

# Hand count: weights + biases of 784→100, 100→100, 100→10.
HAND_COUNT = [784 * 100 + 100, 100 * 100 + 100, 100 * 10 + 10]


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    return models.flatten(x), y


def test_architecture_is_the_articles():
    model = models.article_mlp()
    dense = model.layers
    assert [layer.units for layer in dense] == [100, 100, 10]
    assert [layer.activation.__name__ for layer in dense] == ["linear", "relu", "softmax"]  # first: no activation
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)
    assert [row[2] for row in models.layer_table(model)] == HAND_COUNT
    assert models.param_count(model) == sum(HAND_COUNT) == 89_610 == model.count_params()


def test_first_activation_option_and_seeds():
    assert models.article_mlp(first_activation="relu").layers[0].activation.__name__ == "relu"
    a, b, c = models.article_mlp(seed=3), models.article_mlp(seed=3), models.article_mlp(seed=4)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights(), strict=True))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_flatten_shapes_and_errors():
    assert models.flatten(np.zeros((3, 28, 28))).shape == (3, 784)
    assert models.flatten(np.zeros((3, 784), dtype=np.uint8)).dtype == np.float32
    with pytest.raises(ValueError, match="784 pixels"):
        models.flatten(np.zeros((3, 27, 28)))


def test_compile_and_a_tiny_fit_lowers_the_loss(tiny):
    x, y = tiny
    model = models.compile_article(models.article_mlp(seed=0))
    assert model.loss.__class__.__name__ == "SparseCategoricalCrossentropy"
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    before = model.evaluate(x, y, verbose=0)[0]
    fit = models.fit_timed(model, x, y, epochs=5, batch_size=16)
    after = model.evaluate(x, y, verbose=0)[0]
    assert after < before
    assert len(fit.history["loss"]) == 5 and fit.history["loss"][-1] < fit.history["loss"][0]


def test_time_per_epoch_gives_one_positive_number_per_epoch(tiny):
    x, y = tiny
    model = models.compile_article(models.article_mlp(seed=1))
    seconds = models.time_per_epoch(model, x, y, epochs=3, batch_size=32)
    assert len(seconds) == 3 and all(isinstance(s, float) and s > 0 for s in seconds)
