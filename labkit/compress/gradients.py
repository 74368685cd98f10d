"""Gradient compression for data-parallel training: fewer bytes on the wire, every byte of the payload counted.

Each compressor follows `labkit.parallel.exchange.Compressor`: ``compress(grad, state) -> payload`` (one NumPy array,
whose ``nbytes`` is what travels), ``decompress(payload, size) -> grad``, and ``summable`` if payloads can be
all-reduced; otherwise they are all-gathered. PowerSGD needs two all-reduces a step, so it brings its own
``allreduce``. Float16 (half the bytes, summable) is the protocol's reference and lives in `labkit.compress.gradients`.

| compressor | payload of n float32 values | summable | papers |
|---|---|---|---|
| `TopK` | k indices (uint16 if n ≤ 65,536, else uint32) + k float32 values | no | Aji & Heafield 2017 |
| `RandomK` | k float32 values (every worker draws the same k coordinates) | yes | Stich et al. 2018 |
| `QSGD` | float32 ‖g‖ + n sign bits + n level indices of ⌈log2(s+1)⌉ bits | no | Alistarh et al. 2017 |
| `Sign` | float32 scale + n sign bits | no | Bernstein et al. 2018; Karimireddy et al. 2019 |
| `PowerSGD` | per matrix P (n×r) and Q (m×r) float32, vectors as float32 | two all-reduces | Vogels et al. 2019 |

Error feedback (Seide et al. 2014; Stich et al. 2018; Karimireddy et al. 2019): compress g + e instead of g and
keep what was not sent, e ← (g + e) − sent, in the worker's state, so that over T steps Σ sent + e_T = Σ g.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from labkit import collectives, comm
from labkit.compress.feedback import ErrorFeedback, Float16, _as_bytes, _bits, _ratio, _unbits, _whole
from labkit.compress.powersgd import PowerSGD

__all__ = ["Float16", "ErrorFeedback", "TopK", "RandomK", "QSGD", "Sign", "PowerSGD", "wire_bytes"]


class TopK(ErrorFeedback):
    """Send the k largest |g + e| with their positions (Aji & Heafield 2017); ratio=0.01 is 99 % sparsity."""

    summable = False  # every worker picks different positions: payloads are all-gathered

    def __init__(self, ratio: float | None = None, k: int | None = None, error_feedback: bool = True) -> None:
        if (ratio is None) == (k is None):
            raise ValueError("give exactly one of ratio (a fraction of the values, e.g. 0.01) or k (a count)")
        self.ratio = None if ratio is None else _ratio(ratio)
        self.k = None if k is None else _whole(k, "k", "the number of values sent, e.g. k=100")
        self.error_feedback = bool(error_feedback)

    def count(self, size: int) -> int:
        """How many values are sent from a gradient of ``size`` values."""
        k = self.k if self.k is not None else max(1, round(self.ratio * size))
        if k > size:
            raise ValueError(f"k={k} is more than the gradient's {size} values: use k <= {size} or a ratio")
        return k

    @staticmethod
    def index_dtype(size: int) -> np.dtype:
        """The smallest unsigned integer that holds every position: 2 bytes up to 65,536 values, else 4."""
        return np.dtype(np.uint16 if size <= 1 << 16 else np.uint32)

    def compress(self, grad: np.ndarray, state: dict) -> np.ndarray:
        g = self.corrected(grad, state)
        k = self.count(g.size)
        idx = np.sort(np.argpartition(np.abs(g), g.size - k)[g.size - k :])
        payload = _as_bytes(idx.astype(self.index_dtype(g.size)), g[idx].astype(np.float32))
        self.remember(state, g, self.decompress(payload, g.size))
        return payload

    def decompress(self, payload: np.ndarray, size: int) -> np.ndarray:
        width = self.index_dtype(size).itemsize
        k = payload.nbytes // (width + 4)
        out = np.zeros(size, np.float32)
        out[payload[: k * width].view(self.index_dtype(size))] = payload[k * width :].view(np.float32)
        return out


class RandomK(ErrorFeedback):
    """Send k coordinates drawn from (seed, step), the same on every worker, so only values travel and they add up.

    With error feedback the values are sent as they are (the residual keeps the rest, Stich et al. 2018); without
    it they are scaled by n/k, which makes the estimate unbiased, E[decompress(compress(g))] = g, but noisy.
    """

    summable = True  # same coordinates on every worker: the value vectors are all-reduced

    def __init__(self, ratio: float, error_feedback: bool = True, seed: int = 0) -> None:
        self.ratio, self.error_feedback, self.seed = _ratio(ratio), bool(error_feedback), int(seed)
        self._drawn: tuple[int, int, np.ndarray] | None = None  # (size, step, indices) of the last compress

    def coordinates(self, size: int, step: int) -> np.ndarray:
        """The sorted k positions sent at ``step`` (a pure function of seed, step and size)."""
        k = max(1, round(self.ratio * size))
        return np.sort(np.random.default_rng([self.seed, step]).choice(size, k, replace=False))

    def compress(self, grad: np.ndarray, state: dict) -> np.ndarray:
        g = self.corrected(grad, state)
        idx = self.coordinates(g.size, state.get("step", 0))
        self._drawn = (g.size, state.get("step", 0), idx)  # every worker of this step draws the same: no race
        scale = 1.0 if self.error_feedback else g.size / idx.size
        payload = (g[idx] * np.float32(scale)).astype(np.float32)
        self.remember(state, g, self.decompress(payload, g.size))
        return payload

    def decompress(self, payload: np.ndarray, size: int) -> np.ndarray:
        """Values back to the coordinates of the step last compressed (the payload carries no positions)."""
        if self._drawn is None or self._drawn[0] != size or len(self._drawn[2]) != payload.size:
            raise ValueError("RandomK.decompress needs the coordinates of this step: call compress(grad, state) first")
        out = np.zeros(size, np.float32)
        out[self._drawn[2]] = payload
        return out


class QSGD:
    """Stochastic quantisation to s levels of |g_i|/‖g‖₂, with signs (Alistarh et al. 2017); unbiased.

    g_i ↦ ‖g‖·sign(g_i)·ℓ_i/s, ℓ_i = ⌊s|g_i|/‖g‖⌋ + Bernoulli(frac), so E = g and |error| ≤ ‖g‖/s per value.
    One norm for the whole gradient (the paper uses buckets) and fixed-width levels: no Elias coding, which would
    save more bytes at small s but is a variable-length code we do not need to make the point.
    """

    summable = False  # each worker has its own norm: payloads are all-gathered

    def __init__(self, levels: int = 4, seed: int = 0) -> None:
        self.levels = _whole(levels, "levels", "the number of quantisation levels s, e.g. levels=4")
        self.bits, self.seed = math.ceil(math.log2(self.levels + 1)), int(seed)
        if self.bits > 32:
            raise ValueError(f"levels={levels} needs more than 32 bits a value: use levels < 2**32")

    def compress(self, grad: np.ndarray, state: dict) -> np.ndarray:
        g = np.asarray(grad, np.float32)
        norm = np.float32(np.linalg.norm(g.astype(np.float64)))  # the float32 the receiver scales with
        rng = np.random.default_rng([self.seed, state.get("rank", 0), state.get("step", 0)])
        r = np.abs(g.astype(np.float64)) / float(norm) * self.levels if norm > 0 else np.zeros(g.size)
        low = np.floor(r)
        levels = np.minimum(low + (rng.random(g.size) < r - low), self.levels).astype(np.uint32)
        return _as_bytes(np.array([norm], np.float32), np.packbits(g < 0), _bits(levels, self.bits))

    def decompress(self, payload: np.ndarray, size: int) -> np.ndarray:
        norm, signs = payload[:4].view(np.float32)[0], (size + 7) // 8
        negative = np.unpackbits(payload[4 : 4 + signs], count=size).astype(bool)
        levels = _unbits(payload[4 + signs :], self.bits, size).astype(np.float32)
        return np.where(negative, -1.0, 1.0).astype(np.float32) * (norm * levels / np.float32(self.levels))


class Sign(ErrorFeedback):
    """Send one bit a value and one float32 scale, mean|g + e| (signSGD, Bernstein et al. 2018; EF-SignSGD)."""

    summable = False  # each worker has its own scale: payloads are all-gathered

    def __init__(self, error_feedback: bool = True) -> None:
        self.error_feedback = bool(error_feedback)

    def compress(self, grad: np.ndarray, state: dict) -> np.ndarray:
        g = self.corrected(grad, state)
        scale = np.array([np.mean(np.abs(g), dtype=np.float64)], np.float32)
        payload = _as_bytes(scale, np.packbits(g >= 0))  # sign(0) is sent as +
        self.remember(state, g, self.decompress(payload, g.size))
        return payload

    def decompress(self, payload: np.ndarray, size: int) -> np.ndarray:
        positive = np.unpackbits(payload[4:], count=size).astype(np.float32)
        return payload[:4].view(np.float32)[0] * (2 * positive - 1)


def _busiest(fn: Callable, p: int) -> int:
    """Bytes the busiest rank sends when ``fn(comm)`` runs on p simulated ranks (counted from the trace)."""
    sent = np.zeros(p, np.int64)
    for message in comm.run(fn, p, "sim").trace:
        sent[message.src] += message.nbytes
    return int(sent.max())


def wire_bytes(
    compressor, size: int, p: int, *, algorithm: str = "ring", shapes: list | None = None, seed: int = 0
) -> int:
    """Bytes the busiest worker sends in one step for a gradient of ``size`` float32 values (None: uncompressed).

    Computed from the compressor's own payload of a random gradient: all-gathered payloads cost (p − 1)·nbytes on
    a ring; all-reduced ones (and PowerSGD's two all-reduces) are run on the simulator with ``algorithm`` and the
    busiest rank's bytes counted, which is exact also when the payload does not split evenly into p chunks.
    """
    size, p = _whole(size, "size", "the number of gradient values"), _whole(p, "p", "the number of workers, e.g. 4")
    if algorithm not in collectives.ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}: use one of {list(collectives.ALGORITHMS)}")
    grad = np.random.default_rng(seed).standard_normal(size).astype(np.float32)
    state = lambda: {"rank": 0, "p": p, "step": 0, **({"shapes": shapes} if shapes else {})}  # noqa: E731
    if compressor is None:
        return _busiest(lambda c: collectives.allreduce(grad, c, algorithm=algorithm), p)
    if hasattr(compressor, "allreduce"):
        return _busiest(lambda c: compressor.allreduce(grad, c, algorithm, state()), p)
    payload = np.ravel(compressor.compress(grad, state()))
    if getattr(compressor, "summable", False):
        return _busiest(lambda c: collectives.allreduce(payload, c, algorithm=algorithm), p)
    return (p - 1) * payload.nbytes  # a ring all-gather: each rank forwards p − 1 payloads of equal size
