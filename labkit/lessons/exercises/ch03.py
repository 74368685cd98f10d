"""Chapter 3 (algorithms and their cost): the exercises and, for teachers, their solutions.

Each expected answer is written out here by its own formula, independent of `labkit.cost`."""

import math

from labkit.lessons.check import exercise


@exercise(
    chapter=3,
    question="One step of gradient descent on L(θ) = ½(θ·x − y)² with θ = 0.5, x = 3, y = 4 and η = 0.02: "
    "what is the new θ?",
    why="Gradient descent moves against the gradient: θ ← θ − η·dL/dθ, and dL/dθ = (θx − y)·x by the chain rule: "
    "(1.5 − 4)·3 = −7.5, so θ = 0.5 − 0.02·(−7.5). The gradient is negative (the prediction is too small), so θ "
    "grows.",
    solution="answer = 0.5 - 0.02 * (0.5 * 3 - 4) * 3",
    hint="Write dL/dθ by the chain rule first, mind its sign, then apply the update rule of section 1.",
    mistakes=[
        (0.35, "θ went down: that is θ + η·dL/dθ, a step uphill. The update subtracts η times the gradient."),
        (0.55, "The chain rule's inner derivative is missing: d(θx − y)/dθ = x, so dL/dθ = (θx − y)·x."),
    ],
)
def gradient_step():
    theta, x, y, eta = 0.5, 3.0, 4.0, 0.02
    return theta - eta * (theta * x - y) * x


@exercise(
    chapter=3,
    question="Bytes each rank sends in a ring all-reduce of n = 60 MB (60e6 bytes) on p = 6 ranks.",
    why="The ring cuts the vector into p chunks of n/p bytes. The reduce-scatter takes p − 1 steps and the "
    "all-gather p − 1 more; in each step a rank sends one chunk: 2(p − 1)·n/p = 10 · 10 MB. The total tends to 2n "
    "as p grows, whatever p is (no power of two needed).",
    solution="answer = 2 * (6 - 1) * 60e6 / 6",
    hint="Count the steps of both phases in the trace of section 3, and the size of one message.",
    mistakes=[
        (
            50e6,
            "That is one phase only: after the reduce-scatter each rank holds one reduced chunk; the all-gather "
            "sends p − 1 more.",
        ),
        (600e6, "That sends the whole vector at every step: a ring step moves one chunk of n/p bytes."),
        (120e6, "That is 2n, the limit for large p: count the steps, p − 1 in each phase."),
    ],
)
def ring_bytes():
    n, p = 60e6, 6
    return 2 * (p - 1) * (n / p)


@exercise(
    chapter=3,
    question="An all-reduce of n = 256 MB (256e6 bytes) on p = 16 GPUs takes 5.0 ms. What is its bus bandwidth "
    "busbw, in GB/s (1e9 bytes per second)?",
    why="algbw = n/t = 256e6 / 5e-3 = 51.2 GB/s; for all-reduce nccl-tests multiplies it by 2(p − 1)/p = 30/16, "
    "the bytes a bandwidth-optimal all-reduce moves per link for each byte of the vector, so that the figure can be "
    "compared with the link's bandwidth whatever p is.",
    solution="answer = 256e6 / 5e-3 * 2 * (16 - 1) / 16 / 1e9",
    hint="Start from algbw, the size divided by the time; section 2 says which factor turns it into busbw.",
    mistakes=[
        (51.2, "That is algbw, n/t: busbw multiplies it by the all-reduce's factor 2(p − 1)/p."),
        (102.4, "The factor is 2(p − 1)/p, not 2: each rank sends (p − 1)/p of the vector in each phase."),
    ],
    rel_tol=1e-3,
)
def allreduce_busbw():
    n, t, p = 256e6, 5e-3, 16
    return n / t * 2 * (p - 1) / p / 1e9


@exercise(
    chapter=3,
    question="On p = 6 ranks (not a power of two) with α = 5 µs and 12.5 GB/s (β = 8e-11 s/byte), γ = 0: below "
    "which message size (bytes) is recursive doubling faster than the ring? (1 % tolerance)",
    why="For p = 6 recursive doubling first folds the 2 extra ranks into partners, runs lg 4 = 2 rounds on 4 ranks "
    "and unfolds: 4 messages of the whole vector, 4(α + nβ). The ring takes 2(p − 1) = 10 steps of n/6: "
    "10α + (10/6)·nβ. Equal when 6α = (4 − 10/6)·nβ, n = 18α / (7β).",
    solution="answer = (10 - 4) * 5e-6 / ((4 - 10 / 6) * 8e-11)",
    hint="Write both times as aα + b·nβ for p = 6: how many whole-vector messages does recursive doubling need "
    "when p is not a power of two (section 4)?",
    mistakes=[
        (
            (10 - math.log2(6)) * 5e-6 / ((math.log2(6) - 10 / 6) * 8e-11),
            "That uses lg 6 ≈ 2.58 rounds: recursive doubling pairs rank r with r XOR 2ᵏ, which needs a power of "
            "two; the 2 extra ranks are folded in and out, 2 more messages.",
        ),
        (
            (10 - 2) * 5e-6 / ((2 - 10 / 6) * 8e-11),
            "That is recursive doubling on 4 ranks, without folding the 2 extra ranks in and out (2α + 2nβ more).",
        ),
        (
            (10 - 3) * 5e-6 / ((3 - 10 / 6) * 8e-11),
            "That uses ⌈lg 6⌉ = 3 rounds: the extra ranks are folded in (one message) and out (another) around "
            "lg 4 = 2 rounds.",
        ),
    ],
    rel_tol=0.01,
)
def doubling_ring_crossover():
    alpha, beta, p = 5e-6, 8e-11, 6
    p2 = 2 ** int(math.log2(p))
    doubling_messages = int(math.log2(p2)) + 2  # fold in, lg p2 rounds, fold out: whole vectors each
    ring_messages, ring_bytes_factor = 2 * (p - 1), 2 * (p - 1) / p
    return (ring_messages - doubling_messages) * alpha / ((doubling_messages - ring_bytes_factor) * beta)
