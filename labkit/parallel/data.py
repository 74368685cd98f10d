"""Data-parallel SGD: every worker holds the same model, computes a gradient on its shard, the gradients are averaged.

One step on p workers with a global batch of B examples, each worker taking b = B/p of them:

    g_r = ∇θ (1/b) Σ_{i ∈ shard r} L(x_i, y_i)        on worker r, with tf.GradientTape
    ḡ   = (1/p) Σ_r g_r = ∇θ (1/B) Σ_{i ∈ batch} L      one all-reduce of the flattened gradients, divided by p
    θ   ← optimizer(θ, ḡ)                              on every worker, with identical optimizer state

The middle line is why p workers equal one worker with the combined batch: the mean of p equal-sized shard means is
the batch mean (up to float rounding). Every worker applies the same ḡ to the same θ, so the replicas never drift.

Two ways to run the workers, one `exchange`:

- `SimWorkers`: p replicas (model + optimizer each) in this process. Their gradients are computed one after the
  other in the calling thread (TensorFlow already spreads each one over every core, so p Keras threads would not be
  faster), then only the exchange runs on p simulated ranks (`labkit.comm.run`, transport ``"sim"``), one run per
  step: its trace gives the bytes sent, its clock the modelled communication time of that step alone.
- `MPIWorker`: this process is one worker of ``mpiexec -n p``; the same `exchange` runs on `labkit.comm.from_mpi`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from labkit import collectives, comm, cost, import_tensorflow
from labkit.compress.gradients import Float16  # noqa: F401  (the protocol's reference compressor, kept importable here)
from labkit.parallel.exchange import Compressor, exchange, exchange_time  # noqa: F401 (the trainer's, re-exported)

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow, whose start-up messages import_tensorflow keeps quiet)


def weights_vector(model: keras.Model) -> np.ndarray:
    """Every weight of the model, flattened and concatenated (in the model's dtype: float32 unless Keras's floatx
    was set to float64 before the model was built)."""
    weights = model.get_weights()
    return np.concatenate([np.ravel(w) for w in weights]).astype(np.result_type(*weights), copy=False)


def checksum(model: keras.Model) -> str:
    """sha256 of the model's weights as stored: equal checksums mean bit-identical replicas."""
    return hashlib.sha256(weights_vector(model).tobytes()).hexdigest()


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Keras's Adam (the article's) or plain SGD (θ ← θ − η ḡ)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}: use 'adam' or 'sgd'")


class Replica:
    """One worker's model and optimizer: gradients of its shard as one flat vector, updates from one flat vector."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.variables = list(model.trainable_variables)
        self.sizes = [int(np.prod(v.shape)) for v in self.variables]
        optimizer.build(self.variables)  # its state (Adam's m and v) exists, zero, before the first step
        loss_fn = keras.losses.SparseCategoricalCrossentropy()  # mean over the shard

        @tf.function(reduce_retracing=True)
        def gradient(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, self.variables)
            return loss, tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)

        @tf.function
        def apply(flat):
            pieces = tf.split(flat, self.sizes)
            optimizer.apply(
                [tf.reshape(g, v.shape) for g, v in zip(pieces, self.variables, strict=True)], self.variables
            )

        @tf.function(reduce_retracing=True)
        def predict(x):
            return tf.argmax(model(x, training=False), axis=1)

        self._gradient, self._apply, self._predict = gradient, apply, predict

    def gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean loss, flat float32 gradient of the mean loss) on one shard."""
        loss, flat = self._gradient(x, y)
        return float(loss), flat.numpy()

    def apply(self, flat: np.ndarray, learning_rate: float | None = None) -> None:
        """One optimizer step with the averaged gradient (at ``learning_rate`` if a schedule gives one)."""
        if learning_rate is not None:
            self.optimizer.learning_rate = learning_rate
        self._apply(tf.constant(flat, self.variables[0].dtype))  # float32, or float64 under floatx "float64"

    def correct(self, x: np.ndarray, y: np.ndarray, chunk: int = 2000) -> int:
        """How many of (x, y) the model classifies right."""
        return sum(
            int(np.sum(self._predict(x[i : i + chunk]).numpy() == y[i : i + chunk])) for i in range(0, len(x), chunk)
        )

    def set_weights_vector(self, flat: np.ndarray) -> None:
        """Load every weight from one flat vector (the inverse of `weights_vector`)."""
        bounds = np.cumsum([0] + [w.size for w in self.model.get_weights()])
        shapes = [w.shape for w in self.model.get_weights()]
        self.model.set_weights([flat[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes, strict=True)])

    def optimizer_state(self) -> list[np.ndarray]:
        """Copies of the optimizer's variables (Keras 3 ``optimizer.variables``: iteration, rate, Adam's m and v)."""
        return [np.array(v.numpy()) for v in self.optimizer.variables]

    def set_optimizer_state(self, values: list[np.ndarray]) -> None:
        """Load what `optimizer_state` returned (from the same optimizer on the same model), so training continues."""
        variables = self.optimizer.variables
        have, got = [tuple(v.shape) for v in variables], [np.shape(a) for a in values]
        if have != got:
            raise ValueError(
                f"the saved optimizer state has {len(got)} variables of shapes {got}, this "
                f"{type(self.optimizer).__name__} has {len(have)} of shapes {have}: load a state saved with the same "
                "optimizer and model"
            )
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)


