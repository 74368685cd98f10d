"""Chapter 6 (distributed inference): the exercises and, for teachers, their solutions.

Each right answer is counted from what the code does — the shards a rank really holds, the bytes a simulated run
really sends, the idle time of a simulated pipeline — so a solution written as a formula is checked against it.
"""

import numpy as np

from labkit import comm, cost
from labkit import pipeline as pl
from labkit import tensor_parallel as tp
from labkit.check import exercise


@exercise(
    chapter=6,
    question="The article's first layer (784 → 100, float32) is split by columns over p = 3 ranks. How many bytes of "
    "parameters does rank 0 hold?",
    why="A column split gives each rank whole columns of W, with the matching entries of the bias: np.array_split "
    "cuts 100 columns into 34, 33 and 33, the first rank taking the extra one. Rank 0 holds 784 × 34 weights and 34 "
    "biases, 4 bytes each.",
    solution="answer = 4 * (784 * 34 + 34)",
    mistakes=[
        (104533.33333333333, "A rank holds whole columns: 100 does not divide by 3."),
        (106624, "Each column comes with its bias."),
        (26690, "That is the number of parameters; the question asks for bytes (float32)."),
    ],
)
def tp_column_shard_bytes():
    return tp.column_shard(tp.Dense(np.zeros((784, 100), np.float32), np.zeros(100, np.float32)), 3, 0).nbytes


@exercise(
    chapter=6,
    question="A Megatron MLP block (column-split 784 → 100, then row-split 100 → 100) serves a batch of 32 on p = 4 "
    "ranks in float32, with the ring all-reduce. How many bytes does each rank send?",
    why="The hidden activations never move: each rank keeps its 25 columns and feeds them into its 25 rows of the "
    "second layer. The only message is the all-reduce of the 32 × 100 partial output (12,800 bytes), and a ring sends "
    "2(p − 1)/p of it from every rank.",
    solution="answer = 2 * (4 - 1) / 4 * (32 * 100 * 4)",
    mistakes=[
        (12800, "That is the partial output itself; the ring sends it in chunks, through two phases."),
        (38400, "That would be all-gathering the hidden layer and the output: the pairing avoids the first."),
    ],
)
def megatron_block_bytes():
    first = tp.Dense(np.ones((784, 100), np.float32), np.zeros(100, np.float32), "relu")
    second = tp.Dense(np.ones((100, 100), np.float32), np.zeros(100, np.float32))
    x = np.ones((32, 784), np.float32)
    run = comm.run(lambda c: tp.simple_megatron_mlp(x, first, second, c), 4)
    return sum(m.nbytes for m in run.trace if m.src == 0)


@exercise(
    chapter=6,
    question="A model of 8 equal layers runs as a pipeline of 4 stages (two layers each) on a batch cut into 12 "
    "micro-batches; the links cost nothing. What fraction of the time does a rank sit idle?",
    why="With S equal stages of t seconds per micro-batch, the last micro-batch leaves the last stage after "
    "(M + S − 1)·t, and each rank computes for M·t of it: the bubble is (S − 1)/(M + S − 1).",
    solution="answer = (4 - 1) / (12 + 4 - 1)",
    mistakes=[(0.25, "That is (S − 1)/M: count the time the pipeline takes to fill, M + S − 1 slots in all.")],
)
def gpipe_bubble_fraction():
    run = comm.run(
        lambda c: pl.pipeline_forward(np.zeros((24, 16), np.float32), pl.uniform_mlp(8, 16), c, micro_batches=12),
        4,
        link=cost.Link(0.0, 0.0),
    )
    return pl.measured_bubble(run, 4)


@exercise(
    chapter=6,
    question="With 4 equal stages and free links, what is the smallest number of micro-batches that makes the bubble "
    "less than 10 %?",
    why="Solve (S − 1)/(M + S − 1) < 0.1 for M: M + S − 1 > 10(S − 1), so M > 9(S − 1) = 27, and M = 28. GPipe's "
    "advice, M ≥ 4S, leaves 3/19 ≈ 16 %.",
    solution="answer = 28",
    mistakes=[
        (27, "At M = 27 the bubble is 3/30, exactly 10 %: not less."),
        (16, "That is GPipe's M = 4S: 3/19 = 16 %."),
    ],
)
def gpipe_micro_batches_for_bubble():
    return next(m for m in range(1, 1000) if pl.bubble_fraction(4, m) < 0.1)
