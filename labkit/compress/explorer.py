"""The compression trade-off: (sparsity, bits, clusters) → real bytes, decoded accuracy, gradient bytes per step.

`tradeoff` prunes a copy of a trained model's kernels by magnitude (Han et al. 2015), shares each kernel's
surviving weights with 2^bits k-means centroids (Han, Mao & Dally 2016), stores the result with `codec.encode`,
decodes those bytes and measures the decoded model's accuracy with a NumPy forward pass. Beside it, the bytes the
busiest of p workers sends per training step with a gradient compressor of comparable settings (top-k keeping
1 − sparsity of the values, or QSGD with ``bits`` bits a level), from `gradients.wire_bytes`. No fine-tuning: it
would take seconds per point; chapter 7 shows what fine-tuning recovers.
`labkit.widgets.compression_explorer` wires sliders to `tradeoff`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from labkit.compress import codec, gradients
from labkit.compress.pruning import magnitude_masks
from labkit.i18n import plot_tr, tr

__all__ = [
    "clone",
    "Point",
    "tradeoff",
    "scheme_for",
    "numpy_accuracy",
    "references",
    "curve",
    "plot_tradeoff",
]

GRADIENTS = ("topk", "qsgd")
ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "softmax": lambda z: z,  # argmax of softmax(z) is argmax of z: no need to exponentiate
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
}
CODEBOOK_MAX_BITS = 8  # past 256 centroids a codebook costs more than it saves on these layers: use integers


def clone(model):
    """A compiled copy of a Keras model with the same weights, to compress while the original stays as it is."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return copy


@dataclass(frozen=True)
class Point:
    """One setting of the trade-off and what it costs and keeps."""

    sparsity: float  # fraction of each kernel's weights removed
    bits: int  # bits per kept weight (codebook index or integer)
    clusters: int | None  # codebook size, None when stored as linear integers
    scheme: codec.Scheme  # how the kernels were stored (the smaller of sparse and dense layouts)
    nbytes: int  # len(blob)
    dense_bytes: int  # 4 bytes per parameter
    accuracy: float  # of the model decoded from the blob, on the given test data
    gradient: str  # "topk" or "qsgd"
    p: int  # workers
    wire_bytes: int  # bytes the busiest worker sends per step with that gradient compressor
    wire_dense: int  # the same for float32 gradients (ring all-reduce)

    @property
    def ratio(self) -> float:
        """How many times smaller than dense float32."""
        return self.dense_bytes / self.nbytes

    def line(self) -> str:
        """The numbers in one line of text (what the widget prints)."""
        stored = tr("{k}-entry codebook", k=self.clusters) if self.clusters else f"int{self.bits}"
        return tr(
            "sparsity {s:.0%}, {stored}: {n:,} B ({ratio:.1f}× smaller), accuracy {acc:.1%} | {g} gradients on "
            "p={p}: {wire:,} B/step (float32: {dense:,} B, {saved:.1f}×)",
            s=self.sparsity,
            stored=stored,
            n=self.nbytes,
            ratio=self.ratio,
            acc=self.accuracy,
            g=self.gradient,
            p=self.p,
            wire=self.wire_bytes,
            dense=self.wire_dense,
            saved=self.wire_dense / self.wire_bytes,
        )


def _check(sparsity, bits, clusters, p, gradient) -> None:
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity is the fraction of weights removed, in [0, 1), got {sparsity!r}: e.g. 0.9")
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not 1 <= bits <= 16:
        raise ValueError(f"bits per weight must be a whole number in 1..16, got {bits!r}: e.g. bits=4")
    if clusters is not None and (not isinstance(clusters, (int, np.integer)) or not 1 <= clusters <= 1 << 16):
        raise ValueError(f"clusters must be a whole number in 1..65536 or None (2**bits), got {clusters!r}")
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 2:
        raise ValueError(f"p is the number of workers exchanging gradients and must be ≥ 2, got {p!r}")
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")


def scheme_for(bits: int, clusters: int | None = None, sparse: bool = False) -> codec.Scheme:
    """The Scheme `tradeoff` stores kernels with: a codebook of ``clusters`` (default 2^bits) for bits ≤ 8, else
    linear per-channel integers of ``bits`` bits."""
    if clusters is None and bits > CODEBOOK_MAX_BITS:
        return codec.Scheme(sparse=sparse, values="linear", bits=bits, per_channel=True)
    return codec.Scheme(sparse=sparse, values="codebook", clusters=int(clusters or 1 << bits))


