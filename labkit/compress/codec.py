"""The stored format: a model of Dense layers as bytes, each kernel kept as whatever it was compressed to.

``encode(model, Scheme(...)) -> bytes`` and ``decode(bytes) -> keras.Model`` (rebuilt from the bytes only), and
``size_report(bytes)``, which parses the same bytes and counts each part, so its rows add up to ``len(blob)``.

A kernel W (n_in × n_out, read row by row) is stored as positions and values (Han, Mao & Dally 2016, section 5):

- positions: all of them (dense), or only the nonzeros (``sparse``), each as its gap to the previous one (zeros
  skipped) in ``index_bits`` bits; a gap too long for the width gets a stored zero as padding ("filler"), as the
  paper does (5 bits for its fully connected layers).
- values: float32; a ``codebook`` of k float32 centroids and one index per weight (index 0 means zero when sparse);
  or ``linear`` integers of ``bits`` bits with float32 scales (and zero points when asymmetric).
- the index streams (gaps, codebook indices, integers) at a fixed width or Huffman-coded (``huffman``).
- the bias: float32, or float16 (``half_bias``: half the bytes; ~3 significant digits, and the decoded model
  is the one evaluated, so whatever the rounding costs is measured).

Layout (little-endian): "LKW1", u16 layers, u32 parameters of the reference dense model; per layer: name and
activation (u8 length + UTF-8), u32 n_in, u32 n_out, u8 flags, u8 index_bits, u8 bits, u32 clusters, u32 stored
entries; then codebook | scales (+ u16 zero points) | gaps | values | bias (float32, or float16 with flag bit 7,
which older blobs never set, so they read as before). No masks are stored: the
positions are the mask. Parts in the report: header, indices (the gaps), weights, codebook, scales, huffman tables
(each Huffman stream's code lengths and symbol count), bias.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from labkit.compress.huffman import huffman_decode, huffman_encode, pack_bits, unpack_bits
from labkit.compress.layers import Layer, dense_layers, layers_of
from labkit.compress.sizes import SizeReport

__all__ = ["Scheme", "Layer", "layers_of", "dense_layers", "encode", "decode", "decode_layers", "apply_scheme"]
__all__ += ["SizeReport", "size_report"]

MAGIC = b"LKW1"
VALUES = ("float32", "codebook", "linear")
FLAGS = {"bias": 1, "sparse": 2, "huffman": 4, "asymmetric": 8, "per_channel": 16, "half_bias": 128}
VALUES_SHIFT, VALUES_MASK = 5, 3  # bits 5-6 of the flags: the values kind


@dataclass(frozen=True)
class Scheme:
    """How one kernel is stored (defaults: dense float32, i.e. no compression)."""

    sparse: bool = False  # store only the nonzeros, positions as relative gaps (after pruning)
    index_bits: int = 5  # bits per gap; Han et al. 2016 use 5 for fully connected layers
    values: str = "float32"  # "float32", "codebook" (k-means weight sharing) or "linear" (quantised integers)
    clusters: int = 32  # codebook size k; 32 = 5-bit indices, the paper's choice for fully connected layers
    bits: int = 8  # bits per integer for values="linear" (2-16); 8 is the int8 of every engine
    symmetric: bool = True  # linear: zero maps to an integer exactly, no zero points stored
    per_channel: bool = False  # linear: one scale per output unit (column) instead of one per kernel
    huffman: bool = False  # Huffman-code the gaps and the indices/integers instead of a fixed width
    half_bias: bool = False  # store the bias as float16 (2 bytes per output unit instead of 4)

    def __post_init__(self):
        if self.values not in VALUES:
            raise ValueError(f"values must be one of {VALUES}, got {self.values!r}")
        if not 1 <= self.index_bits <= 16:
            raise ValueError(f"index_bits must lie in 1..16, got {self.index_bits}")
        if self.clusters < 1:
            raise ValueError(f"clusters must be ≥ 1, got {self.clusters}")
        if not 2 <= self.bits <= 16:
            raise ValueError(f"bits must lie in 2..16 for linear quantisation, got {self.bits}")


def _gaps(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, stored positions): each gap counts the zeros skipped; a gap ≥ 2^bits gets filler entries first."""
    span = 1 << index_bits
    g = np.diff(positions, prepend=-1) - 1
    fillers = g // span
    ends = np.cumsum(fillers + 1) - 1  # where each real entry lands among the stored ones
    gaps = np.full(int(ends[-1]) + 1 if len(ends) else 0, span - 1, dtype=np.int64)
    gaps[ends] = g - fillers * span
    return gaps, np.cumsum(gaps + 1) - 1


