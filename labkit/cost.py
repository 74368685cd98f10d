"""The α-β(-γ) cost model of collectives: links, closed-form all-reduce times, bandwidth figures, a fit.

A message of n bytes over a link costs α + nβ (Hockney); reducing n bytes costs nγ. The closed forms for
all-reduce are those of Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication Operations in
MPICH" (IJHPCA 2005), and the ``"sim"`` transport reproduces them exactly where they are exact (p a power of two,
n divisible by p). Every time is in seconds, every size in bytes.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LINKS_CSV = Path(__file__).resolve().parent.parent / "data" / "links.csv"

ALGORITHMS = ("ps", "ring", "tree", "recursive_doubling", "halving_doubling")

#: nccl-tests' bus-bandwidth factor per collective (its PERFORMANCE.md), as a function of p.
BUSBW_FACTORS = {
    "allreduce": lambda p: 2 * (p - 1) / p,
    "reduce_scatter": lambda p: (p - 1) / p,
    "allgather": lambda p: (p - 1) / p,
    "broadcast": lambda p: 1.0,
    "reduce": lambda p: 1.0,
}


def _seconds(t: float) -> str:
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if t >= scale:
            return f"{t / scale:.4g} {unit}"
    return "0 s" if t == 0 else f"{t:.3g} s"


@dataclass(frozen=True, repr=False)
class Link:
    """A link of the α-β model: α seconds per message, β seconds per byte, γ seconds per reduced byte."""

    alpha: float  # latency: what a message costs before its first byte arrives
    beta: float  # 1 / bandwidth (per direction)
    gamma: float = 0.0  # 0 by default: the reduction is free, so times are communication only

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Link.{name} must be a finite number >= 0 (seconds), got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_bandwidth(cls, alpha: float, GBps: float, gamma: float = 0.0) -> Link:
        """A link of latency ``alpha`` seconds and ``GBps`` gigabytes (1e9 bytes) per second per direction."""
        if not GBps > 0:
            raise ValueError(f"bandwidth must be > 0 GB/s, got {GBps!r}")
        return cls(alpha=alpha, beta=1.0 / (GBps * 1e9), gamma=gamma)

    @property
    def bandwidth(self) -> float:
        """1/β in bytes per second (inf for β = 0)."""
        return math.inf if self.beta == 0 else 1.0 / self.beta

    def message_time(self, nbytes: float | np.ndarray) -> float | np.ndarray:
        """α + nβ: the time one message of n bytes takes."""
        t = self.alpha + np.asarray(nbytes, dtype=float) * self.beta
        return float(t) if np.ndim(t) == 0 else t

    def __repr__(self) -> str:
        gamma = "0" if self.gamma == 0 else f"{1 / self.gamma / 1e9:.4g} GB/s reduced"
        return f"Link(alpha={_seconds(self.alpha)}, bandwidth={self.bandwidth / 1e9:.4g} GB/s, gamma={gamma})"


#: The link `labkit.comm.run` uses on ``"sim"`` when none is given: the "10 GbE" preset of data/links.csv
#: (20 µs, 1.25 GB/s), a cluster of ordinary servers, so that both α and β matter at sizes a student tries.
DEFAULT_LINK = Link(alpha=20e-6, beta=1 / 1.25e9)


@functools.lru_cache(maxsize=1)
def _load_presets() -> tuple[tuple[str, Link, str, str], ...]:
    if not LINKS_CSV.exists():
        raise FileNotFoundError(f"{LINKS_CSV} is missing: it ships with labkit (git checkout data/links.csv)")
    with LINKS_CSV.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return tuple(
        (
            r["name"],
            Link.from_bandwidth(float(r["alpha_s"]), float(r["bandwidth_GBps"])),
            r["bandwidth_source"],
            r["latency_source"],
        )
        for r in rows
    )


def presets() -> dict[str, Link]:
    """The links of data/links.csv by name (PCIe, NVLink, InfiniBand, Ethernet, shared memory)."""
    return {name: link for name, link, _, _ in _load_presets()}


def preset_sources() -> dict[str, tuple[str, str]]:
    """Where each preset's numbers come from: name → (bandwidth source, latency source)."""
    return {name: (bw, lat) for name, _, bw, lat in _load_presets()}


