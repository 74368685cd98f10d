"""Tensor-parallel Dense layers for inference: split by columns, by rows, and Megatron's pairing of the two.

A Dense layer computes y = act(x W + b), W of shape (n_in, n_out). Two ways to spread W over p ranks:

- **column split**: rank r holds the columns J_r of W (and b_J); it computes its own outputs y[:, J_r] from the
  whole x, and an **all-gather** joins them. An elementwise activation is applied on the shard; a softmax needs a
  whole row, so it waits for the gather.
- **row split**: rank r holds the rows I_r of W; it computes the partial product x[:, I_r] W[I_r, :], the *weighted
  sum over its subset of the parameters* (the article's step 2), and an **all-reduce** adds the p partials.

Megatron-LM (Shoeybi et al. 2019, "Megatron-LM: Training Multi-Billion Parameter Language Models Using Model
Parallelism") pairs them: the first layer of a block split by columns, its activation applied on the shard, the
second layer split by rows along the same J_r, so the shard flows straight in and the block needs **one**
all-reduce. Every function here is NumPy only (no TensorFlow), so ranks on every transport can run it, and the
output equals `forward` on one device. ``comm.compute`` models each matmul's time on ``"sim"`` (a `Device`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from labkit import collectives
from labkit.comm import Comm
from labkit.i18n import tr
from labkit.split import part


def softmax(z: np.ndarray) -> np.ndarray:
    """exp(z) / Σ exp(z) along the last axis (shifted by the row maximum, so it never overflows)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "softmax": softmax,
}
ELEMENTWISE = ("linear", "relu", "sigmoid", "tanh")  # each output depends on its own input only; softmax does not
SPLITS = ("column", "row", "megatron")


@dataclass(frozen=True)
class Device:
    """What one rank computes at: a layer call takes ``overhead + FLOPs / flops`` seconds (the model on ``"sim"``)."""

    flops: float = 1e11  # FLOP/s: one core of the kit's 2-core test machine multiplies float32 at ~100 GFLOP/s
    overhead: float = 2e-6  # seconds a NumPy layer call costs at any size (measured 1-4 µs on that machine)

    def time(self, flops: float, calls: int = 1) -> float:
        """Seconds for ``calls`` layer calls that do ``flops`` floating-point operations in all."""
        return calls * self.overhead + flops / self.flops


DEFAULT_DEVICE = Device()


@dataclass(frozen=True)
class Dense:
    """A Dense layer in NumPy: y = act(x @ kernel + bias), kernel (n_in, n_out), bias (n_out,)."""

    kernel: np.ndarray
    bias: np.ndarray
    activation: str = "linear"
    name: str = "dense"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{self.name}: activation {self.activation!r} is not supported: use {list(ACTIVATIONS)}")
        if np.ndim(self.kernel) != 2 or np.shape(self.bias) != (np.shape(self.kernel)[1],):
            raise ValueError(
                f"{self.name}: kernel must be (n_in, n_out) and bias (n_out,), got {np.shape(self.kernel)} and "
                f"{np.shape(self.bias)}"
            )

    @property
    def n_in(self) -> int:
        return self.kernel.shape[0]

    @property
    def n_out(self) -> int:
        return self.kernel.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of this layer's parameters (kernel and bias)."""
        return self.kernel.nbytes + self.bias.nbytes

    def flops(self, batch: int) -> int:
        """Multiply-adds of x @ kernel for ``batch`` rows, counted as 2 FLOPs each."""
        return 2 * batch * self.n_in * self.n_out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ACTIVATIONS[self.activation](x @ self.kernel + self.bias)


