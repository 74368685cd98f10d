"""Chapter 2 (core concepts): the exercises and, for teachers, their solutions.

Each right answer is written out by its own formula here, and that formula is checked against what the algorithm
really does: the messages counted on the ``"sim"`` transport must agree, or the exercise raises instead of marking.
"""

import numpy as np

from labkit import collectives, comm
from labkit.lessons import concepts
from labkit.lessons.check import exercise


def _agrees(formula, counted, what: str):
    """The written-out answer, once the simulated run has confirmed it."""
    if formula != counted:
        raise AssertionError(f"{what}: the formula gives {formula}, the simulated run {counted}")
    return formula


@exercise(
    chapter=2,
    question="How many messages does the ps all-reduce (everything gathered to the master, rank 0, and the sum "
    "sent back) send on p = 16 ranks?",
    why="Every rank but the master sends its whole vector to the master once, and the master sends the sum back to "
    "each of them once: two messages per non-master rank, all of them through rank 0's ports.",
    solution="answer = 2 * (16 - 1)",
    hint="Count the messages to the master and those back from it, for each rank that is not the master.",
    mistakes=[
        (15, "That is only the gather to the master: every rank also needs the sum back."),
        (32, "The master does not send to itself."),
    ],
)
def ps_message_count():
    p = 16
    formula = (p - 1) + (p - 1)  # each non-master rank: one message to the master, one back from it
    run = comm.run(lambda c: collectives.allreduce(np.ones(4), c, algorithm="ps"), p)
    return _agrees(formula, len(run.trace), "ps messages")


@exercise(
    chapter=2,
    question="After a reduce-scatter of 10 elements on 4 ranks, how many elements does each rank hold? Answer with "
    "a list of four numbers, rank 0 first.",
    why="A reduce-scatter leaves each rank one chunk of the reduced vector; the chunks split the elements as evenly "
    "as whole elements allow, and labkit (like np.array_split) gives the leftover elements to the first ranks.",
    solution="answer = [3, 3, 2, 2]",
    hint="Each rank keeps one chunk: split 10 elements as evenly as whole elements allow, "
    "and ask which ranks take the leftovers.",
    mistakes=[
        ([2, 2, 3, 3], "The right sizes in the wrong order: which ranks get the leftover elements?"),
        ([2.5, 2.5, 2.5, 2.5], "A rank holds whole elements."),
        (10, "That is what an all-reduce leaves on every rank; a reduce-scatter leaves only a part."),
    ],
)
def reduce_scatter_sizes():
    n, p = 10, 4
    formula = [n // p + (r < n % p) for r in range(p)]  # n // p each, and the n % p leftovers to the first ranks
    run = comm.run(lambda c: collectives.reduce_scatter(np.arange(n), c), p)
    return _agrees(formula, [len(v) for v in run.values], "reduce-scatter sizes")


@exercise(
    chapter=2,
    question="A row-parallel layer multiplies activations X (32 × 1024) by weights W (1024 × 1024), both float32, "
    "with W split by rows over p = 4 ranks; a ring all-reduce then sums the partial products. How many bytes does "
    "each rank send?",
    why="The weights never move: each rank keeps its rows of W. What travels is each rank's partial product, which "
    "has the shape of the output X·W, and a ring all-reduce of n bytes sends 2(p − 1)/p · n bytes from every rank.",
    solution="answer = 2 * (4 - 1) / 4 * (32 * 1024 * 4)",
    hint="Ask which array travels, the weights or the partial products, "
    "then what a ring all-reduce of it sends from one rank.",
    mistakes=[
        (6291456.0, "That is the ring all-reduce of all of W: but W stays where it is."),
        (131072, "That is the size of one partial product; the ring sends it in chunks, in two phases."),
    ],
)
def row_parallel_bytes():
    p, partial = 4, 32 * 1024 * 4  # the partial product has X·W's shape, 32 × 1024 float32
    formula = 2 * (p - 1) * (partial // p)  # 2(p − 1) chunks of n/p bytes; 1024 columns divide evenly by 4
    x, w = np.ones((32, 1024), np.float32), np.ones((1024, 1024), np.float32)
    run = comm.run(lambda c: concepts.simple_row_parallel_matmul(x, w, c), p)
    return _agrees(formula, sum(m.nbytes for m in run.trace if m.src == 0), "row-parallel bytes")


@exercise(
    chapter=2,
    question="A model of 6 stages, one stage per rank, serves a batch split into 10 micro-batches (forward only, "
    "inference). How many messages does the pipeline send?",
    why="Each micro-batch's activations cross every boundary between two consecutive stages once; the last stage "
    "keeps its output.",
    solution="answer = (6 - 1) * 10",
    hint="Count the boundaries between consecutive stages, and how many micro-batches cross each one.",
    mistakes=[
        (60, "The last stage sends nothing on: it keeps the output."),
        (5, "That is one micro-batch: there are 10."),
    ],
)
def pipeline_messages():
    stages, micro = 6, 10
    formula = (stages - 1) * micro  # each micro-batch crosses each of the stages − 1 boundaries once
    layers = concepts.make_mlp((4,) * (stages + 1))  # one layer per stage
    run = comm.run(lambda c: concepts.simple_pipeline_forward(np.ones((20, 4)), layers, c, micro_batches=micro), 6)
    return _agrees(formula, len(run.trace), "pipeline messages")
