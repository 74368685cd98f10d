"""Weight compression of Dense layers: magnitude pruning, k-means weight sharing, linear quantisation.

The three stages of Deep Compression (Han, Mao & Dally 2016, "Deep Compression: Compressing Deep Neural Networks
with Pruning, Trained Quantization and Huffman Coding"), on Keras 3 models made of Dense layers:

- **pruning** (Han et al. 2015, "Learning both Weights and Connections"): zero the smallest |w| of each kernel
  (or below one global threshold) to a target sparsity, then fine-tune with the zeros held by a mask re-applied
  after every optimizer step. Biases are not pruned: they are 1 % of the weights and every one of them matters.
- **weight sharing**: k-means on each kernel's surviving weights, initialised linearly over [min, max] (the
  paper's best initialisation, because it keeps the rare large weights); each weight becomes a log2(k)-bit index.
- **linear quantisation**: w ≈ scale·(q − zero_point), q an integer of b bits; symmetric or asymmetric, one scale
  per tensor or per output channel. Every element is within scale/2 of its original.

Huffman coding and the stored format live in `labkit.compress.huffman` and `labkit.compress.codec`; low rank and
distillation in `labkit.compress.smaller`; all are re-exported here. The reference engines are Keras 3's own
``model.quantize("int8")`` and the TFLite converter (`keras_int8`, `tflite_int8`). The TF Model Optimization
Toolkit is not one of them: it supports only tf.keras 2, not Keras 3. TensorFlow is imported only by the functions
that need Keras, so the NumPy parts load without it.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from labkit import _native_stderr_silenced
from labkit.compress.codec import *  # noqa: F403
from labkit.compress.codec import __all__ as _codec_all
from labkit.compress.codec import dense_layers
from labkit.compress.huffman import *  # noqa: F403
from labkit.compress.huffman import __all__ as _huffman_all
from labkit.compress.smaller import *  # noqa: F403
from labkit.compress.smaller import __all__ as _smaller_all

__all__ = [
    "magnitude_masks",
    "prune",
    "fine_tune",
    "prune_and_fine_tune",
    "sparsity_at",
    "gradual_prune",
    "train_codebook",
    "kmeans_1d",
    "cluster",
    "Quantized",
    "quantize",
    "keras_int8",
    "keras_int8_bytes",
    "tflite_int8",
    "tflite_evaluate",
    *_codec_all,
    *_smaller_all,
    *_huffman_all,
]


def _kernels(model) -> dict[str, np.ndarray]:
    return {layer.name: np.asarray(layer.kernel) for layer in dense_layers(model)}


def _check_sparsity(s: float) -> float:
    if not 0 <= s < 1:
        raise ValueError(f"sparsity is the fraction of weights removed and must lie in [0, 1), got {s}")
    return float(s)


def magnitude_masks(kernels: dict[str, np.ndarray], sparsity: float | dict, scope: str = "layer") -> dict:
    """Masks (1 = keep) removing floor(s·n) weights of smallest |w|: per kernel, or below one global threshold.

    ``sparsity`` is one fraction or {layer name: fraction} (``scope="layer"`` only); ties are broken by position.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' (a threshold per layer) or 'global' (one threshold), got {scope!r}")
    for name, k in kernels.items():
        if np.size(k) == 0:
            raise ValueError(f"layer {name!r} has no weights to prune: leave it out")
    if scope == "global":
        if isinstance(sparsity, dict):
            raise ValueError("a global threshold takes one sparsity; use scope='layer' for one per layer")
        flat = np.concatenate([np.abs(k).ravel() for k in kernels.values()])
        order = np.argsort(flat, kind="stable")
        keep = np.ones(flat.size, bool)
        keep[order[: int(np.floor(_check_sparsity(sparsity) * flat.size))]] = False
        splits = np.cumsum([np.size(k) for k in kernels.values()])[:-1]
        parts = np.split(keep, splits)
        return {n: part.reshape(np.shape(k)) for (n, k), part in zip(kernels.items(), parts, strict=True)}
    masks = {}
    for name, k in kernels.items():
        s = _check_sparsity(sparsity.get(name, 0.0) if isinstance(sparsity, dict) else sparsity)
        order = np.argsort(np.abs(k).ravel(), kind="stable")
        keep = np.ones(np.size(k), bool)
        keep[order[: int(np.floor(s * np.size(k)))]] = False
        masks[name] = keep.reshape(np.shape(k))
    return masks


