"""Magnitude pruning of Dense kernels (Han et al. 2015, "Learning both Weights and Connections"), in rounds or
gradually (Zhu & Gupta 2017, "To prune, or not to prune"), with the zeros held through fine-tuning.

Part of `labkit.compress.weights`, which re-exports every name here.
"""

from __future__ import annotations

import contextlib

import numpy as np

from labkit.compress.codec import dense_layers

__all__ = ["magnitude_masks", "prune", "fine_tune", "prune_and_fine_tune", "sparsity_at", "gradual_prune"]


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
            own = old[layer.name] or (lambda w: w)  # a constraint the model already had still applies, first
            layer.kernel.constraint = lambda w, m=held[layer.name], own=own: own(w) * m
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
        callbacks.append(callback)
        return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks).history
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