def _stream(symbols: np.ndarray, width: int, huffman: bool) -> bytes:
    return huffman_encode(symbols) if huffman else pack_bits(symbols, width)


def _represent(kernel: np.ndarray, s: Scheme) -> dict:
    """The parts a kernel is stored as: gaps, value symbols or floats, codebook, scales, zero points."""
    from labkit.compress.quantize import quantize
    from labkit.compress.sharing import kmeans_1d

    flat = np.asarray(kernel, np.float32).ravel()
    if flat.size == 0:
        raise ValueError("a layer with 0 weights cannot be stored: leave it out of the model")
    gaps, pos = _gaps(np.flatnonzero(flat), s.index_bits) if s.sparse else (None, np.arange(flat.size))
    vals = flat[pos]
    parts = {"gaps": gaps, "pos": pos, "count": len(pos)}
    if s.values == "float32":
        parts["floats"] = vals
    elif s.values == "codebook":
        keep = vals != 0 if s.sparse else np.ones(len(vals), bool)  # sparse: symbol 0 is the zero of a filler
        centroids, labels = kmeans_1d(vals[keep], s.clusters) if keep.any() else (np.zeros(s.clusters), [])
        symbols = np.zeros(len(vals), np.int64)
        symbols[keep] = np.asarray(labels) + int(s.sparse)
        parts.update(codebook=np.asarray(centroids, np.float32), symbols=symbols)
    else:
        qt = quantize(np.asarray(kernel), s.bits, s.symmetric, s.per_channel, axis=-1)
        parts.update(symbols=qt.q.ravel()[pos], scale=np.atleast_1d(qt.scale), zero=np.atleast_1d(qt.zero_point))
    return parts


def _restore(parts: dict, shape: tuple[int, int], s: Scheme) -> np.ndarray:
    """The float32 kernel the parts describe."""
    flat = np.zeros(shape[0] * shape[1], np.float32)
    pos = parts["pos"]
    if s.values == "float32":
        flat[pos] = parts["floats"]
    elif s.values == "codebook":
        book = np.concatenate([[0.0], parts["codebook"]]) if s.sparse else parts["codebook"]
        flat[pos] = np.asarray(book, np.float32)[parts["symbols"]]
    else:
        ch = pos % shape[1] if s.per_channel else np.zeros(len(pos), np.int64)
        q = parts["symbols"] - parts["zero"][ch]
        flat[pos] = (parts["scale"][ch].astype(np.float64) * q).astype(np.float32)
    return flat.reshape(shape)


def _value_width(s: Scheme) -> int:
    if s.values == "codebook":
        return max(1, int(np.ceil(np.log2(s.clusters + int(s.sparse)))))
    return s.bits


def _bias_dtype(s: Scheme) -> str:
    return "<f2" if s.half_bias else "<f4"


def apply_scheme(model, scheme: Scheme | dict) -> None:
    """Set every Dense kernel (and bias) in place to what `encode` would store for it: the compressed model."""
    for layer in dense_layers(model):
        s = _scheme_for(scheme, layer.name)
        kernel = np.asarray(layer.kernel)
        layer.kernel.assign(_restore(_represent(kernel, s), kernel.shape, s))
        if layer.use_bias:
            layer.bias.assign(np.asarray(layer.bias).astype(_bias_dtype(s)).astype(np.float32))


