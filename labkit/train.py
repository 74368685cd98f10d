"""Train the article's MLP data-parallel: p workers, an all-reduce of their gradients each step, a history to plot.

    from labkit import data, models, train
    x, y = data.load("mnist")
    history = train.train(x, y, p=4, algorithm="ring", epochs=1, test=data.load("mnist", "test"))
    history.loss, history.bytes_sent, history.modelled_seconds      # one number per step

On ``transport="sim"`` the p workers live in this process (`labkit.parallel.data.SimWorkers`); under MPI every
process is one worker::

    mpiexec -n 4 python -m labkit.train --dataset mnist --epochs 1 --out history.json

Each epoch shuffles the training set (seeded), cuts it into global batches of ``batch_size`` and drops the last
``n mod batch_size`` examples (a different few each epoch), so that every worker's shard has the same size: that is
what makes p workers equal one worker with the combined batch.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from labkit import collectives, comm, cost, fault, models
from labkit.parallel import data as dataparallel
from labkit.parallel.data import Compressor
from labkit.progress import Progress

OPTIMIZERS = ("adam", "sgd")
TRANSPORTS = ("sim", "mpi")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the workers, how they communicate, and the optimisation (every default says why)."""

    p: int = 1  # workers; one: the baseline every data-parallel run must equal
    algorithm: str = "ring"  # bandwidth-optimal, 2(p−1)/p·n bytes per rank: what NCCL and Horovod use for gradients
    transport: str = "sim"  # threads on modelled clocks: runs anywhere and counts every byte; "mpi" under mpiexec
    link: cost.Link | None = None  # None: cost.DEFAULT_LINK (10 GbE, 20 µs, 1.25 GB/s), for the modelled time
    epochs: int = 1  # a knob: one epoch already shows the loss fall and costs seconds; the benchmark trains 10
    batch_size: int = 64  # the GLOBAL batch, split evenly over the workers; 64 is where the baseline was measured
    learning_rate: float = 1e-3  # Keras's Adam default, which the article used
    optimizer: str = "adam"  # the article's choice; "sgd" is plain θ ← θ − η ḡ
    seed: int = 0  # one seed for the weights and the shuffling: the same run on sim, MPI and one worker
    compressor: Compressor | None = None  # None: exact float32 gradients (see dataparallel.Compressor)
    lr_schedule: Callable[[int], float] | None = None  # step → learning rate (see `warmup`); None: constant
    timeout: float = 120.0  # seconds a worker may wait for another before the run fails loudly
    checkpoint_dir: str | os.PathLike | None = None  # None: no checkpoints; else one file there (labkit.fault)
    checkpoint_every: int = 0  # 0: a checkpoint after each epoch only; N: also every N steps (lose at most N)
    fail_at: tuple[int, int] | None = None  # (worker, step): that worker dies before that step (fault injection)
    world_size: InitVar[int | None] = None  # another name for p (MPI's), so that code written with it runs

    def __post_init__(self, world_size: int | None) -> None:
        if world_size is not None:
            if world_size != self.p and self.p != 1:
                raise TypeError("pass the number of workers once: p or world_size (they are the same), not both")
            object.__setattr__(self, "p", world_size)
        _whole(self.p, "p", "the number of workers")
        _whole(self.epochs, "epochs", "the number of passes over the training set")
        _whole(self.batch_size, "batch_size", "the global batch, split over the workers")
        if self.algorithm not in collectives.ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}: use one of {list(collectives.ALGORITHMS)}")
        # "sim": workers in this process; "mpi": one worker a process, under mpiexec ("shm" is not a trainer's)
        comm.check_transport(self.transport, TRANSPORTS, "train")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: use one of {OPTIMIZERS}")
        if self.batch_size % self.p:
            b, p = self.batch_size, self.p
            sizes = [s for s in (b - b % p, b + p - b % p) if s > 0]
            raise ValueError(
                f"batch_size={b} cannot be split evenly over {p} workers: use a multiple of {p}, such as "
                + " or ".join(map(str, sizes))
            )
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a number > 0, got {self.learning_rate!r}")
        if self.link is not None and not isinstance(self.link, cost.Link):
            raise TypeError(f"link must be a labkit.cost.Link such as cost.preset('10 GbE'), got {self.link!r}")
        if self.compressor is not None and not isinstance(self.compressor, Compressor):
            raise TypeError("compressor needs compress(grad, state) and decompress(payload, size) methods")
        if self.lr_schedule is not None and not callable(self.lr_schedule):
            raise TypeError("lr_schedule must be a function step -> learning rate, such as train.warmup(1e-3, 100)")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be a whole number of steps >= 0, got {self.checkpoint_every!r}")
        if self.checkpoint_every and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every needs a checkpoint_dir to write to: pass checkpoint_dir='checkpoints'")
        if self.fail_at is not None:
            fail = tuple(self.fail_at)
            if len(fail) != 2 or not all(isinstance(v, int) and v >= 0 for v in fail) or fail[0] >= self.p:
                raise ValueError(
                    f"fail_at must be (worker, step) with 0 <= worker < p={self.p} and step >= 0, got {self.fail_at!r}"
                )


