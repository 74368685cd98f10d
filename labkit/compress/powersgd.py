"""PowerSGD (Vogels, Karimireddy & Jaggi 2019): each gradient matrix M ≈ P Qᵀ of rank r, found by one power
iteration warm-started from last step's Q; P and Q are all-reduced (two collectives a step), vectors sent whole."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from labkit import collectives, comm
from labkit.compress.feedback import ErrorFeedback, _whole


class PowerSGD(ErrorFeedback):
    """Rank-r power iteration on each weight matrix, P = MQ then Q = MᵀP̂, two all-reduces a step (Vogels et al. 2019).

    A gradient piece of shape (…, m) is the matrix M (n×m); 1-D pieces (biases) travel whole as float32, inside the
    first all-reduce. Q starts from a seeded normal draw (identical on every worker) and is warm-started from the
    previous step's averaged Q. Needs ``state["shapes"]``, the trainable variables' shapes (the trainer sets it).
    """

    summable = True  # P and Q are all-reduced: exchange delegates to `allreduce`

    def __init__(self, rank: int = 2, error_feedback: bool = True, seed: int = 0) -> None:
        self.rank = _whole(rank, "rank", "the rank r of the approximation, e.g. rank=2")
        self.error_feedback, self.seed = bool(error_feedback), int(seed)
        self._shapes: list[tuple[int, ...]] | None = None  # of the last compress, for decompress

    def _layout(self, shapes, size: int) -> list[tuple[int, int, int, int]]:
        """Per piece: (start, n, m, r), with m = 0 for a vector sent whole."""
        if shapes is None:
            raise ValueError("PowerSGD needs the layer shapes: pass state={'shapes': [...]} (the trainer does)")
        out, start = [], 0
        for shape in shapes:
            n = math.prod(shape)
            rows, m = (n // shape[-1], shape[-1]) if len(shape) >= 2 else (n, 0)
            out.append((start, rows, m, min(self.rank, rows, m)))
            start += n
        if start != size:
            raise ValueError(f"the shapes hold {start} values but the gradient has {size}: pass this model's shapes")
        return out

    def _step(self, grad: np.ndarray, state: dict, mean: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The averaged approximation; ``mean`` is the all-reduce (divided by p), or the identity for one worker."""
        layout, g = self._layout(state.get("shapes"), grad.size), self.corrected(grad, state)
        mats = [(s, g[s : s + n * m].reshape(n, m), r) for s, n, m, r in layout if m]
        vecs = [(s, g[s : s + n]) for s, n, m, _ in layout if not m]
        if "q" not in state:  # the same seed on every worker: the same start
            rng = np.random.default_rng(self.seed)
            state["q"] = [rng.standard_normal((M.shape[1], r)).astype(np.float32) for _, M, r in mats]
        ps = [M @ q for (_, M, _), q in zip(mats, state["q"], strict=True)]
        none = [np.zeros(0, np.float32)]  # a model of vectors only still runs both all-reduces (of nothing)
        first = mean(np.concatenate([v for _, v in vecs] + [p.ravel() for p in ps] + none).astype(np.float32))
        p_hats = [np.linalg.qr(p)[0] for p in self._split(first[sum(v.size for _, v in vecs) :], ps)]
        qs = [M.T @ p_hat for (_, M, _), p_hat in zip(mats, p_hats, strict=True)]
        state["q"] = self._split(mean(np.concatenate([q.ravel() for q in qs] + none).astype(np.float32)), qs)
        out, mine, at = np.empty_like(g), np.empty_like(g), 0
        for s, v in vecs:
            out[s : s + v.size], mine[s : s + v.size], at = first[at : at + v.size], v, at + v.size
        for (s, M, _), p_hat, q, q_avg in zip(mats, p_hats, qs, state["q"], strict=True):
            out[s : s + M.size], mine[s : s + M.size] = (p_hat @ q_avg.T).ravel(), (p_hat @ q.T).ravel()
        self.remember(state, g, mine)  # this worker's own share, P̂ Q_mineᵀ: the average of shares is the result
        return out

    @staticmethod
    def _split(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
        bounds = np.cumsum([0] + [a.size for a in like])
        return [flat[a:b].reshape(x.shape) for a, b, x in zip(bounds[:-1], bounds[1:], like, strict=True)]

    def allreduce(self, grad: np.ndarray, c: comm.Comm, algorithm: str, state: dict) -> tuple[np.ndarray, list]:
        """(1/p) Σ of the rank-r approximations on every rank, and per rank the bytes of each all-reduce."""
        sizes: list[int] = []

        def mean(x: np.ndarray) -> np.ndarray:
            sizes.append(x.nbytes)
            return collectives.allreduce(x, c, algorithm=algorithm) / np.float32(c.size)

        average = self._step(np.asarray(grad, np.float32), state, mean)
        return average, [tuple(sizes)] * c.size

    def compress(self, grad: np.ndarray, state: dict) -> np.ndarray:
        """The one-worker version, for the plain protocol: vectors, P and Q of this worker alone, as float32."""
        sent: list[np.ndarray] = []
        self._step(np.asarray(grad, np.float32), state, lambda x: sent.append(x) or x)
        self._shapes = list(state["shapes"])
        return np.concatenate(sent)

    def decompress(self, payload: np.ndarray, size: int) -> np.ndarray:
        """P̂Qᵀ per matrix (P̂ orthogonalised from P, as the sender did), vectors as sent; shapes of the last compress."""
        out, at = np.empty(size, np.float32), 0
        layout = self._layout(self._shapes, size)
        for s, n, m, _ in layout:
            if not m:
                out[s : s + n], at = payload[at : at + n], at + n
        ps = []
        for _, n, m, r in layout:
            if m:
                ps.append(np.linalg.qr(payload[at : at + n * r].reshape(n, r))[0])
                at += n * r
        for (s, n, m, r), p_hat in zip([x for x in layout if x[2]], ps, strict=True):
            out[s : s + n * m], at = (p_hat @ payload[at : at + m * r].reshape(m, r).T).ravel(), at + m * r
        return out
