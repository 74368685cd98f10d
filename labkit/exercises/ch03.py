"""Chapter 3 (algorithms and their cost): the exercises and, for teachers, their solutions."""

from labkit import cost
from labkit.check import exercise


@exercise(
    chapter=3,
    question="One step of gradient descent on L(θ) = ½(θ·x − y)² with θ = 2, x = 3, y = 5 and η = 0.1: "
    "what is the new θ?",
    why="Gradient descent moves against the gradient: θ ← θ − η·dL/dθ, and dL/dθ = (θx − y)·x by the chain rule. "
    "The article's f(θ) = −L′ has the right sign but is never multiplied by η nor subtracted from θ.",
    solution="answer = 2 - 0.1 * (2 * 3 - 5) * 3",
)
def gradient_step():
    theta, x, y, eta = 2.0, 3.0, 5.0, 0.1
    return theta - eta * (theta * x - y) * x


@exercise(
    chapter=3,
    question="Bytes each rank sends in a ring all-reduce of n = 64 MB (64e6 bytes) on p = 8 ranks.",
    why="The reduce-scatter takes p − 1 steps and the all-gather p − 1 more; in each step a rank sends one chunk of "
    "n/p bytes. The total does not grow with p: it tends to 2n.",
    solution="answer = 2 * (8 - 1) / 8 * 64e6",
    mistakes=[(128000000.0, "That is 2n: count the steps, p − 1 in each phase, and the chunk size n/p.")],
)
def ring_bytes():
    return cost.bytes_sent_per_rank("ring", 64e6, 8)


@exercise(
    chapter=3,
    question="Modelled time of a tree all-reduce (binomial reduce + broadcast) of n = 1 MB on p = 16 ranks over a "
    "link with α = 10 µs and bandwidth 1 GB/s (β = 1e-9 s/byte), γ = 0. Answer in seconds.",
    why="The reduce takes lg p rounds and so does the broadcast; each round moves the whole vector: α + nβ per round.",
    solution="answer = 2 * 4 * (10e-6 + 1e6 * 1e-9)",
)
def tree_time():
    return cost.allreduce_time("tree", 1e6, 16, cost.Link(alpha=10e-6, beta=1e-9))


@exercise(
    chapter=3,
    question="On p = 8 ranks with α = 20 µs and 1.25 GB/s, below which message size (bytes) is the tree all-reduce "
    "faster than the ring? (1 % tolerance)",
    why="Both times are α-terms plus n·β-terms. The ring pays 2(p−1) α's but moves only 2(p−1)/p·n bytes; the tree "
    "pays 2·lg p α's but moves 2·lg p·n bytes. Set the two equal and solve for n.",
    solution="answer = (2 * 7 - 2 * 3) * 20e-6 / ((2 * 3 - 2 * 7 / 8) / 1.25e9)",
    rel_tol=0.01,
)
def tree_ring_crossover():
    return cost.crossover("tree", "ring", 8, cost.Link(alpha=20e-6, beta=1 / 1.25e9))