def _scheme_for(scheme: Scheme | dict, name: str) -> Scheme:
    return scheme.get(name, Scheme()) if isinstance(scheme, dict) else scheme


def _name(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"layer name or activation {text[:20]!r}… is longer than 255 bytes; rename it")
    return struct.pack("<B", len(raw)) + raw


def encode(model, scheme: Scheme | dict = Scheme(), reference=None) -> bytes:
    """The bytes of a model of Dense layers (or a list of `Layer`), each kernel stored as ``scheme`` says.

    ``scheme`` is one `Scheme` or {layer name: Scheme} (others dense float32). ``reference`` is the model whose
    float32 size the report compares with (default: this one), e.g. the original of a low-rank or distilled model.
    """
    layers = layers_of(model)
    if not layers:
        raise ValueError("the model has no Dense layers to store; build it from keras.layers.Dense")
    ref = layers_of(reference) if reference is not None else layers
    params = sum(r.kernel.size + (0 if r.bias is None else r.bias.size) for r in ref)
    out = [MAGIC, struct.pack("<HI", len(layers), params)]
    for layer in layers:
        s = _scheme_for(scheme, layer.name)
        kernel = np.asarray(layer.kernel, np.float32)
        if kernel.ndim != 2:
            raise ValueError(f"layer {layer.name!r}: a Dense kernel is 2-D (n_in, n_out), got shape {kernel.shape}")
        parts = _represent(kernel, s)
        flags = FLAGS["bias"] * (layer.bias is not None) + FLAGS["sparse"] * s.sparse + FLAGS["huffman"] * s.huffman
        flags += FLAGS["asymmetric"] * (not s.symmetric) + FLAGS["per_channel"] * s.per_channel
        flags += FLAGS["half_bias"] * s.half_bias + (VALUES.index(s.values) << VALUES_SHIFT)
        fields = (*kernel.shape, flags, s.index_bits, s.bits, s.clusters, parts["count"])
        out += [_name(layer.name), _name(layer.activation), struct.pack("<IIBBBII", *fields)]
        if s.values == "codebook":
            out.append(parts["codebook"].astype("<f4").tobytes())
        if s.values == "linear":
            out.append(parts["scale"].astype("<f4").tobytes())
            if not s.symmetric:
                out.append(parts["zero"].astype("<u2").tobytes())
        if s.sparse:
            out.append(_stream(parts["gaps"], s.index_bits, s.huffman))
        if s.values == "float32":
            out.append(parts["floats"].astype("<f4").tobytes())
        else:
            out.append(_stream(parts["symbols"], _value_width(s), s.huffman))
        if layer.bias is not None:
            if s.half_bias and np.abs(layer.bias).max() > np.finfo(np.float16).max:
                raise ValueError(
                    f"layer {layer.name!r}: a bias beyond ±65504 does not fit float16; use half_bias=False"
                )
            out.append(np.asarray(layer.bias, np.float32).astype(_bias_dtype(s)).tobytes())
    return b"".join(out)