def _rank_exchange(c: comm.Comm, grads: list, algorithm: str, compressor: Any, states: list) -> tuple:
    return exchange(grads[c.rank], c, algorithm, compressor, states[c.rank])


def _rank_broadcast(c: comm.Comm, flat: np.ndarray) -> np.ndarray:
    return collectives.broadcast(flat if c.rank == 0 else None, c, root=0)


class SimWorkers:
    """p data-parallel workers in this process; the exchange runs on p simulated ranks of ``link``."""

    rank = 0  # the replica whose weights History reports (all are identical)

    def __init__(self, model_fn: Callable[[int], keras.Model], config: Any) -> None:
        self.config, self.p = config, config.p
        self.link = config.link or cost.DEFAULT_LINK
        self.replicas = [
            Replica(model_fn(config.seed), make_optimizer(config.optimizer, config.learning_rate))
            for _ in range(self.p)
        ]
        start = comm.run(_rank_broadcast, self.p, "sim", self.link, config.timeout, (weights_vector(self.model),))
        for replica, flat in zip(
            self.replicas, start.values, strict=True
        ):  # as Horovod's broadcast_variables: rank 0's weights
            replica.set_weights_vector(flat)
        shapes = [tuple(v.shape) for v in self.replicas[0].variables]  # the flat gradient's layers, for PowerSGD
        self.states = [{"rank": r, "p": self.p, "shapes": shapes} for r in range(self.p)]

    @property
    def model(self) -> keras.Model:
        return self.replicas[0].model

    def step(self, x: np.ndarray, y: np.ndarray, step: int, lr: float | None) -> tuple[float, int, float, float]:
        """One step on the global batch (x, y): (mean loss, bytes the busiest rank sent, modelled s, measured s)."""
        b = len(x) // self.p
        losses, grads = zip(
            *(rep.gradient(x[r * b : (r + 1) * b], y[r * b : (r + 1) * b]) for r, rep in enumerate(self.replicas)),
            strict=True,
        )
        for state in self.states:
            state["step"] = step
        start = time.perf_counter()
        args = (list(grads), self.config.algorithm, self.config.compressor, self.states)
        run = comm.run(_rank_exchange, self.p, "sim", link=self.link, timeout=self.config.timeout, args=args)
        seconds = time.perf_counter() - start
        for replica, (average, _) in zip(self.replicas, run.values, strict=True):
            replica.apply(average, lr)
        sent = np.zeros(self.p, np.int64)
        for message in run.trace:
            sent[message.src] += message.nbytes
        return float(np.mean(losses)), int(sent.max()), run.time, seconds

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return self.replicas[0].correct(x, y) / len(x)

    def checksums(self) -> list[str]:
        return [checksum(rep.model) for rep in self.replicas]

    def gather(self, obj: Any) -> list[Any]:
        return [obj]


