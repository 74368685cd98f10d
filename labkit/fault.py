"""Fault tolerance: atomic checkpoints, workers that die, stragglers, and what a parameter server or a ring survives.

The article (§2) claims 容错性 — "when one node fails, the other nodes' results keep the model stable" — without a
mechanism. These are the mechanisms real systems use, each small enough to read (TensorFlow is not imported here:
the shm ranks that import this module stay light):

- `save_checkpoint` / `load_checkpoint`: a replica's weights, its optimizer state, where training stopped and the
  history so far, in one file that is replaced atomically (``labkit.train``'s ``checkpoint_dir=`` and ``resume=``).
- `logreg_worker`: a NumPy data-parallel step whose rank ``fail_rank`` really dies (SIGKILL) on real processes.
- `straggler_time` / `straggler_closed_form`: how long each all-reduce takes when one rank starts late.
- `simple_ps_with_deadline`: a parameter server that goes on with the gradients that arrived (Chen et al. 2016).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labkit import collectives, comm, cost
from labkit.comm import CommError
from labkit.i18n import plot_tr, tr

CHECKPOINT = "checkpoint.npz"  # one file a directory: the newest state replaces the previous one
MUST_MATCH = ("seed", "batch_size", "optimizer", "learning_rate", "n_train")  # what fixes the sequence of updates


@dataclass
class Checkpoint:
    """A training state: how many steps are done, one replica's weights and optimizer variables, the run so far."""

    step: int  # global steps done: training continues at epoch step // steps_per_epoch, step step % steps_per_epoch
    weights: list[np.ndarray]  # model.get_weights()
    optimizer: list[np.ndarray]  # Keras 3 optimizer.variables: iteration, learning rate, then Adam's m and v
    config: dict  # the settings that wrote it (MUST_MATCH, and p, algorithm for the record)
    history: dict  # labkit.train.History's per-step and per-epoch lists up to ``step``