def preset(name: str) -> Link:
    """The preset link called ``name`` (case does not matter)."""
    links = presets()
    for key, link in links.items():
        if key.lower() == name.lower():
            return link
    raise ValueError(f"no link preset {name!r}: use one of {list(links)}")


def _check(algorithm: str, p: int) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}: use one of {list(ALGORITHMS)}")
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 1:
        raise ValueError(f"p (the number of ranks) must be a whole number >= 1, got {p!r}")


def _terms(algorithm: str, p: int) -> tuple[float, float, float]:
    """(a, b, c) with time = aα + n(bβ + cγ): latency count, and how often a byte is sent / reduced."""
    _check(algorithm, p)
    p = int(p)
    down = p.bit_length() - 1  # lg of p2, the largest power of two <= p
    p2 = 1 << down
    fold = 1 if p > p2 else 0  # extra ranks: fold in (α + nβ, + nγ to reduce) and fold out (α + nβ)
    if algorithm == "ps":
        return 2 * (p - 1), 2 * (p - 1), p - 1
    if algorithm == "ring":
        return 2 * (p - 1), 2 * (p - 1) / p, (p - 1) / p
    if algorithm == "tree":
        up = (p - 1).bit_length()  # ⌈lg p⌉ rounds each way
        return 2 * up, 2 * up, up
    if algorithm == "recursive_doubling":
        return down + 2 * fold, down + 2 * fold, down + fold
    return 2 * down + 2 * fold, 2 * (p2 - 1) / p2 + 2 * fold, (p2 - 1) / p2 + fold  # halving_doubling


def allreduce_time(algorithm: str, nbytes: float | np.ndarray, p: int, link: Link) -> float | np.ndarray:
    """Modelled all-reduce time of n bytes over p ranks (vectorised over ``nbytes``).

    ps  2(p−1)(α + nβ) + (p−1)nγ                 ring  2(p−1)α + 2(p−1)/p·nβ + (p−1)/p·nγ
    tree  2⌈lg p⌉(α + nβ) + ⌈lg p⌉nγ              recursive_doubling  lg p·(α + nβ + nγ)
    halving_doubling  2 lg p·α + 2(p−1)/p·nβ + (p−1)/p·nγ

    ps, ring and tree hold for every p (tree with ⌈lg p⌉ rounds). For p not a power of two, recursive_doubling and
    halving_doubling use the form for p2, the largest power of two below p, plus 2(α + nβ) + nγ for folding the
    extra ranks in and out.
    """
    a, b, c = _terms(algorithm, p)
    t = a * link.alpha + np.asarray(nbytes, dtype=float) * (b * link.beta + c * link.gamma)
    return float(t) if np.ndim(t) == 0 else t


def lower_bound(nbytes: float | np.ndarray, p: int, link: Link) -> float | np.ndarray:
    """The sum of the three lower bounds on any all-reduce of n bytes over p ranks (one port, full duplex).

    Latency ⌈lg p⌉·α: the number of ranks holding a given input's contribution at most doubles per round.
    Bandwidth 2(p−1)/p·nβ: every rank must send (p−1)/p·n bytes and receive as many, twice (Patarasuk & Yuan
    2009; Chan, Heimlich, Purkayastha & van de Geijn 2007). Computation (p−1)/p·nγ: the (p−1)n additions shared
    by p ranks (Chan et al. 2007). No one algorithm reaches all three at once: ring and halving-doubling reach the
    last two, recursive doubling the first.
    """
    _check("ring", p)
    p = int(p)
    n = np.asarray(nbytes, dtype=float)
    t = (p - 1).bit_length() * link.alpha + (p - 1) / p * n * (2 * link.beta + link.gamma)
    return float(t) if np.ndim(t) == 0 else t


