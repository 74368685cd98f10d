"""Large models at work: the gradient all-reduce overlapped with the backward pass, and serving (KV cache, tensor
parallel weights and per-token traffic).

Overlap follows PyTorch DDP (Li et al. 2020): gradients are grouped into buckets in the order the backward pass
produces them (last layer first), and each bucket's all-reduce starts as soon as its gradients are ready and the
previous bucket's all-reduce is done (one communication stream). Serving follows the Megatron layout (Shoeybi et
al. 2019): two all-reduces per transformer layer, each of batch × h values per generated token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labkit import collectives, comm, cost
from labkit.comm import EagerComm, Run
from labkit.i18n import plot_tr

# --- overlap of the gradient all-reduce with the backward pass -------------------------------------------------


def _check_layers(backward: Sequence[float], grad_bytes: Sequence[float]) -> None:
    if len(backward) != len(grad_bytes) or not len(backward):
        raise ValueError(
            f"give one backward time and one gradient size per layer: got {len(backward)} and {len(grad_bytes)}"
        )
    if any(not t >= 0 for t in backward) or any(not b > 0 for b in grad_bytes):
        raise ValueError("backward times must be >= 0 seconds and gradient sizes > 0 bytes")


def buckets(grad_bytes: Sequence[float], bucket_bytes: float) -> list[list[int]]:
    """Layer indices grouped into all-reduce buckets in backward order (last layer first).

    As DDP fills them: layers join the open bucket until it holds at least ``bucket_bytes``; then it is closed.
    """
    if not bucket_bytes > 0:
        raise ValueError(f"bucket_bytes must be > 0 (DDP's default is 25 MB), got {bucket_bytes!r}")
    groups: list[list[int]] = [[]]
    size = 0.0
    for layer in reversed(range(len(grad_bytes))):
        groups[-1].append(layer)
        size += grad_bytes[layer]
        if size >= bucket_bytes:
            groups.append([])
            size = 0.0
    return [g for g in groups if g]


def step_time(
    backward: Sequence[float],
    grad_bytes: Sequence[float],
    bucket_bytes: float,
    p: int,
    link: cost.Link,
    overlap: bool = True,
    launch: float = 0.0,
) -> float:
    """Seconds of a backward pass plus the ring all-reduce of its gradients, bucket by bucket.

    Without overlap: Σ backward + Σ_k T_k, with T_k the ring all-reduce time of bucket k. With overlap, bucket k's
    all-reduce starts at max(its gradients ready, bucket k−1 done) + ``launch`` (the hand-off to the communication
    stream) and the step ends with the last one.
    """
    _check_layers(backward, grad_bytes)
    groups = buckets(grad_bytes, bucket_bytes)
    comm_times = [cost.allreduce_time("ring", sum(grad_bytes[i] for i in g), p, link) for g in groups]
    if not overlap:
        return float(sum(backward) + sum(comm_times))
    ready = done = 0.0
    for group, t in zip(groups, comm_times, strict=True):
        ready += sum(backward[i] for i in group)
        done = max(ready, done) + launch + t
    return max(done, ready)


class _Stream(EagerComm):
    """The communication streams of a sim run as a world of their own: ranks ``offset`` … ``offset + size − 1``.

    Messages go through the parent `Comm`, so they are traced and timed as usual; ``allgather_object`` is the
    parent's (every rank of the parent, the compute streams too, must join it: they do, once per bucket).
    """

    def __init__(self, parent, offset: int, size: int) -> None:
        self.parent, self.offset, self.size, self.rank = parent, offset, size, parent.rank - offset

    def send(self, x, dst: int, tag: int = 0, label: str = "") -> None:
        self.parent.send(x, self._peer(dst, "dst") + self.offset, tag, label)

    def recv(self, src: int, tag: int = 0, label: str = "") -> np.ndarray:
        return self.parent.recv(self._peer(src, "src") + self.offset, tag, label)

    def recv_reduce(self, out, src: int, tag: int = 0, op: str = "sum", label: str = "", acc=None) -> None:
        self.parent.recv_reduce(out, self._peer(src, "src") + self.offset, tag, op, label, acc=acc)  # keeps the nγ

    def allgather_object(self, obj):
        return self.parent.allgather_object(obj)[self.offset : self.offset + self.size]

    def barrier(self) -> None:
        self.allgather_object(None)


def simulate_step(
    backward: Sequence[float],
    grad_bytes: Sequence[int],
    bucket_bytes: float,
    p: int,
    link: cost.Link,
    overlap: bool = True,
) -> Run:
    """The backward pass and bucketed ring all-reduces run on the sim; ``run.values`` are the summed gradients.

    Without overlap: p ranks compute every layer, then all-reduce bucket after bucket. With overlap each worker is
    two sim ranks — a compute stream (ranks 0 … p−1) and a communication stream (ranks p … 2p−1) — and the
    compute stream hands each bucket over with a 0-byte message, which costs α: `step_time` with launch = α.
    Gradient sizes are bytes of float32; rank r's gradients are all r + 1, so every sum is p(p + 1)/2.
    """
    _check_layers(backward, grad_bytes)
    if any(int(b) % 4 for b in grad_bytes):
        raise ValueError("gradient sizes must be whole float32 values: multiples of 4 bytes")
    groups = buckets(grad_bytes, bucket_bytes)
    sizes = [sum(int(grad_bytes[i]) // 4 for i in g) for g in groups]

    def compute(c, worker: int) -> None:
        for k, group in enumerate(groups):
            for layer in group:
                c.compute(backward[layer], label=f"backward of layer {layer}")
            if overlap:
                c.send(np.zeros(0, np.float32), worker + p, tag=1, label=f"bucket {k} ready")
                c.allgather_object(None)  # joins the shape check that bucket k's all-reduce makes

    def reduce_buckets(c, worker: int, stream) -> list[np.ndarray]:
        out = []
        for k, n in enumerate(sizes):
            if overlap:
                c.recv(worker, tag=1, label=f"bucket {k} ready")
            out.append(collectives.allreduce(np.full(n, worker + 1.0, np.float32), stream, "ring"))
        return out

    def worker_fn(c):
        if not overlap:
            compute(c, c.rank)
            return reduce_buckets(c, c.rank, c)
        if c.rank < p:
            return compute(c, c.rank)
        return reduce_buckets(c, c.rank - p, _Stream(c, p, p))

    return comm.run(worker_fn, 2 * p if overlap else p, link=link)


# --- serving: KV cache and tensor-parallel decoding --------------------------------------------------------------


@dataclass(frozen=True)
class Decoder:
    """A decoder-only LLM as served: L layers of width h, a query heads, kv_heads key/value heads, Ψ parameters."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int  # = heads without grouped-query attention; fewer with it (Ainslie et al. 2023)
    params: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


