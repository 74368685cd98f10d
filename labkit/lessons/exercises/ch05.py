"""Chapter 5 (MNIST in practice): the exercises and, for teachers, their solutions."""

import math

from labkit.lessons.check import exercise


@exercise(
    chapter=5,
    question="Goyal et al. use η = 0.1 for a global batch of 256. You train with 12 workers of 64 examples each. "
    "Which learning rate does the linear scaling rule give?",
    why="The rule scales with the global batch, not the worker count nor the per-worker batch: the global batch is "
    "12 × 64 = 768, k = 768 / 256 = 3, so η = 0.1 × 3 = 0.3 (reached by a gradual warm-up, Goyal et al. 2017, "
    "§2.1-2.2).",
    solution="answer = 0.1 * (12 * 64) / 256",
    hint="The rule multiplies η by k, the factor by which the batch grew: which batch does one SGD step average over?",
    mistakes=[
        (0.025, "That scales by the per-worker batch, 64 / 256; one step averages over the global batch of 12 × 64."),
        (1.2, "That multiplies by the number of workers; k is the global batch over 256, not p."),
        (0.1 * math.sqrt(3), "That is the square-root rule; the linear rule multiplies by k itself."),
    ],
)
def linear_scaling_lr():
    global_batch = 12 * 64
    return 0.1 * (global_batch / 256)


@exercise(
    chapter=5,
    question="A model whose step computes for 600 ms on one worker has a 100 MB float32 gradient. On p = 6 workers, "
    "each computing a sixth of the batch, the gradient is ring all-reduced over 10 GbE, not overlapped with "
    "compute; ignore latency. What is the speed-up of 6 workers over one?",
    why="10 GbE moves 10 Gbit/s = 1.25 GB/s. A ring sends 2(p − 1)/p · n from each worker: 2 · 5/6 · 100 MB = "
    "166.7 MB, 133.3 ms. One step of 6 workers: 600 / 6 = 100 ms of compute, then 133.3 ms of all-reduce = 233.3 ms; "
    "speed-up = 600 / 233.3 = 2.57 (efficiency 43 %).",
    solution="answer = 600 / (600 / 6 + 2 * (6 - 1) / 6 * 100e6 / 1.25e9 * 1e3)",
    rel_tol=1e-3,
    hint="One step of p workers is their share of the compute plus the all-reduce; the ring's bytes are in section 1.",
    mistakes=[
        (6, "That is perfect scaling: the 6 workers also wait for the all-reduce every step."),
        (600 / (100 + 2 * 5 / 6 * 100e6 / 10e9 * 1e3), "10 GbE is 10 gigabits per second, 1.25 GB/s, not 10 GB/s."),
        (600 / (100 + 2 * 100e6 / 1.25e9 * 1e3), "A ring sends 2(p − 1)/p · n from each worker, not 2n."),
    ],
)
def data_parallel_speedup():
    compute_ms, p, n_bytes, bandwidth = 600.0, 6, 100e6, 10e9 / 8
    ring_ms = 2 * (p - 1) / p * n_bytes / bandwidth * 1e3
    return compute_ms / (compute_ms / p + ring_ms)


@exercise(
    chapter=5,
    question="Full MNIST, 60,000 training examples, on 6 workers of 48 examples each; the last incomplete global "
    "batch is dropped. How many steps does one epoch take, and in how many all-reduces does each worker take part "
    "over 5 epochs? A list of two numbers.",
    why="The global batch is 6 × 48 = 288; 60,000 / 288 = 208.3, rounded down: 208 steps (96 examples wait for the "
    "next epoch's shuffle). One all-reduce per step, and every worker takes part in each: 5 × 208 = 1,040.",
    solution="answer = [60000 // (6 * 48), 5 * (60000 // (6 * 48))]",
    hint="Which batch does one step consume, and what happens to the examples left over at the end of an epoch?",
    mistakes=[
        ([1250, 6250], "That divides by the per-worker batch of 48: one step consumes the global batch, 6 × 48."),
        ([209, 1045], "The last incomplete batch is dropped: round down, not up."),
    ],
)
def steps_per_epoch():
    global_batch = 6 * 48
    steps = math.floor(60000 / global_batch)
    return [steps, 5 * steps]
