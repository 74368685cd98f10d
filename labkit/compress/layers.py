"""A Keras model of Dense layers as plain arrays (`Layer`): what the codec stores and the compressors work on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Layer:
    """One Dense layer as arrays: y = activation(x @ kernel + bias)."""

    name: str
    kernel: np.ndarray
    bias: np.ndarray | None
    activation: str = "linear"


def dense_layers(model) -> list:
    """The Dense layers of a Keras model, in order; any other layer with weights is an error naming the fix."""
    out = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            out.append(layer)
        elif kind not in ("InputLayer", "Dropout"):
            raise ValueError(
                f"layer {layer.name!r} is a {kind}: labkit's codec compresses models made of Dense layers only "
                "(flatten inputs outside the model, as labkit.models.flatten does)"
            )
    return out


def layers_of(model) -> list[Layer]:
    """A Keras model's Dense layers as `Layer` arrays (a list of `Layer` is returned as it is)."""
    if isinstance(model, list | tuple):
        return list(model)
    return [
        Layer(d.name, np.asarray(d.kernel), np.asarray(d.bias) if d.use_bias else None, d.activation.__name__)
        for d in dense_layers(model)
    ]
