"""The article's model, a Keras 3 MLP on flattened MNIST, and the helpers to train and time it.

The article (section 3) builds::

    keras.Sequential([
        keras.layers.Dense(100, input_dim=784),
        keras.layers.Dense(100, activation='relu'),
        keras.layers.Dense(10, activation='softmax'),
    ])

`article_mlp` builds exactly that. Its first layer has **no activation** (Keras's default is linear), so the first
two layers compose into one affine map followed by a ReLU: their 88,600 parameters compute nothing that a single
``Dense(100, activation='relu')`` (78,500) could not. We keep the article's model by default, because the kit
runs what the article wrote; ``first_activation="relu"`` gives the network it probably meant.

Inputs are flat vectors of 784 pixels, as in the article's ``input_dim=784``: `flatten` turns ``labkit.data``'s
(n, 28, 28) images into (n, 784) once, outside the model, so the model is the article's and the reshaping is
visible in the notebook. Importing this module imports TensorFlow (``import labkit`` does not).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from labkit import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow, whose start-up messages import_tensorflow keeps out of notebooks)

INPUTS = 784  # 28 × 28 pixels, flattened
HIDDEN = 100
CLASSES = 10


def flatten(x: np.ndarray) -> np.ndarray:
    """Images (n, 28, 28) → float32 rows (n, 784), the input the article's ``input_dim=784`` expects."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != INPUTS:
        raise ValueError(f"expected images of 784 pixels each, shape (n, 28, 28) or (n, 784); got {x.shape}")
    return x.reshape(len(x), INPUTS)


def article_mlp(seed: int = 0, first_activation: str | None = None) -> keras.Sequential:
    """The article's MLP 784 → 100 → 100 (ReLU) → 10 (softmax); 89,610 parameters.

    ``first_activation=None`` is the article's linear first layer; ``"relu"`` makes every hidden layer nonlinear.
    Each layer gets its own seeded Glorot initialiser, so the same seed gives the same weights whatever else ran.
    """
    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 10 + i)  # noqa: E731  (a seed per layer)
    return keras.Sequential(
        [
            keras.Input(shape=(INPUTS,)),  # Keras 3 spelling of the article's input_dim=784
            keras.layers.Dense(HIDDEN, activation=first_activation, kernel_initializer=init(0), name="dense_1"),
            keras.layers.Dense(HIDDEN, activation="relu", kernel_initializer=init(1), name="dense_2"),
            keras.layers.Dense(CLASSES, activation="softmax", kernel_initializer=init(2), name="softmax"),
        ],
        name="article_mlp",
    )


def tiny_mlp(seed: int = 0, hidden: int = 10) -> keras.Sequential:
    """784 → ``hidden`` (ReLU) → 10 (softmax): 7,960 parameters at hidden = 10, small enough for fast tests.

    7,960 divides by 8, so ring chunks split evenly on up to 8 workers and simulated times equal the closed forms.
    """
    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 10 + i)  # noqa: E731  (a seed per layer)
    return keras.Sequential(
        [
            keras.Input((INPUTS,)),
            keras.layers.Dense(hidden, activation="relu", kernel_initializer=init(0)),
            keras.layers.Dense(CLASSES, activation="softmax", kernel_initializer=init(1)),
        ],
        name="tiny_mlp",
    )


def compile_article(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Compile with the article's choices: Adam (Keras's default rate, 1e-3) and cross-entropy, plus accuracy.

    The article used ``CategoricalCrossentropy`` on one-hot labels; ``labkit.data`` gives integer labels, so we use
    ``SparseCategoricalCrossentropy``, which computes the same loss from the integers without the one-hot copy.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


def param_count(model: keras.Model) -> int:
    """Number of weights and biases in the model (trainable and not)."""
    return int(sum(np.prod(w.shape) for w in model.weights))


def layer_table(model: keras.Model) -> list[tuple[str, str, int]]:
    """(layer name, 'inputs → outputs', parameters) for each layer with a weight matrix (Dense), for printing."""
    rows = []
    for layer in model.layers:
        if not hasattr(layer, "kernel"):
            continue
        kernel = layer.kernel.shape
        rows.append((layer.name, f"{kernel[0]} → {kernel[1]}", param_count(layer)))
    return rows


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch of ``fit`` (the first one includes building the training graph)."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


@dataclass
class TimedFit:
    """What `fit_timed` measured: Keras's per-epoch history (loss, accuracy, …) and seconds per epoch."""

    history: dict[str, list[float]]
    epoch_seconds: list[float]


def fit_timed(model: keras.Model, x, y, epochs: int = 1, batch_size: int = 64, **fit_kwargs) -> TimedFit:
    """``model.fit`` quietly, timing every epoch; extra keyword arguments go to ``fit``."""
    timer = EpochTimer()
    callbacks = list(fit_kwargs.pop("callbacks", [])) + [timer]
    fit_kwargs.setdefault("verbose", 0)
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=callbacks, **fit_kwargs)
    return TimedFit({k: [float(v) for v in vs] for k, vs in history.history.items()}, timer.seconds)


def time_per_epoch(model: keras.Model, x, y, epochs: int = 1, batch_size: int = 64, **fit_kwargs) -> list[float]:
    """Seconds of each of ``epochs`` epochs of training ``model`` on (x, y): one number per epoch."""
    return fit_timed(model, x, y, epochs, batch_size, **fit_kwargs).epoch_seconds