def prune(model, sparsity: float | dict, scope: str = "layer") -> dict[str, np.ndarray]:
    """Zero the smallest-magnitude kernel weights of every Dense layer in place; returns the masks (biases kept)."""
    masks = magnitude_masks(_kernels(model), sparsity, scope)
    for layer in dense_layers(model):
        layer.kernel.assign(np.asarray(layer.kernel) * masks[layer.name])
    return masks


@contextlib.contextmanager
def _zeros_held(model, masks: dict):
    """Within the block every masked kernel is multiplied by its mask after each optimizer step, inside the
    compiled train step (a Keras variable constraint; the masks are variables the caller may reassign)."""
    import keras

    held = {}
    for layer in dense_layers(model):
        if layer.name in masks:
            held[layer.name] = keras.Variable(np.asarray(masks[layer.name], np.float32), trainable=False)
            layer.kernel.assign(np.asarray(layer.kernel) * masks[layer.name])
    old = {layer.name: layer.kernel.constraint for layer in dense_layers(model)}
    for layer in dense_layers(model):
        if layer.name in held:
            layer.kernel.constraint = lambda w, m=held[layer.name]: w * m
    model.train_function = None  # retrace: the constraint is part of the compiled step
    try:
        yield held
    finally:
        for layer in dense_layers(model):
            layer.kernel.constraint = old[layer.name]
        model.train_function = None


def _decay(steps: int, final_learning_rate: float | None):
    """A Keras callback that lowers the optimizer's rate geometrically to ``final_learning_rate`` at the last step."""
    import keras

    class Decay(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.step, self.lr0 = 0, float(np.asarray(self.model.optimizer.learning_rate))

        def on_train_batch_begin(self, batch, logs=None):
            if final_learning_rate is not None:
                rate = self.lr0 * (final_learning_rate / self.lr0) ** (self.step / max(steps - 1, 1))
                self.model.optimizer.learning_rate = rate
            self.step += 1

    return Decay()


def _projector(masks: dict, labels: dict | None):
    """A Keras callback that, after every optimizer step, zeroes the pruned weights and (with ``labels``)
    replaces each weight by its cluster's mean: a shortcut; Han et al. 2016 train the centroids themselves
    (`train_codebook`)."""
    import keras

    class Project(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for layer in dense_layers(self.model):
                w = np.asarray(layer.kernel)
                if labels and layer.name in labels:
                    lab = labels[layer.name].ravel() + 1  # −1 (pruned) becomes cluster 0, zeroed by the mask
                    sums = np.bincount(lab, weights=w.ravel())
                    w = (sums / np.maximum(np.bincount(lab), 1))[lab].reshape(w.shape).astype(np.float32)
                if layer.name in masks:
                    w = w * masks[layer.name]
                layer.kernel.assign(w)

    return Project()


def fine_tune(
    model,
    masks: dict,
    x,
    y,
    epochs: int = 1,
    batch_size: int = 64,
    labels: dict | None = None,
    final_learning_rate: float | None = None,
):
    """Train a compiled model with the masks (and cluster labels) re-applied after every step; returns history.

    ``final_learning_rate``: the optimizer's rate decays geometrically to it by the last step (None: constant).
    """
    steps = epochs * int(np.ceil(len(x) / batch_size))
    callbacks = [_decay(steps, final_learning_rate)] if final_learning_rate is not None else []
    if labels:
        callback = _projector(masks, labels)
        callback.set_model(model)
        callback.on_train_batch_end(0)  # the constraint holds before the first step too
        return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks + [callback]).history
    with _zeros_held(model, masks):
        return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks).history