def _whole(value: Any, name: str, what: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} ({what}) must be a whole number >= 1, got {value!r}")


def warmup(peak: float, steps: int) -> Callable[[int], float]:
    """Linear warm-up to ``peak`` over ``steps`` steps, then constant (Goyal et al. 2017, for large global batches)."""
    return lambda step: peak * min(1.0, (step + 1) / steps)


@dataclass
class History:
    """What a run produced: per step, per epoch, and the final weights (of this process's worker, or replica 0)."""

    config: TrainConfig
    nparams: int
    steps_per_epoch: int
    rank: int = 0
    loss: list[float] = field(default_factory=list)  # per step: mean loss over the global batch
    bytes_sent: list[int] = field(default_factory=list)  # per step: bytes the busiest worker sent
    modelled_seconds: list[float] = field(default_factory=list)  # per step: communication time on config.link
    comm_seconds: list[float] = field(default_factory=list)  # per step: measured wall time of the exchange
    step_seconds: list[float] = field(default_factory=list)  # per step: measured wall time of the whole step
    epoch_loss: list[float] = field(default_factory=list)  # mean step loss of each epoch
    epoch_accuracy: list[float] = field(default_factory=list)  # test accuracy after each epoch (if test data)
    epoch_seconds: list[float] = field(default_factory=list)  # wall time of each epoch's training (no evaluation)
    weights: list[np.ndarray] = field(default_factory=list, repr=False)  # final, as model.get_weights() gives them
    model: Any = field(default=None, repr=False)  # the live Keras model (replica 0 on sim), for callbacks
    checksums: list[str] = field(default_factory=list)  # sha256 of each worker's final weights

    @property
    def identical(self) -> bool:
        """True if every worker ended with bit-identical weights."""
        return len(set(self.checksums)) == 1

    def as_dict(self) -> dict:
        """Everything but the weights, as JSON-ready values."""
        skip = ("config", "weights", "model")
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        config = dataclasses.asdict(self.config)
        config["link"] = repr(self.config.link or cost.DEFAULT_LINK)
        config["compressor"] = type(self.config.compressor).__name__ if self.config.compressor else None
        config["lr_schedule"] = getattr(self.config.lr_schedule, "__name__", None)
        config["checkpoint_dir"] = None if self.config.checkpoint_dir is None else str(self.config.checkpoint_dir)
        return out | {"config": config, "identical": self.identical}