def from_keras(model: Any) -> list[Dense]:
    """The model's Dense layers as NumPy `Dense` (kernel, bias, activation); any other layer raises TypeError.

    Duck-typed: this module never imports TensorFlow, so its output can go to ranks that must not load it.
    """
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind != "Dense":
            raise TypeError(
                tr(
                    "layer {name!r} is a {kind}: labkit splits Dense layers only (a convolution would be split by "
                    "its output channels, the same idea, not written here); remove it or serve the model whole",
                    name=layer.name,
                    kind=kind,
                )
            )
        config = layer.get_config()
        weights = [np.asarray(w) for w in layer.get_weights()]
        kernel = weights[0]
        bias = weights[1] if config.get("use_bias", True) else np.zeros(kernel.shape[1], kernel.dtype)
        layers.append(Dense(kernel, bias, config.get("activation") or "linear", layer.name))
    return layers


def forward(x: np.ndarray, layers: list[Dense]) -> np.ndarray:
    """The model on one device: every layer in turn (the reference every split is checked against)."""
    for layer in layers:
        x = layer(x)
    return x


def check_split(width: int, p: int, what: str) -> None:
    """Raise a ValueError that names the fix unless ``width`` units can be split over p ranks (p ≤ width)."""
    if not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"p must be a whole number >= 1, got {p!r}")
    if p > width:
        raise ValueError(
            tr(
                "cannot split {what} over {p} ranks: a rank would hold none of them; use p <= {width}",
                what=what,
                p=p,
                width=width,
            )
        )


def column_shard(layer: Dense, p: int, rank: int) -> Dense:
    """Rank ``rank``'s columns J of the layer: kernel[:, J] and bias[J] (np.array_split's split of n_out)."""
    check_split(layer.n_out, p, tr("the {n} output columns of {name}", n=layer.n_out, name=layer.name))
    cols = part(layer.n_out, p, rank)
    name = f"{layer.name}[:, {cols.start}:{cols.stop}]"
    return Dense(layer.kernel[:, cols].copy(), layer.bias[cols].copy(), layer.activation, name)


def row_shard(layer: Dense, p: int, rank: int) -> Dense:
    """Rank ``rank``'s rows I of the layer: kernel[I, :]; the bias is kept whole (added once, after the sum)."""
    check_split(layer.n_in, p, tr("the {n} input rows of {name}", n=layer.n_in, name=layer.name))
    rows = part(layer.n_in, p, rank)
    name = f"{layer.name}[{rows.start}:{rows.stop}, :]"
    return Dense(layer.kernel[rows].copy(), layer.bias.copy(), layer.activation, name)


def _matmul(x: np.ndarray, shard: Dense, comm: Comm, device: Device) -> np.ndarray:
    comm.compute(device.time(shard.flops(len(x))), label=shard.name)  # models the time on sim; no-op elsewhere
    return x @ shard.kernel


def column_parallel(x: np.ndarray, shard: Dense, comm: Comm, device: Device = DEFAULT_DEVICE) -> np.ndarray:
    """y = act(x W + b), W split by columns: this rank's outputs, then an all-gather joins them in rank order."""
    z = _matmul(x, shard, comm, device) + shard.bias
    local = shard.activation in ELEMENTWISE
    if local:
        z = ACTIVATIONS[shard.activation](z)
    # all-gather joins pieces along axis 0, so the columns travel as rows of the transpose
    y = np.ascontiguousarray(collectives.allgather(np.ascontiguousarray(z.T), comm).T)
    return y if local else ACTIVATIONS[shard.activation](y)  # softmax needs whole rows: after the gather


def row_parallel(
    x_part: np.ndarray, shard: Dense, comm: Comm, device: Device = DEFAULT_DEVICE, algorithm: str = "ring"
) -> np.ndarray:
    """y = act(x W + b), W split by rows: x[:, I] W[I, :] on each rank (the weighted sum over its parameter
    subset), an all-reduce adds the p partial products, then the bias and the activation."""
    partial = _matmul(x_part, shard, comm, device)
    return ACTIVATIONS[shard.activation](collectives.allreduce(partial, comm, algorithm=algorithm) + shard.bias)


class Piece(NamedTuple):
    """One layer as a rank holds it: its shard and how it runs (column, row, pair-column or pair-row)."""

    how: str
    shard: Dense