def prune_and_fine_tune(
    model, x, y, sparsity: float | dict, steps: int = 3, epochs: int = 1, scope: str = "layer", batch_size: int = 64
) -> dict:
    """Han et al. 2015's iterative pruning: ``steps`` rounds of pruning to i/steps of the target, fine-tuning after
    each (``epochs`` each); returns the final masks."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    masks = {}
    for i in range(1, steps + 1):
        target = {k: v * i / steps for k, v in sparsity.items()} if isinstance(sparsity, dict) else sparsity * i / steps
        masks = prune(model, target, scope)
        fine_tune(model, masks, x, y, epochs, batch_size)
    return masks


def sparsity_at(step: int, steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta 2017's cubic schedule: s_t = s_f + (s_i − s_f)·(1 − t/T)³ for t ≤ T, then s_f.

    Fast at first, while many redundant weights are left, and slow at the end, when every one removed hurts.
    """
    t = min(max(step, 0), steps) / max(steps, 1)
    return final + (initial - final) * (1 - t) ** 3


def gradual_prune(
    model,
    x,
    y,
    sparsity: float | dict,
    epochs: int = 1,
    frequency: int = 100,
    scope: str = "layer",
    batch_size: int = 64,
) -> dict:
    """Gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune"): train ``epochs`` while the sparsity rises
    from 0 to the target by `sparsity_at`, the masks recomputed by magnitude every ``frequency`` steps and
    re-applied after every step; returns the final masks (fine-tune at them afterwards, with a decaying rate)."""
    import keras

    if frequency < 1:
        raise ValueError(f"frequency is in optimizer steps and must be ≥ 1, got {frequency}")
    names = [layer.name for layer in dense_layers(model)]
    final = sparsity if isinstance(sparsity, dict) else ({n: sparsity for n in names} if scope == "layer" else None)
    total = epochs * int(np.ceil(len(x) / batch_size))
    ramp = max(total - frequency, 1)  # the last update reaches the target with at least `frequency` steps to spare
    masks = prune(model, 0.0 if final is None else {n: 0.0 for n in final}, scope)

    def target(step):
        if final is None:
            return sparsity_at(step, ramp, float(sparsity))
        return {n: sparsity_at(step, ramp, float(s)) for n, s in final.items()}

    class Gradual(keras.callbacks.Callback):
        step = 0

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step % frequency == 0 and self.step <= ramp + frequency:
                masks.update(magnitude_masks(_kernels(self.model), target(self.step), scope))
                for layer in dense_layers(self.model):
                    if layer.name in held:
                        held[layer.name].assign(masks[layer.name].astype(np.float32))
                        layer.kernel.assign(np.asarray(layer.kernel) * masks[layer.name])

    with _zeros_held(model, masks) as held:
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[Gradual()])
    masks.update(prune(model, target(total), scope))  # exactly the target, whatever the step count
    return masks


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
) -> list[float]:
    """Han et al. 2016's trained quantisation: the shared values (centroids) are the trained parameters.

    Each clustered kernel is W = c[labels] (0 where labels = −1); the gradient of centroid k is the sum of the
    gradients of its weights, ∂L/∂c_k = Σ_{i: label_i = k} ∂L/∂W_i (their eq. 3), and Adam updates the centroids;
    biases and unclustered kernels (kept at ``masks``) train as usual. Returns the mean loss of each epoch.
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
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build([books[layer.name] for layer in shared] + others)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def write_kernels():
        for layer in shared:
            book = tf.concat([tf.zeros(1), books[layer.name].value], 0)
            layer.kernel.assign(tf.reshape(tf.gather(book, index[layer.name]), layer.kernel.shape))
        for kernel, mask in masked:
            kernel.assign(kernel * mask)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
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


@dataclass(frozen=True)
class Quantized:
    """w ≈ scale·(q − zero_point) with q in [0, 2^bits − 1]; scale and zero_point per tensor or per channel."""

    q: np.ndarray  # int64 codes
    scale: np.ndarray  # float32, shape () or (channels,)
    zero_point: np.ndarray  # int64, same shape as scale
    bits: int
    symmetric: bool
    axis: int | None  # the channel axis of a per-channel quantisation, None for one scale per tensor

    def _b(self, a: np.ndarray) -> np.ndarray:  # a per-channel vector shaped to broadcast against q
        if self.axis is None:
            return a
        shape = [1] * self.q.ndim
        shape[self.axis] = -1
        return a.reshape(shape)

    def dequantize(self) -> np.ndarray:
        """float32 values scale·(q − zero_point)."""
        return (self._b(self.scale.astype(np.float64)) * (self.q - self._b(self.zero_point))).astype(np.float32)

    def error_bound(self) -> np.ndarray:
        """scale/2: no element is further than this from its original (per tensor or per channel)."""
        return self.scale.astype(np.float64) / 2


def quantize(w, bits: int = 8, symmetric: bool = True, per_channel: bool = False, axis: int = -1) -> Quantized:
    """Linear quantisation to ``bits`` bits (2-16). Symmetric: scale = max|w| / (2^(b−1) − 1), zero at 2^(b−1);
    asymmetric: scale = (max − min) / (2^b − 1), zero_point = round(−min / scale). Per channel along ``axis``."""
    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bits must lie in 2..16 for linear quantisation, got {bits}; use a codebook for fewer")
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0:
        raise ValueError("cannot quantise an empty tensor (0 weights): leave the layer out")
    axis = axis % w.ndim if per_channel else None
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    lo, hi = np.minimum(w.min(axis=reduce), 0), np.maximum(w.max(axis=reduce), 0)  # zero stays exact
    levels = (1 << bits) - 1
    if symmetric:
        scale = np.maximum(-lo, hi) / (levels // 2)
        zero = np.full(np.shape(scale), 1 << (bits - 1), dtype=np.int64)
    else:
        scale = (hi - lo) / levels
        zero = np.round(-lo / np.where(scale > 0, scale, 1)).astype(np.int64)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero channel: any scale is exact
    out = Quantized(np.zeros(w.shape, np.int64), scale, zero, int(bits), symmetric, axis)
    q = np.round(w / out._b(scale.astype(np.float64))) + out._b(zero)
    return Quantized(np.clip(q, 0, levels).astype(np.int64), scale, zero, int(bits), symmetric, axis)


def keras_int8(model):
    """A copy of a Keras model quantised by Keras 3 itself: ``model.quantize("int8")`` (int8 per-channel kernels,
    inputs quantised on the fly)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    with _quiet():
        copy.quantize("int8")
    copy.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return copy


