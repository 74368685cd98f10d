"""Chapter 5 (MNIST in practice): the exercises and, for teachers, their solutions."""

from labkit.check import exercise


@exercise(
    chapter=5,
    question="With the linear scaling rule, the learning rate for a global batch of 1,024 if 0.1 was right for 256.",
    why="Goyal et al.: when the batch grows k-fold, multiply the learning rate by k (and warm it up gradually).",
    solution="answer = 0.1 * 1024 / 256",
    mistakes=[(0.2, "That is the square-root rule, used with Adam-like optimisers; the linear rule multiplies by k.")],
)
def linear_scaling_lr():
    return 0.1 * (1024 / 256)


@exercise(
    chapter=5,
    question="Compute 80 ms per step on one device; an all-reduce of 30 ms on 4 workers, not overlapped. Speed-up "
    "of 4 workers, each computing a quarter of the batch, over one worker?",
    why="One worker takes the whole compute time. Four workers each take a quarter of it, then all wait for the "
    "all-reduce: speed-up = one worker's step time / the four workers' step time.",
    solution="answer = 80 / (80 / 4 + 30)",
    rel_tol=1e-3,
)
def data_parallel_speedup():
    return 80 / (80 / 4 + 30)


@exercise(
    chapter=5,
    question="Steps per epoch of 60,000 examples, dropping the last incomplete batch: at a global batch of 64, and "
    "with 8 workers of 64 examples each. A list of two numbers.",
    why="Steps = examples // global batch; with 8 workers of 64 each the global batch is 8 × 64.",
    solution="answer = [60000 // 64, 60000 // (8 * 64)]",
)
def steps_per_epoch():
    return [60000 // 64, 60000 // 512]
