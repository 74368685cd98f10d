"""Linear quantisation: w ≈ scale·(q − zero_point), q an integer of b bits; symmetric or asymmetric, one scale per
tensor or per output channel (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference"). Every element lands within scale/2 of its original."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Quantized", "quantize"]


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
