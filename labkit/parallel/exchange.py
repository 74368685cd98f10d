"""What data-parallel workers exchange each step: the mean of their gradients, exact or compressed, and its modelled
time. NumPy and the collectives only (no TensorFlow): the same function runs on every transport."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from labkit import collectives, comm, cost


@runtime_checkable
class Compressor(Protocol):
    """A gradient compressor: what a worker puts on the wire instead of its float32 gradient.

    - ``compress(grad, state) -> payload``: ``grad`` is this worker's flat float32 gradient; ``payload`` a 1-D
      NumPy array of any numeric dtype (float16 values, int32 indices then float32 values viewed as bytes, bits
      packed with np.packbits, …). ``payload.nbytes`` is exactly what travels and what the trace counts: pack it as
      tightly as you claim it is. ``state`` is this worker's own dict, kept from step to step (error feedback keeps
      its residual there); the trainer fills in ``state["rank"]``, ``state["p"]`` and ``state["step"]``.
    - ``decompress(payload, size) -> grad``: a float32 vector of ``size`` values from one payload.
    - ``summable`` (optional, default False): True if payloads add up elementwise, like float16 values (or random-k
      with indices every worker draws alike); they are then all-reduced with the chosen algorithm and decompressed
      once. Otherwise (top-k, QSGD, sign) every payload is all-gathered (a ring, whatever the algorithm) and each
      worker decompresses all p, in rank order, and adds them up, so every worker still gets the same average.
    - ``allreduce(grad, c, algorithm, state) -> (average, sizes)`` (optional): a compressor that needs more than
      one collective a step (PowerSGD all-reduces P, then Q) runs the whole exchange itself on the `Comm` ``c``;
      `exchange` then delegates to it. ``average`` is (1/p) Σ_r on every rank; ``sizes`` per rank the payload bytes
      of each all-reduce it ran, as a tuple, which `exchange_time` models one all-reduce after the other.
      ``summable`` should be True for such a compressor (its payloads are reduced, not gathered).

    The trainer also puts ``state["shapes"]`` into each worker's state: the trainable variables' shapes, in the
    order of the flat gradient (PowerSGD compresses each matrix and sends vectors whole).
    """

    def compress(self, grad: np.ndarray, state: dict) -> np.ndarray: ...

    def decompress(self, payload: np.ndarray, size: int) -> np.ndarray: ...


def exchange(
    grad: np.ndarray,
    c: comm.Comm,
    algorithm: str = "ring",
    compressor: Compressor | None = None,
    state: dict | None = None,
) -> tuple[np.ndarray, list[int]]:
    """(1/p) Σ_r grad_r on every rank, and the payload bytes each rank put on the wire (rank order)."""
    p = c.size
    if compressor is None:
        total = collectives.allreduce(grad, c, algorithm=algorithm)
        return total / np.float32(p), [grad.nbytes] * p
    state = state if state is not None else {}
    if hasattr(compressor, "allreduce"):  # several collectives a step (PowerSGD): the compressor runs them itself
        return compressor.allreduce(grad, c, algorithm, state)
    payload = compressor.compress(grad, state)
    if not isinstance(payload, np.ndarray) or payload.dtype.kind not in "biuf":
        raise TypeError(
            f"{type(compressor).__name__}.compress must return one numeric NumPy array (its nbytes are what travels),"
            f" got {type(payload).__name__}"
        )
    payload = payload.ravel()
    if getattr(compressor, "summable", False):
        total = compressor.decompress(collectives.allreduce(payload, c, algorithm=algorithm), grad.size)
        return np.asarray(total, np.float32) / np.float32(p), [payload.nbytes] * p
    lengths = c.allgather_object(payload.size)  # metadata (free on sim): where each rank's payload starts
    everything, start = collectives.allgather(payload, c), 0
    total = np.zeros(grad.size, np.float32)
    for length in lengths:
        total += compressor.decompress(everything[start : start + length], grad.size)
        start += length
    return total / np.float32(p), [length * payload.itemsize for length in lengths]


def exchange_time(algorithm: str, sizes: list, link: cost.Link, gathered: bool) -> float:
    """Modelled seconds of one `exchange`: `cost.allreduce_time`, or (p−1)(α + β·max n) for a ring all-gather.

    ``sizes`` has one entry per rank: its payload bytes, or a tuple of them when the exchange ran several
    collectives (PowerSGD's two all-reduces); their times add up. The all-gather form is the lock-step bound (every
    step waits for the largest payload); the sim's port rules let small payloads run ahead, so the simulated time
    can be a little shorter.
    """
    p = len(sizes)
    per_collective = np.asarray(sizes, dtype=float).reshape(p, -1).T  # one row per collective, one column per rank
    if gathered:
        return sum((p - 1) * float(link.message_time(row.max())) for row in per_collective) if p > 1 else 0.0
    return sum(float(cost.allreduce_time(algorithm, row[0], p, link)) for row in per_collective)
