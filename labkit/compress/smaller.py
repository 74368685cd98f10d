"""Smaller models instead of smaller numbers: low-rank factorisation of Dense kernels, and knowledge distillation.

- **low rank**: W (n_in × n_out) ≈ A B with A = U_r √S_r (n_in × r) and B = √S_r V_rᵀ (r × n_out), the truncated
  SVD, which is the best rank-r approximation in the Frobenius norm (Eckart & Young 1936). One Dense layer becomes
  two (the first linear, without bias); it pays when r (n_in + n_out) < n_in n_out. The rank is given, or the
  smallest keeping a fraction ``energy`` of Σ s_i².
- **distillation** (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"): a small student
  learns from the teacher's softened outputs, loss = α·CE(y, p_s) + (1 − α)·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T));
  the T² keeps the soft term's gradients at the same scale as T changes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["svd_factors", "rank_for_energy", "low_rank", "student_mlp", "logits", "distill"]


def rank_for_energy(singular_values, energy: float) -> int:
    """The smallest r with Σ_{i<r} s_i² ≥ energy · Σ s_i²."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy is a fraction of Σ s² in (0, 1], got {energy}")
    power = np.cumsum(np.asarray(singular_values, np.float64) ** 2)
    return int(np.searchsorted(power, energy * power[-1] * (1 - 1e-12)) + 1)


def svd_factors(w, rank: int | None = None, energy: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """(A, B), A (n_in × r) and B (r × n_out) float32, with A B the best rank-r approximation of w."""
    w = np.asarray(w, np.float64)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"low rank needs a non-empty 2-D kernel (n_in, n_out), got shape {w.shape}")
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    r = rank_for_energy(s, energy) if rank is None else int(rank)
    if not 1 <= r <= len(s):
        raise ValueError(f"rank must lie in 1..{len(s)} for a {w.shape[0]}×{w.shape[1]} kernel, got {rank}")
    root = np.sqrt(s[:r])
    return (u[:, :r] * root).astype(np.float32), (root[:, None] * vt[:r]).astype(np.float32)


def low_rank(model, rank: int | dict | None = None, energy: float = 0.9, only_if_smaller: bool = True):
    """A new compiled Keras model with each Dense layer replaced by two of rank r (``rank`` an int, {layer: r}, or
    None for the energy rule); a layer is kept whole when factoring would not shrink it (``only_if_smaller``)."""
    import keras

    from labkit.compress.codec import dense_layers

    layers = dense_layers(model)
    new = keras.Sequential([keras.Input(shape=(layers[0].kernel.shape[0],))], name=f"{model.name}_low_rank")
    weights = []
    for layer in layers:
        w = np.asarray(layer.kernel)
        r = rank.get(layer.name) if isinstance(rank, dict) else rank
        skip = (isinstance(rank, dict) and r is None) or (r is not None and r > min(w.shape))  # nothing to factor
        a, b = (None, None) if skip else svd_factors(w, r, energy)
        if a is None or (only_if_smaller and a.size + b.size >= w.size):
            new.add(keras.layers.Dense(w.shape[1], layer.activation, use_bias=layer.use_bias, name=layer.name))
            weights += [w] + ([np.asarray(layer.bias)] if layer.use_bias else [])
            continue
        new.add(keras.layers.Dense(a.shape[1], use_bias=False, name=f"{layer.name}_u"))
        new.add(keras.layers.Dense(w.shape[1], layer.activation, use_bias=layer.use_bias, name=f"{layer.name}_v"))
        weights += [a, b] + ([np.asarray(layer.bias)] if layer.use_bias else [])
    new.set_weights(weights)
    new.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return new


def student_mlp(hidden: int = 32, seed: int = 0, inputs: int = 784, classes: int = 10):
    """A small MLP inputs → hidden (ReLU) → classes (softmax), seeded Glorot weights."""
    import keras

    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 10 + i)  # noqa: E731
    return keras.Sequential(
        [
            keras.Input(shape=(inputs,)),
            keras.layers.Dense(hidden, activation="relu", kernel_initializer=init(0), name="student_1"),
            keras.layers.Dense(classes, activation="softmax", kernel_initializer=init(1), name="student_out"),
        ],
        name=f"student_{hidden}",
    )


def logits(model, x):
    """The pre-softmax outputs z of a Sequential Dense model whose last layer is a softmax (x @ W + b of it)."""
    import tensorflow as tf

    h = tf.convert_to_tensor(x)
    for layer in model.layers[:-1]:
        h = layer(h)
    last = model.layers[-1]
    return tf.matmul(h, last.kernel) + (last.bias if last.use_bias else 0.0)


def distill(teacher, student, x, y, temperature: float = 4.0, alpha: float = 0.1, epochs: int = 1, **kw) -> list:
    """Train ``student`` on (x, y) and the teacher's softened outputs (Hinton et al. 2015); returns loss per epoch.

    Keyword arguments: ``batch_size`` (64), ``learning_rate`` (1e-3, Adam), ``seed`` (0, the shuffling).
    """
    import keras
    import tensorflow as tf

    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"need temperature > 0 and alpha in [0, 1], got T={temperature}, alpha={alpha}")
    batch, rng = kw.get("batch_size", 64), np.random.default_rng(kw.get("seed", 0))
    optimizer = keras.optimizers.Adam(kw.get("learning_rate", 1e-3))
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
    soft = tf.nn.softmax(logits(teacher, x) / temperature).numpy()  # the teacher is fixed: compute once
    t = tf.constant(temperature, tf.float32)

    @tf.function
    def step(xb, yb, pb):
        with tf.GradientTape() as tape:
            z = logits(student, xb)
            hard = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, z))
            log_q = tf.nn.log_softmax(z / t)
            kl = tf.reduce_mean(tf.reduce_sum(pb * (tf.math.log(tf.maximum(pb, 1e-12)) - log_q), axis=1))
            loss = alpha * hard + (1 - alpha) * t * t * kl
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables, strict=True))
        return loss

    losses = []
    for _ in range(epochs):
        order, total = rng.permutation(len(x)), 0.0
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            total += float(step(x[idx], y[idx], soft[idx])) * len(idx)
        losses.append(total / len(x))
    student.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return losses
