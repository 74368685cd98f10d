"""The one rule that splits n items over p: the first n % p parts are one longer (as ``np.array_split`` does).

Collectives cut a buffer into chunks with it; data parallelism cuts a batch, tensor parallelism a weight matrix's
rows or columns, pipeline parallelism the layers and the micro-batches."""

from __future__ import annotations


def bounds(n: int, p: int) -> list[int]:
    """The p + 1 offsets of p parts of n items: part k is ``bounds[k]:bounds[k + 1]``."""
    q, extra = divmod(n, p)
    return [k * q + min(k, extra) for k in range(p + 1)]


def part(n: int, p: int, rank: int) -> slice:
    """The slice of n items that ``rank`` of p owns."""
    q, extra = divmod(n, p)
    start = rank * q + min(rank, extra)
    return slice(start, start + q + (rank < extra))


def stage_layers(n_layers: int, p: int, rank: int) -> range:
    """The layers ``rank`` holds when n_layers are cut into p consecutive stages."""
    if n_layers < p:
        raise ValueError(f"{n_layers} layers cannot fill {p} pipeline stages: use at most {n_layers} ranks")
    return range(n_layers)[part(n_layers, p, rank)]