def shuffled(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n training examples in ``epoch`` (the same on every worker)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _check_data(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x = models.flatten(x)  # raises, naming the shapes it accepts
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(
            f"y must be integer labels of shape (n,), got shape {y.shape}: for one-hot rows use y.argmax(1)"
        )
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} images but y has {len(y)} labels: pass one label per image")
    if y.dtype.kind not in "iu":
        raise ValueError(f"y must hold integer class labels, got {y.dtype}: convert with y.astype(int)")
    return x, y.astype(np.int64)


def train(
    x: Any,
    y: Any,
    config: TrainConfig | None = None,
    *,
    test: tuple[Any, Any] | None = None,
    model_fn: Callable[[int], Any] | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    resume: bool = False,
    **overrides: Any,
) -> History:
    """Train ``model_fn(seed)`` (the article's MLP by default) on (x, y) data-parallel; the `History` of the run.

    ``overrides`` replace fields of ``config`` (``train(x, y, p=4)``). A callback is any object with
    ``on_step(history)`` and/or ``on_epoch(history)`` (live loss curves); ``progress`` adds the text bar (rank 0
    only under MPI). ``test=(x_test, y_test)`` adds the test accuracy after each epoch.

    With ``checkpoint_dir`` set, a checkpoint (weights, optimizer state, position, history) is written there after
    each epoch (and every ``checkpoint_every`` steps), by rank 0 only under MPI. ``resume=True`` continues from it
    (from the start if there is none), with the same or another number of workers: the global batch, hence the
    sequence of updates, stays the same. A compressor's per-worker state (error-feedback residuals, PowerSGD's Q)
    is not saved: a resumed compressed run starts it from zero, so it is close to, not bit-identical with, an
    uninterrupted one.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    x, y = _check_data(x, y)
    test = _check_data(*test) if test is not None else None
    if config.batch_size > len(x):
        raise ValueError(f"batch_size={config.batch_size} is larger than the {len(x)} training examples: use fewer")
    model_fn = model_fn or models.article_mlp
    workers = (dataparallel.SimWorkers if config.transport == "sim" else dataparallel.MPIWorker)(model_fn, config)
    steps = len(x) // config.batch_size
    nparams = sum(int(np.prod(w.shape)) for w in workers.model.trainable_variables)
    h = History(config, nparams, steps, rank=workers.rank, model=workers.model)
    callbacks = [*callbacks, *([Progress()] if progress and workers.rank == 0 else [])]
    settings = {k: getattr(config, k) for k in fault.MUST_MATCH if k != "n_train"} | {"n_train": len(x)}
    done = _restore(workers, h, settings) if resume and config.checkpoint_dir is not None else 0

    def save(step: int) -> None:
        if config.checkpoint_dir is not None and workers.rank == 0:  # replicas are identical: one writer is enough
            replica = _replicas(workers)[0]
            record = {"p": config.p, "algorithm": config.algorithm} | settings
            lists = {k: v for k, v in h.as_dict().items() if isinstance(v, list) and k != "checksums"}
            ckpt = fault.Checkpoint(step, replica.model.get_weights(), replica.optimizer_state(), record, lists)
            fault.save_checkpoint(config.checkpoint_dir, ckpt)

    for epoch in range(done // steps, config.epochs):
        order, start = shuffled(len(x), config.seed, epoch), time.perf_counter()
        for s in range(done % steps if epoch == done // steps else 0, steps):
            begin, idx = time.perf_counter(), order[s * config.batch_size : (s + 1) * config.batch_size]
            step = epoch * steps + s
            if config.fail_at is not None and step == config.fail_at[1]:
                fault.inject_failure(config, workers.rank, nparams)
            lr = config.lr_schedule(step) if config.lr_schedule else None
            loss, nbytes, modelled, seconds = workers.step(x[idx], y[idx], step, lr)
            h.loss.append(loss)
            h.bytes_sent.append(nbytes)
            h.modelled_seconds.append(modelled)
            h.comm_seconds.append(seconds)
            h.step_seconds.append(time.perf_counter() - begin)
            for cb in callbacks:
                getattr(cb, "on_step", lambda h: None)(h)
            if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and s + 1 < steps:
                save(step + 1)
        h.epoch_seconds.append(max(workers.gather(time.perf_counter() - start)))  # the slowest worker's
        h.epoch_loss.append(float(np.mean(h.loss[-steps:])))
        if test is not None:
            h.epoch_accuracy.append(workers.accuracy(*test))
        for cb in callbacks:
            getattr(cb, "on_epoch", lambda h: None)(h)
        save((epoch + 1) * steps)
    h.weights, h.checksums = workers.model.get_weights(), workers.checksums()
    return h


def _replicas(workers: Any) -> list[dataparallel.Replica]:
    return list(getattr(workers, "replicas", None) or [workers.replica])


def _restore(workers: Any, h: History, settings: dict) -> int:
    """Load the checkpoint of ``h.config.checkpoint_dir`` into every replica and ``h``; the steps it had done."""
    ckpt = fault.load_checkpoint(h.config.checkpoint_dir)
    if ckpt is None:
        return 0  # nothing saved yet: start from the beginning, so that --resume is always safe to pass
    shapes = [w.shape for w in workers.model.get_weights()]
    fault.check_resumable(ckpt, settings, shapes, h.config.checkpoint_dir)
    for replica in _replicas(workers):
        replica.model.set_weights(ckpt.weights)
        replica.set_optimizer_state(ckpt.optimizer)
    for name, values in ckpt.history.items():
        setattr(h, name, list(values))
    return ckpt.step


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.train``: the command line, in `labkit.train_cli`."""
    from labkit.train_cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