def _write(f: Any, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays to an open file (a seam: tests replace it with a write that fails half-way)."""
    np.savez(f, **arrays)


def save_checkpoint(directory: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``directory/checkpoint.npz`` atomically: the old file stays whole until the new one is.

    The data go to a temporary file in the same directory, are flushed to disk (fsync), then ``os.replace`` swaps
    the name in one step (POSIX rename is atomic). A crash before the swap leaves the previous checkpoint as it was
    and no temporary file behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"step": ckpt.step, "config": ckpt.config, "history": ckpt.history}
    arrays = {"meta": np.array(json.dumps(meta))}  # a str array: loads without pickle
    arrays |= {f"w{i:03d}": np.asarray(w) for i, w in enumerate(ckpt.weights)}
    arrays |= {f"o{i:03d}": np.asarray(v) for i, v in enumerate(ckpt.optimizer)}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, arrays)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, directory / CHECKPOINT)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return directory / CHECKPOINT


def load_checkpoint(directory: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint in ``directory``, or None if there is none yet."""
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        weights = [z[k] for k in sorted(k for k in z.files if k.startswith("w"))]
        optimizer = [z[k] for k in sorted(k for k in z.files if k.startswith("o"))]
    return Checkpoint(meta["step"], weights, optimizer, meta["config"], meta["history"])


def check_resumable(ckpt: Checkpoint, settings: dict, shapes: Sequence[tuple], where: Any) -> None:
    """Raise ValueError, naming the fix, unless ``ckpt`` can continue a run with these settings and weight shapes."""
    fresh = tr("or start afresh with resume=False (or another checkpoint_dir than {where!r})", where=str(where))
    for key in MUST_MATCH:
        if (was := ckpt.config.get(key)) != (now := settings.get(key)):
            why = tr(
                "the checkpoint was written with {key}={was!r} but this run has {key}={now!r}: pass {key}={was!r} "
                "to continue it, {fresh}",
                **dict(key=key, was=was, now=now, fresh=fresh),
            )
            raise ValueError(why)
    if (saved := [tuple(w.shape) for w in ckpt.weights]) != (here := [tuple(s) for s in shapes]):
        why = tr(
            "the checkpoint holds weights of shapes {saved} but this model has {here}: resume with the model that "
            "wrote it (the same model_fn), {fresh}",
            **dict(saved=saved, here=here, fresh=fresh),
        )
        raise ValueError(why)


def inject_failure(config: Any, rank: int, nparams: int) -> None:
    """Fault injection: worker ``config.fail_at[0]`` dies now, before its exchange of step ``config.fail_at[1]``.

    Under MPI the process of that rank is killed (SIGKILL: no clean-up, no goodbye, as when a machine fails); the
    others carry on into the all-reduce and wait for it. On sim the step's all-reduce runs without that rank (it
    returns silently) and the survivors' `CommError` is raised.
    """
    dead, step = config.fail_at
    if config.transport == "mpi":
        if rank == dead:
            said = tr("labkit: fault injection: rank {r} (pid {pid}) dies at step {s}", r=dead, pid=os.getpid(), s=step)
            print(said, file=sys.stderr)
            _die()
        return

    def exchange(c: comm.Comm) -> None:
        if c.rank != dead:
            collectives.allreduce(np.zeros(nparams, np.float32), c, algorithm=config.algorithm)

    try:
        comm.run(exchange, config.p, "sim", config.link, config.timeout)
    except CommError as e:
        why = tr("worker {r} died at step {s} (fault injection); the others: {e}", r=dead, s=step, e=e)
        raise CommError(why) from e
    raise CommError(tr("worker {r}, the only one, died at step {s} (fault injection)", r=dead, s=step))


def _die() -> None:
    """End this process at once, as a crash does (no exception handlers, no atexit, no MPI_Finalize)."""
    sys.stderr.flush()
    sys.stdout.flush()
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # pragma: no cover - Windows: no SIGKILL


# --- a small data-parallel job to kill on real processes ----------------------------------------------------------


def logreg_gradient(w: np.ndarray, x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """(1/n) Σ_i x_i (σ(x_i·w) − y_i) over the given rows: their share of the mean logistic-loss gradient."""
    return x.T @ (1.0 / (1.0 + np.exp(-(x @ w))) - y) / n


def logreg_worker(
    c: comm.Comm,
    x: np.ndarray,
    y: np.ndarray,
    steps: int = 20,
    lr: float = 0.5,
    fail_rank: int | None = None,
    fail_step: int = 0,
    algorithm: str = "ring",
) -> np.ndarray | None:
    """Data-parallel logistic regression (NumPy): rank c.rank's shard, an all-reduce a step; the final weights.

    Rank ``fail_rank`` dies before its all-reduce of step ``fail_step``: on real processes (shm, MPI) it is
    killed with SIGKILL; on sim, where ranks are threads that cannot be killed, it returns None silently.
    """
    rows = np.array_split(np.arange(len(x)), c.size)[c.rank]
    w = np.zeros(x.shape[1])
    for step in range(steps):
        g = logreg_gradient(w, x[rows], y[rows], len(x))  # the shares add up to the full-batch gradient
        if c.rank == fail_rank and step == fail_step:
            if type(c).__name__ == "SimComm":
                return None
            _die()
        w = w - lr * collectives.allreduce(g, c, algorithm=algorithm)
    return w


def logreg_reference(x: np.ndarray, y: np.ndarray, steps: int = 20, lr: float = 0.5) -> np.ndarray:
    """The same training on one process with the full batch: what every data-parallel run must equal."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        w = w - lr * logreg_gradient(w, x, y, len(x))
    return w


# --- stragglers ---------------------------------------------------------------------------------------------------


def straggler_time(
    algorithm: str, nbytes: int, p: int, delay: float, slow_rank: int = 1, link: cost.Link | None = None
) -> float:
    """Modelled seconds (sim) until every rank holds the sum, when ``slow_rank`` joins ``delay`` seconds late."""
    if not 0 <= slow_rank < p:
        raise ValueError(f"slow_rank={slow_rank!r} is not a rank of a world of {p}: use 0..{p - 1}")
    x = np.ones(nbytes // 4, np.float32)

    def step(c: comm.Comm) -> None:
        if c.rank == slow_rank:
            c.compute(delay, "straggler")
        collectives.allreduce(x, c, algorithm=algorithm)

    return comm.run(step, p, "sim", link).time


def straggler_closed_form(
    algorithm: str, nbytes: int, p: int, delay: float, slow_rank: int = 1, link: cost.Link | None = None
) -> float:
    """T(algorithm) + the part of the delay that is not hidden (p a power of two, nbytes divisible by 4p).

    Ring, tree, recursive doubling and halving-doubling: every rank needs data that passes through the slow one
    before it can finish, so the whole delay adds: T + d. The parameter server receives from ranks 1, 2, … in
    turn; rank r's message is wanted only after r − 1 others, each costing α + nβ + nγ, so that much delay is free:
    T + max(0, d − (r − 1)(α + nβ + nγ)) for r ≥ 1, and T + d when the server itself is late.
    """
    link = link or cost.DEFAULT_LINK
    total = float(cost.allreduce_time(algorithm, nbytes, p, link))
    if algorithm != "ps" or slow_rank == 0:
        return total + delay
    slack = (slow_rank - 1) * (float(link.message_time(nbytes)) + nbytes * link.gamma)
    return total + max(0.0, delay - slack)


def plot_stragglers(nbytes: int, p: int, delays: Sequence[float], slow_rank: int = 1, link: cost.Link | None = None):
    """A figure: the simulated all-reduce time of each algorithm against one rank's delay (ms), with T + d dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.subplots()
    ms = np.asarray(delays) * 1e3
    for name in collectives.ALGORITHMS:
        times = [straggler_time(name, nbytes, p, d, slow_rank, link) * 1e3 for d in delays]
        ax.plot(ms, times, marker="o", markersize=3, label=name)
    base = min(float(cost.allreduce_time(a, nbytes, p, link or cost.DEFAULT_LINK)) for a in collectives.ALGORITHMS)
    ax.plot(ms, base * 1e3 + ms, "k--", linewidth=0.8, label=plot_tr("fastest T + delay"))
    title = plot_tr("One straggler (rank {r}) in a {p}-rank all-reduce of {mb:g} MB", r=slow_rank, p=p, mb=nbytes / 1e6)
    ax.set(title=title, xlabel=plot_tr("delay of the slow rank (ms)"), ylabel=plot_tr("all-reduce completion (ms)"))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --- what survives a dead node ------------------------------------------------------------------------------------


def simple_ps_with_deadline(
    grad: np.ndarray, c: comm.Comm, compute_s: Sequence[float], deadline: float
) -> tuple[np.ndarray, list[int]] | None:
    """Parameter server (rank 0) that averages only the gradients ready by ``deadline``: (average, ranks used).

    Not used in practice as is, but the idea of backup workers (Chen et al. 2016): a synchronous step need not wait
    for every worker. Rank r computes for ``compute_s[r]`` modelled seconds (``math.inf``: it is dead, and never
    sends). A real server runs a timer; in this teaching version every rank knows the declared times, so the server
    simply does not wait for ranks that cannot make the deadline and the late ones do not send. Rank 0 must live.
    """
    on_time = [r for r in range(c.size) if compute_s[r] <= deadline]
    if 0 not in on_time:
        raise ValueError(f"the server (rank 0) must make the deadline: compute_s[0]={compute_s[0]!r} > {deadline!r}")
    if compute_s[c.rank] == float("inf"):
        return None  # a dead worker does nothing at all
    c.compute(compute_s[c.rank], "gradient")  # a late worker still computes; its gradient is dropped
    if c.rank == 0:
        total = np.array(grad, dtype=np.float32)
        for r in on_time[1:]:
            c.recv_reduce(total, r, label="gradient")
        average = total / np.float32(len(on_time))
        for r in range(1, c.size):
            if compute_s[r] != float("inf"):
                c.send(average, r, label="average")
        return average, on_time
    if c.rank in on_time:
        c.send(np.asarray(grad, np.float32), 0, label="gradient")
    return c.recv(0, label="average"), on_time


# --- Keras's own checkpoint-and-resume ----------------------------------------------------------------------------


class Interrupt(RuntimeError):
    """Raised by `backup_fit`'s ``interrupt_at``: a crash at the start of an epoch."""


def backup_fit(
    x: Any,
    y: Any,
    backup_dir: str | os.PathLike,
    epochs: int = 4,
    interrupt_at: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[Any, list[int]]:
    """The article's MLP fitted by Keras with ``keras.callbacks.BackupAndRestore``: (model, epochs this call ran).

    ``interrupt_at=e`` raises `Interrupt` as epoch e begins; calling again with the same ``backup_dir`` resumes at
    epoch e from the backup written after epoch e − 1 (weights, optimizer state, epoch counter). No shuffling, so
    the batches do not depend on TensorFlow's random state, and the resumed fit equals an uninterrupted one.
    """
    from labkit import import_tensorflow, models

    keras = import_tensorflow().keras
    ran: list[int] = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if epoch == interrupt_at:
                raise Interrupt(tr("interrupted as epoch {epoch} began", epoch=epoch))
            ran.append(epoch)

    model = models.compile_article(models.article_mlp(seed))
    callbacks = [keras.callbacks.BackupAndRestore(str(backup_dir)), Watch()]
    model.fit(models.flatten(x), y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0, callbacks=callbacks)
    return model, ran
