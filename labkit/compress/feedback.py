"""What every gradient compressor shares: argument checks, bit packing, the float16 reference (`Float16`) and error
feedback (`ErrorFeedback`: compress g + e, keep e ← (g + e) − sent)."""

from __future__ import annotations

import numpy as np


def _whole(value, name: str, fix: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}: {fix}")
    return int(value)


def _ratio(ratio) -> float:
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 1:
        raise ValueError(f"ratio is the fraction of values sent and must lie in (0, 1], got {ratio!r}: e.g. 0.01")
    return float(ratio)


def _bits(values: np.ndarray, bits: int) -> np.ndarray:
    """The low ``bits`` bits of each value, packed 8 to a byte (ceil(n·bits/8) bytes)."""
    used = values.astype("<u4").view(np.uint8).reshape(-1, 4)[:, : (bits + 7) // 8]  # only the bytes that hold bits
    return np.packbits(np.unpackbits(used, axis=1, bitorder="little")[:, :bits], bitorder="little")


def _unbits(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The inverse of `_bits`: n unsigned integers of ``bits`` bits each."""
    table = np.unpackbits(packed, count=n * bits, bitorder="little").reshape(n, bits)
    out = np.zeros(n, np.uint32)
    for j in range(bits):
        out |= table[:, j].astype(np.uint32) << np.uint32(j)
    return out


def _as_bytes(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate([np.ascontiguousarray(p).reshape(-1).view(np.uint8) for p in parts])


class Float16:
    """The simplest compressor, and a reference for the protocol: gradients sent as float16 (half the bytes)."""

    summable = True  # float16 vectors can be summed on the way, as NCCL does with half-precision gradients

    def compress(self, grad: np.ndarray, state: dict) -> np.ndarray:
        return grad.astype(np.float16)

    def decompress(self, payload: np.ndarray, size: int) -> np.ndarray:
        return payload.astype(np.float32)


class ErrorFeedback:
    """The residual bookkeeping every biased compressor shares: send C(g + e), keep e ← (g + e) − C(g + e)."""

    error_feedback = True

    def corrected(self, grad: np.ndarray, state: dict) -> np.ndarray:
        """g + e (just g without error feedback): what is compressed this step."""
        grad = np.asarray(grad, np.float32)
        return grad + state["residual"] if self.error_feedback and "residual" in state else grad

    def remember(self, state: dict, corrected: np.ndarray, sent: np.ndarray) -> None:
        """Keep what this worker did not send, to add to its next gradient."""
        if self.error_feedback:
            state["residual"] = (corrected - sent).astype(np.float32)