def keras_int8_bytes(model) -> int:
    """Bytes of a model's weights as stored (int8 kernels, float32 scales and biases): Σ variable sizes."""
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights))


def tflite_int8(model, representative=None) -> bytes:
    """The TFLite flatbuffer of post-training quantisation (``optimizations=[Optimize.DEFAULT]``): dynamic-range
    int8 weights, or full integer with a ``representative`` array of inputs to calibrate activations."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative is not None:
        converter.representative_dataset = lambda: ([r[None]] for r in np.asarray(representative, np.float32))
    with _quiet():
        return converter.convert()


def tflite_evaluate(flatbuffer: bytes, x, y, batch_size: int = 1000) -> float:
    """Accuracy of a TFLite model run by ``tf.lite.Interpreter`` on (x, y)."""
    import tensorflow as tf

    with _quiet():
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = 0
    for start in range(0, len(x), batch_size):  # a batch at a time: the interpreter holds one input shape
        xb = np.asarray(x[start : start + batch_size], np.float32)
        interpreter.resize_tensor_input(inp["index"], xb.shape)
        with _native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate", from C++, every run
            interpreter.allocate_tensors()
            interpreter.set_tensor(inp["index"], xb)
            interpreter.invoke()
        correct += int((interpreter.get_tensor(out["index"]).argmax(1) == y[start : start + batch_size]).sum())
    return correct / len(x)


@contextlib.contextmanager
def _quiet():
    """Keep the converter's 'Saved artifact at /tmp/…' listing and Keras's per-layer warnings out of notebooks."""
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