class _Reader:
    """Reads the blob front to back and records (layer, part, bytes) for every byte it reads."""

    def __init__(self, blob: bytes):
        self.blob, self.pos, self.rows = bytes(blob), 0, []

    def take(self, n: int, layer: str, part: str) -> bytes:
        if self.pos + n > len(self.blob):
            raise ValueError(f"blob ends early while reading {part} of {layer!r}: truncated or not from encode()")
        self.rows.append((layer, part, n))
        self.pos += n
        return self.blob[self.pos - n : self.pos]

    def unpack(self, fmt: str, layer: str, part: str = "header") -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), layer, part))

    def text(self, layer: str) -> str:
        (n,) = self.unpack("<B", layer)
        return self.take(n, layer, "header").decode()

    def stream(self, count: int, width: int, huffman: bool, layer: str, part: str) -> np.ndarray:
        if not huffman:
            out = unpack_bits(self.blob, count, width, self.pos)
            self.take((count * width + 7) // 8, layer, part)
            return out
        out, used = huffman_decode(self.blob, self.pos)
        (alphabet,) = struct.unpack_from("<I", self.blob, self.pos)
        self.take(8 + alphabet, layer, "huffman tables")
        self.take(used - 8 - alphabet, layer, part)
        return out


def _parse(blob: bytes) -> tuple[list[Layer], _Reader, int]:
    r = _Reader(blob)
    if r.take(4, "(model)", "header") != MAGIC:
        raise ValueError("not a labkit weights blob (it does not start with b'LKW1'); make it with encode()")
    n_layers, params = r.unpack("<HI", "(model)")
    layers = []
    for _ in range(n_layers):
        name = r.text("?")
        r.rows[-2:] = [(name, part, n) for _, part, n in r.rows[-2:]]  # the name's own bytes are the layer's
        activation = r.text(name)
        n_in, n_out, flags, index_bits, bits, clusters, count = r.unpack("<IIBBBII", name)
        f = {k: bool(flags & v) for k, v in FLAGS.items()}
        values, symmetric = VALUES[(flags >> VALUES_SHIFT) & VALUES_MASK], not f["asymmetric"]
        s = Scheme(
            f["sparse"], index_bits, values, clusters, bits, symmetric, f["per_channel"], f["huffman"], f["half_bias"]
        )
        parts = {"pos": np.arange(count)}
        if s.values == "codebook":
            parts["codebook"] = np.frombuffer(r.take(4 * clusters, name, "codebook"), "<f4")
        if s.values == "linear":
            n_scales = n_out if s.per_channel else 1
            parts["scale"] = np.frombuffer(r.take(4 * n_scales, name, "scales"), "<f4")
            zero = 1 << (bits - 1) if s.symmetric else np.frombuffer(r.take(2 * n_scales, name, "scales"), "<u2")
            parts["zero"] = np.broadcast_to(np.asarray(zero, np.int64), (n_scales,))
        if s.sparse:
            parts["pos"] = np.cumsum(r.stream(count, index_bits, s.huffman, name, "indices") + 1) - 1
        if s.values == "float32":
            parts["floats"] = np.frombuffer(r.take(4 * count, name, "weights"), "<f4")
        else:
            parts["symbols"] = r.stream(count, _value_width(s), s.huffman, name, "weights")
        bias = None
        if f["bias"]:
            raw = r.take((2 if s.half_bias else 4) * n_out, name, "bias")
            bias = np.frombuffer(raw, _bias_dtype(s)).astype(np.float32)
        layers.append(Layer(name, _restore(parts, (n_in, n_out), s), bias, activation))
    if r.pos != len(r.blob):
        raise ValueError(f"{len(r.blob) - r.pos} bytes left over after the last layer: not a blob from encode()")
    return layers, r, params


def decode_layers(blob: bytes) -> list[Layer]:
    """The layers stored in a blob, as NumPy arrays."""
    return _parse(blob)[0]


def decode(blob: bytes):
    """A compiled Keras model rebuilt from the blob's bytes alone (Dense layers, float32 weights)."""
    import keras

    layers = decode_layers(blob)
    model = keras.Sequential([keras.Input(shape=(layers[0].kernel.shape[0],))], name="decoded")
    for layer in layers:
        dense = keras.layers.Dense(
            layer.kernel.shape[1], activation=layer.activation, use_bias=layer.bias is not None, name=layer.name
        )
        model.add(dense)
        dense.set_weights([layer.kernel] + ([layer.bias] if layer.bias is not None else []))
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def size_report(blob: bytes) -> SizeReport:
    """Every byte of the blob attributed to a layer and a part, by parsing it as `decode` does."""
    _, reader, params = _parse(blob)
    return SizeReport(tuple(reader.rows), len(blob), 4 * params)