class SentCounter:
    """A `Comm` that counts the bytes this rank sends (MPI's trace records what a rank receives)."""

    def __init__(self, inner: comm.Comm) -> None:
        self.inner, self.rank, self.size, self.sent = inner, inner.rank, inner.size, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def send(self, x, dst, tag=0, label=""):
        self.sent += np.asarray(x).nbytes
        return self.inner.send(x, dst, tag, label)

    def sendrecv(self, x, dst, src, tag=0, label=""):
        self.sent += np.asarray(x).nbytes
        return self.inner.sendrecv(x, dst, src, tag, label)

    def sendrecv_reduce(self, x, dst, out, src, tag=0, op="sum", label="", acc=None):
        self.sent += np.asarray(x).nbytes
        return self.inner.sendrecv_reduce(x, dst, out, src, tag, op, label, acc=acc)

    def sendrecv_into(self, x, dst, out, src, tag=0, label=""):
        self.sent += np.asarray(x).nbytes
        return self.inner.sendrecv_into(x, dst, out, src, tag, label)


class MPIWorker:
    """This process as worker ``rank`` of ``mpiexec -n p``: its shard, its replica, the exchange over MPI."""

    def __init__(self, model_fn: Callable[[int], keras.Model], config: Any, c: comm.Comm | None = None) -> None:
        self.config = config
        self.comm = SentCounter(c if c is not None else comm.from_mpi(timeout=config.timeout))
        self.rank, self.p = self.comm.rank, self.comm.size
        if config.p != self.p:
            raise ValueError(
                f"p={config.p} but mpiexec started {self.p} process(es): pass p={self.p} (or run mpiexec -n {config.p})"
            )
        self.link = config.link or cost.DEFAULT_LINK
        self.replica = Replica(model_fn(config.seed), make_optimizer(config.optimizer, config.learning_rate))
        self.replica.set_weights_vector(_rank_broadcast(self.comm, weights_vector(self.model)))
        shapes = [tuple(v.shape) for v in self.replica.variables]  # the flat gradient's layers, for PowerSGD
        self.state = {"rank": self.rank, "p": self.p, "shapes": shapes}

    @property
    def model(self) -> keras.Model:
        return self.replica.model

    def step(self, x: np.ndarray, y: np.ndarray, step: int, lr: float | None) -> tuple[float, int, float, float]:
        """As `SimWorkers.step`; the modelled time is the closed form on ``config.link``."""
        b, r = len(x) // self.p, self.rank
        loss, grad = self.replica.gradient(x[r * b : (r + 1) * b], y[r * b : (r + 1) * b])
        self.state["step"], sent = step, self.comm.sent
        start = time.perf_counter()
        average, sizes = exchange(grad, self.comm, self.config.algorithm, self.config.compressor, self.state)
        seconds = time.perf_counter() - start
        self.replica.apply(average, lr)
        gathered = self.comm.allgather_object((loss, self.comm.sent - sent))  # a few bytes of bookkeeping
        compressed = self.config.compressor is not None and not getattr(self.config.compressor, "summable", False)
        modelled = exchange_time(self.config.algorithm, sizes, self.link, compressed)
        return float(np.mean([g[0] for g in gathered])), max(g[1] for g in gathered), modelled, seconds

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Each rank classifies every p-th test example; the counts are summed."""
        return sum(
            self.comm.allgather_object(self.replica.correct(x[self.rank :: self.p], y[self.rank :: self.p]))
        ) / len(x)

    def checksums(self) -> list[str]:
        return self.comm.allgather_object(checksum(self.model))

    def gather(self, obj: Any) -> list[Any]:
        return self.comm.allgather_object(obj)