def bytes_sent_per_rank(algorithm: str, nbytes: float | np.ndarray, p: int) -> float | np.ndarray:
    """Bytes the busiest rank sends in one all-reduce of n bytes (ring: 2(p−1)/p·n; ps: the master's (p−1)n).

    ring, recursive_doubling and halving_doubling send the same from every rank (for p a power of two); ps and
    tree send most from rank 0 (the master, the root).
    """
    _check(algorithm, p)
    p = int(p)
    p2 = 1 << (p.bit_length() - 1)
    fold = 1 if p > p2 else 0  # a partner of an extra rank also sends it the result
    factor = {
        "ps": p - 1,
        "ring": 2 * (p - 1) / p,
        "tree": (p - 1).bit_length(),
        "recursive_doubling": (p2.bit_length() - 1) + fold,
        "halving_doubling": 2 * (p2 - 1) / p2 + fold,
    }[algorithm]
    sent = factor * np.asarray(nbytes, dtype=float)
    return float(sent) if np.ndim(sent) == 0 else sent


def algbw(nbytes: float | np.ndarray, seconds: float | np.ndarray) -> float | np.ndarray:
    """Algorithm bandwidth n / t in bytes per second, as nccl-tests reports it."""
    return np.asarray(nbytes, dtype=float) / np.asarray(seconds, dtype=float)


def busbw(
    nbytes: float | np.ndarray, seconds: float | np.ndarray, p: int, collective: str = "allreduce"
) -> float | np.ndarray:
    """Bus bandwidth in bytes per second as nccl-tests defines it: algbw · 2(p−1)/p for all-reduce.

    The factor makes the figure comparable with the link's bandwidth whatever p is (reduce_scatter and allgather:
    (p−1)/p, with n the whole gathered size; broadcast and reduce: 1).
    """
    if collective not in BUSBW_FACTORS:
        raise ValueError(f"unknown collective {collective!r}: use one of {list(BUSBW_FACTORS)}")
    return algbw(nbytes, seconds) * BUSBW_FACTORS[collective](p)


def fit_link(sizes: np.ndarray, times: np.ndarray) -> Link:
    """The link (α, β) that fits one-way message times best: t ≈ α + nβ, least squares on relative errors.

    Each equation is divided by its measured time, so a 1 kB message (µs, all α) counts as much as a 64 MB one
    (ms, all β); an unweighted fit lets the large sizes decide alone and often returns α = 0.
    """
    sizes, times = np.asarray(sizes, dtype=float).ravel(), np.asarray(times, dtype=float).ravel()
    if sizes.shape != times.shape:
        raise ValueError(f"sizes and times must have the same length, got {sizes.size} and {times.size}")
    if np.unique(sizes).size < 2:
        raise ValueError("fit_link needs times for at least 2 different message sizes to separate α from β")
    if np.any(times <= 0):
        raise ValueError("every measured time must be > 0 seconds")
    design = np.stack([np.ones_like(sizes), sizes], axis=1) / times[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
    if beta <= 0:
        raise ValueError("the times do not grow with the message size: measure larger messages (≥ 1 MB) too")
    return Link(alpha=max(float(alpha), 0.0), beta=float(beta))  # noise can push α slightly below 0


def crossover(alg_a: str, alg_b: str, p: int, link: Link, lo: float = 1, hi: float = 1e11) -> float | None:
    """The message size in bytes at which two all-reduce algorithms take equal time, or None if not in [lo, hi].

    Both times are affine in n (A + Bn), so they meet once at n = (A_b − A_a) / (B_a − B_b), or never.
    """
    (a_a, b_a, c_a), (a_b, b_b, c_b) = _terms(alg_a, p), _terms(alg_b, p)
    intercept_a, intercept_b = a_a * link.alpha, a_b * link.alpha
    slope_a, slope_b = b_a * link.beta + c_a * link.gamma, b_b * link.beta + c_b * link.gamma
    if slope_a == slope_b:
        return None
    n = (intercept_b - intercept_a) / (slope_a - slope_b)
    return float(n) if lo <= n <= hi else None
