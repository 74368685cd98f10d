"""The repair of the article's program: data-parallel SGD, in its simple teaching version
(`simple_data_parallel_step`: every worker's gradient, all-reduced, one update on every replica), trained on p
simulated workers and on one, so that chapter 4 can show the two agree. The full trainer is `labkit.train`.
Importing this module imports TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labkit import collectives, comm, import_tensorflow, models
from labkit.comm import Comm
from labkit.i18n import tr

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow, as in labkit.models)

#: The article's cross-entropy, computed from integer labels (labkit.data's) instead of one-hot vectors; the mean over
#: the examples it is given, as every Keras loss.
LOSS = keras.losses.SparseCategoricalCrossentropy()


def simple_data_parallel_step(
    model: keras.Model, optimizer, x_shard, y_shard, comm: Comm, algorithm: str = "ring"
) -> float:
    """One step of data-parallel SGD, simple teaching version: g = (1/p) Σ_r ∇L_r, the same update on every rank.

    Each rank computes the mean gradient of its own shard with the model *called* under a GradientTape, packs it into
    one flat vector, all-reduces it, divides by p and applies it. Shards must be of equal size: then the mean of the
    p shard means is the mean over the combined batch. Returns this rank's shard loss.
    """
    sizes = comm.allgather_object(len(x_shard))  # metadata only: free on "sim", not a message
    if len(set(sizes)) > 1:
        raise ValueError(
            tr("shard sizes differ between ranks {sizes}: split the global batch into equal shards", sizes=sizes)
        )
    with tf.GradientTape() as tape:
        loss = LOSS(y_shard, model(x_shard, training=True))  # called, not predict(): the tape records every op
    grads = tape.gradient(loss, model.trainable_variables)
    flat = np.concatenate([g.numpy().ravel() for g in grads])  # one vector: one all-reduce, not one per variable
    mean = collectives.allreduce(flat, comm, algorithm=algorithm) / comm.size
    ends = np.cumsum([0] + [int(np.prod(g.shape)) for g in grads])
    mean_grads = [mean[a:b].reshape(g.shape) for a, b, g in zip(ends[:-1], ends[1:], grads, strict=True)]
    optimizer.apply_gradients(zip(mean_grads, model.trainable_variables, strict=True))
    return float(loss)


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3) -> keras.optimizers.Optimizer:
    """A fresh optimiser: ``"adam"`` (the article's) or ``"sgd"`` (θ ← θ − η g)."""
    if name not in ("adam", "sgd"):
        raise ValueError(f"unknown optimizer {name!r}: use 'adam' or 'sgd'")
    return keras.optimizers.Adam(learning_rate) if name == "adam" else keras.optimizers.SGD(learning_rate)


def batches(n: int, batch_size: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """Index arrays of ``steps`` global batches: a fresh seeded permutation per epoch, the short tail dropped."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < steps:
        order = rng.permutation(n)
        out += [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    return out[:steps]


@dataclass
class SimTraining:
    """What `train_on_sim` returns: every rank's replica, the loss of each step, and the simulator's `Run`."""

    replicas: list[keras.Model]
    loss: np.ndarray  # per step: the mean of the p shard losses = the loss on the global batch
    run: comm.Run


def train_on_sim(
    x,
    y,
    p: int = 4,
    steps: int = 100,
    batch_size: int = 64,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    seed: int = 0,
    *,
    algorithm: str = "ring",
) -> SimTraining:
    """Train the article's MLP on p simulated ranks in this process: each rank its own replica (same seed, so the
    same weights), the same global batches, its 1/p of each batch, and `simple_data_parallel_step`.
    """
    if batch_size % p:
        raise ValueError(
            tr("batch_size {b} does not split into {p} equal shards: use a multiple of {p}", b=batch_size, p=p)
        )
    replicas = [models.article_mlp(seed=seed) for _ in range(p)]
    optimizers = [make_optimizer(optimizer, learning_rate) for _ in range(p)]
    plan = batches(len(x), batch_size, steps, seed)

    def worker(c: Comm) -> list[float]:
        model, opt, losses = replicas[c.rank], optimizers[c.rank], []
        for idx in plan:
            shard = np.array_split(idx, c.size)[c.rank]
            losses.append(simple_data_parallel_step(model, opt, x[shard], y[shard], c, algorithm))
        return losses

    run = comm.run(worker, p, transport="sim", timeout=60 + steps)  # the sim's timeout bounds the whole run
    return SimTraining(replicas, np.mean(run.values, axis=0), run)


def train_one_worker(
    x, y, steps: int = 100, batch_size: int = 64, optimizer: str = "adam", learning_rate: float = 1e-3, seed: int = 0
) -> tuple[keras.Model, np.ndarray]:
    """The reference: one worker, plain GradientTape SGD on the same global batches; (model, loss per step)."""
    model, opt, losses = models.article_mlp(seed=seed), make_optimizer(optimizer, learning_rate), []
    for idx in batches(len(x), batch_size, steps, seed):
        with tf.GradientTape() as tape:
            loss = LOSS(y[idx], model(x[idx], training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        losses.append(float(loss))
    return model, np.array(losses)
