"""Weight sharing: k-means clustering of each Dense kernel's surviving weights, and Han, Mao & Dally 2016's
trained quantisation of the shared values (the centroids).

Part of `labkit.compress.weights`, which re-exports every name here.
"""

from __future__ import annotations

import numpy as np

from labkit.compress.codec import dense_layers

__all__ = ["kmeans_1d", "cluster", "train_codebook"]


def train_codebook(
    model,
    labels: dict,
    x,
    y,
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 1e-4,
    masks: dict | None = None,
    seed: int = 0,
    optimizer=None,
) -> list[float]:
    """Han et al. 2016's trained quantisation: the shared values (centroids) are the trained parameters.

    Each clustered kernel is W = c[labels] (0 where labels = −1); the gradient of centroid k is the sum of the
    gradients of its weights, ∂L/∂c_k = Σ_{i: label_i = k} ∂L/∂W_i (their eq. 3), and ``optimizer`` (default
    Adam at ``learning_rate``; Han et al. used SGD) updates the centroids; biases and unclustered kernels (kept at
    ``masks``) train as usual, on the compiled loss (sparse cross-entropy if none). Batches are drawn in an order
    fixed by ``seed``. Returns the mean loss of each epoch.
    """
    import keras
    import tensorflow as tf

    shared = [layer for layer in dense_layers(model) if layer.name in labels]
    index, books = {}, {}
    for layer in shared:  # centroid k+1 = mean of its weights; slot 0 is the pruned zero and is never trained
        lab = np.asarray(labels[layer.name]).ravel() + 1
        w = np.asarray(layer.kernel).ravel()
        means = np.bincount(lab, weights=w) / np.maximum(np.bincount(lab), 1)
        index[layer.name] = tf.constant(lab, tf.int32)
        books[layer.name] = keras.Variable(means[1:].astype(np.float32), name=f"{layer.name}_codebook")
    kernels = [layer.kernel for layer in shared]
    others = [v for v in model.trainable_variables if all(v is not k for k in kernels)]
    masked = [  # pruned kernels that are not shared keep their zeros
        (layer.kernel, tf.constant(masks[layer.name], tf.float32))
        for layer in dense_layers(model)
        if masks and layer.name in masks and layer.name not in labels
    ]
    optimizer = optimizer or keras.optimizers.Adam(learning_rate)
    optimizer.build([books[layer.name] for layer in shared] + others)
    loss_fn = getattr(model, "loss", None) or keras.losses.SparseCategoricalCrossentropy()  # the compiled loss
    loss_fn = keras.losses.get(loss_fn) if isinstance(loss_fn, str) else loss_fn

    def write_kernels():
        for layer in shared:
            book = tf.concat([tf.zeros(1), books[layer.name].value], 0)
            layer.kernel.assign(tf.reshape(tf.gather(book, index[layer.name]), layer.kernel.shape))
        for kernel, mask in masked:
            kernel.assign(kernel * mask)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(yb, model(xb, training=True)))  # a string loss gives one per sample
        grad_w, grad_o = tape.gradient(loss, [kernels, others])
        grad_c = [  # Σ of the gradients per cluster; segment 0 (pruned) is dropped
            tf.math.unsorted_segment_sum(tf.reshape(g, [-1]), index[layer.name], books[layer.name].shape[0] + 1)[1:]
            for layer, g in zip(shared, grad_w, strict=True)
        ]
        optimizer.apply(grad_c + grad_o, [books[layer.name] for layer in shared] + others)
        write_kernels()
        return loss

    write_kernels()
    rng, x, y = np.random.default_rng(seed), np.asarray(x, np.float32), np.asarray(y)
    history = []
    for _ in range(epochs):
        order, losses = rng.permutation(len(x)), []
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            losses.append(float(step(tf.constant(x[batch]), tf.constant(y[batch]))))
        history.append(float(np.mean(losses)))
    return history


def _nearest(v: np.ndarray, sorted_centroids: np.ndarray) -> np.ndarray:
    return np.searchsorted((sorted_centroids[1:] + sorted_centroids[:-1]) / 2, v)


def kmeans_1d(values, k: int, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (k,) ascending, labels) of Lloyd's k-means on scalars, initialised evenly over [min, max].

    An emptied cluster moves to the value farthest from its centroid, so with k ≥ the number of distinct values
    every value ends up a centroid (exact). Deterministic.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if int(k) < 1:
        raise ValueError(f"clusters must be ≥ 1, got {k}")
    if v.size == 0:
        raise ValueError("k-means needs at least one value; this layer has no weights left to share")
    centroids, labels = np.linspace(v.min(), v.max(), int(k)), None
    for _ in range(iters):
        centroids.sort()
        new = _nearest(v, centroids)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        centroids = np.where(counts > 0, np.bincount(labels, weights=v, minlength=k) / np.maximum(counts, 1), centroids)
        for empty in np.flatnonzero(counts == 0):  # Lloyd leaves it empty for ever: reuse it where error is largest
            error = np.abs(v - centroids[labels])
            if error.max() == 0:
                break
            far = int(np.argmax(error))
            centroids[empty], labels[far] = v[far], empty
    centroids.sort()
    return centroids.astype(np.float32), _nearest(v, centroids).astype(np.int64)


def cluster(model, clusters: int | dict, masks: dict | None = None) -> dict[str, np.ndarray]:
    """Share weights in place: each Dense kernel's kept (nonzero) weights become their k-means centroid.

    Returns {layer: labels} (−1 where pruned) for `fine_tune(..., labels=...)`.
    """
    out = {}
    for layer in dense_layers(model):
        w = np.asarray(layer.kernel)
        keep = masks[layer.name] if masks and layer.name in masks else w != 0
        k = clusters.get(layer.name, 0) if isinstance(clusters, dict) else clusters
        if not k:
            continue
        labels = np.full(w.shape, -1, dtype=np.int64)
        if keep.any():
            centroids, lab = kmeans_1d(w[keep], k)
            labels[keep] = lab
            w = np.where(keep, centroids[np.maximum(labels, 0)], 0).astype(np.float32)
        layer.kernel.assign(w)
        out[layer.name] = labels
    return out