def numpy_accuracy(layers: list[codec.Layer], x, y) -> float:
    """Top-1 accuracy of Dense layers (NumPy arrays) on (x, y): x @ W + b and the activation, layer by layer."""
    h = np.asarray(x, np.float32).reshape(len(x), -1)
    for layer in layers:
        if layer.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation {layer.activation!r} is not one of {list(ACTIVATIONS)}: add it to ACTIVATIONS"
            )
        h = ACTIVATIONS[layer.activation](h @ layer.kernel + (0 if layer.bias is None else layer.bias))
    return float(np.mean(np.argmax(h, axis=1) == np.asarray(y)))


@functools.lru_cache(maxsize=256)
def _wire(gradient: str | None, sparsity: float, bits: int, size: int, p: int) -> int:
    """Bytes per step per busiest worker (cached: the slider revisits the same settings)."""
    if gradient is None:
        return gradients.wire_bytes(None, size, p)
    if gradient == "topk":
        return gradients.wire_bytes(gradients.TopK(ratio=1 - sparsity), size, p)
    return gradients.wire_bytes(gradients.QSGD(levels=(1 << bits) - 1), size, p)  # ⌈log2(s+1)⌉ = bits a level


def tradeoff(
    model, x_test, y_test, sparsity: float, bits: int, clusters: int | None = None, p: int = 4, gradient: str = "topk"
) -> Point:
    """Prune a copy to ``sparsity``, store it with ``bits`` bits a weight, decode the bytes and measure them.

    The kernels are stored sparse (relative gaps) or dense, whichever is smaller, as an encoder would choose.
    """
    _check(sparsity, bits, clusters, p, gradient)
    if len(x_test) != len(y_test) or len(x_test) == 0:
        raise ValueError(f"x_test has {len(x_test)} rows and y_test {len(y_test)} labels: pass one label per image")
    layers = codec.layers_of(model)
    masks = magnitude_masks({layer.name: layer.kernel for layer in layers}, float(sparsity))
    pruned = [codec.Layer(ly.name, ly.kernel * masks[ly.name], ly.bias, ly.activation) for ly in layers]
    options = [scheme_for(bits, clusters, sparse=False)] + ([scheme_for(bits, clusters, True)] if sparsity else [])
    blobs = [(codec.encode(pruned, s, reference=layers), s) for s in options]
    blob, scheme = min(blobs, key=lambda b: len(b[0]))
    size = sum(ly.kernel.size + (0 if ly.bias is None else ly.bias.size) for ly in layers)
    return Point(
        float(sparsity),
        int(bits),
        scheme.clusters if scheme.values == "codebook" else None,
        scheme,
        len(blob),
        4 * size,
        numpy_accuracy(codec.decode_layers(blob), x_test, y_test),
        gradient,
        int(p),
        _wire(gradient, float(sparsity), int(bits), size, int(p)),
        _wire(None, 0.0, 32, size, int(p)),
    )


def references(model, x_test, y_test) -> dict[str, tuple[int, float]]:
    """{name: (bytes, accuracy)} of the dense float32 and the int8 (per channel) blobs of the model."""
    out = {}
    int8 = codec.Scheme(values="linear", bits=8, per_channel=True)
    for name, scheme in (("dense float32", codec.Scheme()), ("int8", int8)):
        blob = codec.encode(model, scheme)
        out[name] = (len(blob), numpy_accuracy(codec.decode_layers(blob), x_test, y_test))
    return out


def curve(model, x_test, y_test, bits: int, sparsities=(0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99), **kw) -> list[Point]:
    """`tradeoff` at each sparsity for one number of bits: a line on the accuracy-vs-bytes plot."""
    return [tradeoff(model, x_test, y_test, s, bits, **kw) for s in sparsities]


def plot_tradeoff(points: list[Point], current: Point, refs: dict[str, tuple[int, float]]):
    """(figure, current): accuracy against bytes for a sweep, the current point highlighted, the references marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.4), dpi=80)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.88)
    bits = plot_tr("{bits} bits", bits=current.bits)
    ax.plot([q.nbytes for q in points], [100 * q.accuracy for q in points], "o-", ms=4, label=bits)
    shown = {"dense float32": plot_tr("dense float32")}  # the references' names are keys: shown, not changed
    for (name, (nbytes, acc)), marker in zip(refs.items(), ("s", "D"), strict=False):
        ax.plot(nbytes, 100 * acc, marker, color="0.4", label=shown.get(name, name))
    now = plot_tr("sparsity {s:.0%}", s=current.sparsity)
    ax.plot(current.nbytes, 100 * current.accuracy, "*", ms=14, color="C3", label=now)
    ax.set(xscale="log", xlabel=plot_tr("bytes of the stored model (log scale)"), ylabel=plot_tr("test accuracy (%)"))
    ax.set_title(plot_tr("Pruning + weight sharing, no fine-tuning: size against accuracy"))
    ax.legend(fontsize=8, loc="lower right")
    return fig, current
