"""One α and a β on each side of the last-level cache: the α-β model of one machine's memory system.

On one machine the "link" is the memory system, and its β changes when the data an operation touches no longer
fits in the last-level cache: the α-β model holds on each side of that step, not across it (see
benchmarks/README.md). `benchmarks/allreduce.py` fits these; the lesson's `labkit.cost.fit_link` fits one line.
"""

from __future__ import annotations

import numpy as np

from labkit.cost import Link

#: The two memory regimes of `fit_link_regimes`: the data an operation touches fits in the last-level cache, or not.
REGIMES = ("cache", "memory")


def allreduce_footprint(nbytes: float, p: int) -> float:
    """Bytes an all-reduce of n bytes touches on one machine: every rank's input and its result, 2pn."""
    return 2.0 * p * float(nbytes)


def regime(footprint: float, cache_bytes: int) -> str:
    """The regime of an operation that touches ``footprint`` bytes: "cache" if they fit in ``cache_bytes``, else
    "memory"."""
    if not cache_bytes > 0:
        raise ValueError(f"cache_bytes must be > 0 (the last-level cache's size), got {cache_bytes!r}")
    return "cache" if footprint <= cache_bytes else "memory"


def fit_link_regimes(sizes, times, footprints, cache_bytes: int) -> dict[str, Link]:
    """The links of the two memory regimes, {"cache": Link, "memory": Link}: one α, a β for each regime.

    ``footprints``: the bytes each measurement touches. α, what a message costs before its first byte (waking the
    receiver, the handshake), is the same on both sides, so all the times are fitted together, t ≈ α + n·β_regime,
    by least squares on relative errors as `labkit.cost.fit_link` does. (A separate line through the few sizes
    beyond the cache gives an α of a millisecond or so: it is the bend between the regimes, not a start-up cost.)
    Each regime needs times for at least two message sizes.
    """
    sizes, times = np.asarray(sizes, dtype=float).ravel(), np.asarray(times, dtype=float).ravel()
    footprints = np.asarray(footprints, dtype=float).ravel()
    if not sizes.shape == times.shape == footprints.shape:
        raise ValueError(
            f"sizes, times and footprints must have the same length, got {sizes.size}, {times.size}, {footprints.size}"
        )
    if np.any(times <= 0):
        raise ValueError("every measured time must be > 0 seconds")
    where = np.array([regime(f, cache_bytes) for f in footprints])
    for name in REGIMES:
        if np.unique(sizes[where == name]).size < 2:
            raise ValueError(
                f"fit_link_regimes needs times for at least 2 message sizes whose footprint is "
                f"{'within' if name == 'cache' else 'beyond'} the {cache_bytes:,}-byte cache, got "
                f"{np.unique(sizes[where == name]).size}: measure {'smaller' if name == 'cache' else 'larger'} "
                "messages too"
            )
    columns = [np.ones_like(sizes)] + [np.where(where == name, sizes, 0.0) for name in REGIMES]
    design = np.stack(columns, axis=1) / times[:, None]
    (alpha, *betas), *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
    if min(betas) <= 0:
        raise ValueError("the times do not grow with the message size in each regime: measure more sizes")
    return {name: Link(alpha=max(float(alpha), 0.0), beta=float(b)) for name, b in zip(REGIMES, betas, strict=True)}