#: Touvron et al. 2023 (Llama 2), Table 1 and the model cards: the 70B model uses grouped-query attention.
LLAMA2 = {
    "Llama-2-7B": Decoder(layers=32, hidden=4096, heads=32, kv_heads=32, params=6.74e9),
    "Llama-2-70B": Decoder(layers=80, hidden=8192, heads=64, kv_heads=8, params=68.98e9),
}


def kv_cache_bytes(
    layers: int, kv_heads: int, head_dim: int, tokens: int, batch: int = 1, bytes_per_value: int = 2
) -> int:
    """2 · layers · kv_heads · head_dim · tokens · batch · bytes: a key and a value per head, layer and token."""
    for name, value in (("layers", layers), ("kv_heads", kv_heads), ("head_dim", head_dim), ("batch", batch)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if not isinstance(tokens, (int, np.integer)) or tokens < 0:
        raise ValueError(f"tokens must be a whole number >= 0, got {tokens!r}")
    if bytes_per_value not in (1, 2, 4):
        raise ValueError(f"bytes_per_value must be 1 (int8/fp8), 2 (fp16/bf16) or 4 (fp32), got {bytes_per_value!r}")
    return 2 * layers * kv_heads * head_dim * tokens * batch * bytes_per_value


def tp_weights_per_device(params: float, t: int, bytes_per_value: int = 2) -> float:
    """Ψ · bytes / t: the weights each of t tensor-parallel devices holds (Megatron splits every matrix)."""
    if not params > 0 or not isinstance(t, (int, np.integer)) or t < 1:
        raise ValueError(f"need params > 0 and a whole number of devices t >= 1, got {params!r} and {t!r}")
    return params * bytes_per_value / t


def decode_traffic(model: Decoder, t: int, batch: int = 1, bytes_per_value: int = 2) -> float:
    """Bytes each device sends per generated token: 2 ring all-reduces per layer of batch × h values, 2(t−1)/t each."""
    if not isinstance(t, (int, np.integer)) or t < 1 or model.heads % t:
        raise ValueError(f"t={t} must divide the {model.heads} attention heads: each device computes whole heads")
    return 2 * model.layers * 2 * (t - 1) / t * batch * model.hidden * bytes_per_value


def decode_comm_seconds(model: Decoder, t: int, link: cost.Link, batch: int = 1, bytes_per_value: int = 2) -> float:
    """Seconds of all-reduce per generated token: 2L ring all-reduces of batch·h values over t devices."""
    decode_traffic(model, t, batch, bytes_per_value)  # checks t
    return 2 * model.layers * cost.allreduce_time("ring", batch * model.hidden * bytes_per_value, t, link)


def plot_kv_cache(models: dict[str, Decoder] | None = None, batch: int = 1, device_gb: float = 80.0):
    """KV-cache GiB against context length for each model, with its fp16 weights as a dashed line of the same colour.

    Returns (figure, {name: [bytes, …]}).
    """
    from matplotlib.figure import Figure  # no pyplot: figures are not kept alive by a global registry

    models = LLAMA2 if models is None else models
    tokens = [2**k for k in range(8, 18)]  # 256 … 131,072 tokens
    fig = Figure(figsize=(6.5, 3.4), dpi=80)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.88)
    curves = {}
    for i, (name, m) in enumerate(models.items()):
        color = f"C{i}"
        curves[name] = [kv_cache_bytes(m.layers, m.kv_heads, m.head_dim, n, batch) for n in tokens]
        ax.plot(
            tokens,
            [b / 2**30 for b in curves[name]],
            "o-",
            color=color,
            markersize=3,
            label=plot_tr("{name} KV cache", name=name),
        )
        ax.axhline(m.params * 2 / 2**30, color=color, linestyle="--", label=plot_tr("{name} fp16 weights", name=name))
    ax.axhline(device_gb * 1e9 / 2**30, color="0.4", linestyle=":", label=plot_tr("one {gb:g} GB device", gb=device_gb))
    ax.set(xscale="log", yscale="log", xlabel=plot_tr("context length (tokens per sequence)"), ylabel="GiB")
    if batch > 1:
        ax.set_title(plot_tr("KV cache in fp16, batch of {batch} sequences", batch=batch))
    else:
        ax.set_title(plot_tr("KV cache in fp16, batch of {batch} sequence", batch=batch))
    ax.legend(fontsize=7)
    return fig, curves