def shard_model(layers: list[Dense], p: int, rank: int, split: str = "megatron") -> list[Piece]:
    """This rank's pieces of every layer for ``split``: "column" (every layer by columns, all-gathers), "row"
    (every layer by rows, all-reduces) or "megatron" (layers in pairs, column then row: one all-reduce a pair; an
    odd last layer is split by columns). Raises ValueError for a split that cannot be made, on every rank alike."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    if split == "column":
        return [Piece("column", column_shard(layer, p, rank)) for layer in layers]
    if split == "row":
        return [Piece("row", row_shard(layer, p, rank)) for layer in layers]
    pieces = []
    for i in range(0, len(layers) - 1, 2):
        first, second = layers[i], layers[i + 1]
        if first.activation not in ELEMENTWISE:
            raise ValueError(
                tr(
                    "{first} ends in {activation}, which needs a whole row of outputs: it cannot be applied on a "
                    "column shard, so {first} and {second} cannot be a Megatron pair; use split='column'",
                    first=first.name,
                    activation=first.activation,
                    second=second.name,
                )
            )
        pieces += [Piece("pair-column", column_shard(first, p, rank)), Piece("pair-row", row_shard(second, p, rank))]
    if len(layers) % 2:
        pieces.append(Piece("column", column_shard(layers[-1], p, rank)))
    return pieces


def tensor_parallel_forward(
    x: np.ndarray, pieces: list[Piece], comm: Comm, device: Device = DEFAULT_DEVICE, algorithm: str = "ring"
) -> np.ndarray:
    """The model's output, on every rank, from this rank's pieces (`shard_model`) and the whole input x."""
    for how, shard in pieces:
        if how == "column":
            x = column_parallel(x, shard, comm, device)
        elif how == "row":
            x = row_parallel(x[:, part(x.shape[1], comm.size, comm.rank)], shard, comm, device, algorithm)
        elif how == "pair-column":  # keep the shard: the next layer's rows are exactly these columns
            x = ACTIVATIONS[shard.activation](_matmul(x, shard, comm, device) + shard.bias)
        else:
            x = row_parallel(x, shard, comm, device, algorithm)
    return x


def simple_megatron_mlp(x: np.ndarray, first: Dense, second: Dense, comm: Comm) -> np.ndarray:
    """One Megatron MLP block, simple teaching version (each rank slices whole layers it holds): one all-reduce."""
    cols = part(first.n_out, comm.size, comm.rank)
    h = ACTIVATIONS[first.activation](x @ first.kernel[:, cols] + first.bias[cols])  # on the shard: elementwise
    return ACTIVATIONS[second.activation](collectives.allreduce(h @ second.kernel[cols], comm) + second.bias)


def shard_bytes(layers: list[Dense], p: int, split: str = "megatron") -> list[int]:
    """Bytes of parameters each rank holds under ``split`` (its shards' kernels and biases), rank 0 first."""
    return [sum(piece.shard.nbytes for piece in shard_model(layers, p, r, split)) for r in range(p)]


def collectives_per_forward(layers: list[Dense], split: str = "megatron") -> dict[str, int]:
    """How many all-gathers and all-reduces one forward pass makes under ``split``."""
    hows = [piece.how for piece in shard_model(layers, 1, 0, split)]
    return {"all-gather": hows.count("column"), "all-reduce": hows.count("row") + hows.count("pair-row")}


def random_article_layers(seed: int = 0) -> list[Dense]:
    """The article's MLP, 784 → 100 → 100 → 10 (linear, ReLU, softmax), with random weights (scaled 1/√fan-in) and
    biases: the shapes and costs of the real model where a trained one is not needed (tests, quick runs)."""
    rng = np.random.default_rng(seed)
    shapes = [(784, 100, "linear"), (100, 100, "relu"), (100, 10, "softmax")]
    return [
        Dense(
            (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
            (rng.normal(size=b) * 0.1).astype(np.float32),
            act,
            f"layer_{i}",
        )
        for i, (a, b, act) in enumerate(shapes)
    ]
