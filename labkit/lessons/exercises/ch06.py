"""Chapter 6 (distributed inference): the exercises and, for teachers, their solutions.

Each right answer is counted from what the code does — the shards a rank really holds, the bytes a simulated run
really sends, the idle time of a simulated pipeline — so a solution written as a formula is checked against it.
"""

import numpy as np

from labkit import comm, cost
from labkit.lessons.check import exercise
from labkit.parallel import pipeline as pl
from labkit.parallel import tensor as tp


@exercise(
    chapter=6,
    question="The article's first layer (784 → 100, float32) is split by columns over p = 3 ranks. How many bytes of "
    "parameters does rank 0 hold?",
    why="A column split gives each rank whole columns of W, with the matching entries of the bias: np.array_split "
    "cuts 100 columns into 34, 33 and 33, the first rank taking the extra one. Rank 0 holds 784 × 34 weights and 34 "
    "biases, 4 bytes each: 4 × (784 × 34 + 34) = 106,760 bytes.",
    solution="answer = 4 * (784 * 34 + 34)",
    hint="Count what one column of a Dense layer brings with it, how many whole columns rank 0 gets, and the bytes "
    "of a float32.",
    mistakes=[
        (104533.33333333333, "A rank holds whole columns: 100 does not divide by 3."),
        (103620, "That is 33 columns: which rank takes the column left over when 100 is cut in 3?"),
        (106624, "Each column comes with its bias."),
        (26690, "That is the number of parameters; the question asks for bytes (float32)."),
    ],
)
def tp_column_shard_bytes():
    return tp.column_shard(tp.Dense(np.zeros((784, 100), np.float32), np.zeros(100, np.float32)), 3, 0).nbytes


@exercise(
    chapter=6,
    question="A transformer-style Megatron MLP block, 512 → 2048 (ReLU) → 512, serves a batch of 16 requests on "
    "p = 8 ranks in float32, with the ring all-reduce. How many bytes does each rank send in the forward pass?",
    why="The first layer is split by columns and the second by rows along the same blocks, so the 16 × 2048 hidden "
    "activations never move: each rank feeds its 256 hidden columns into its 256 rows of the second layer. The only "
    "message is the all-reduce of the 16 × 512 partial output, 32,768 bytes, and a ring all-reduce sends 2(p − 1)/p "
    "of it from every rank (a reduce-scatter, then an all-gather): 2 × 7/8 × 32,768 = 57,344 bytes.",
    solution="answer = 2 * (8 - 1) / 8 * (16 * 512 * 4)",
    hint="Ask first which array has to travel at all in a Megatron block, then what a ring all-reduce of it sends "
    "from one rank.",
    mistakes=[
        (32768, "That is the partial output itself; the ring sends it in chunks, through two phases."),
        (28672, "That is one phase (the reduce-scatter): every rank also needs the whole sum back."),
        (229376, "That is an all-reduce of the 2048-wide hidden layer: in a Megatron block the hidden layer stays."),
        (143360, "That is the all-column split, gathering the hidden layer and the output: the pairing avoids it."),
    ],
)
def megatron_block_bytes():
    rng = np.random.default_rng(0)
    first = tp.Dense(rng.normal(size=(512, 2048)).astype(np.float32), np.zeros(2048, np.float32), "relu")
    second = tp.Dense(rng.normal(size=(2048, 512)).astype(np.float32), np.zeros(512, np.float32))
    x = rng.normal(size=(16, 512)).astype(np.float32)
    run = comm.run(lambda c: tp.simple_megatron_mlp(x, first, second, c), 8)
    return sum(m.nbytes for m in run.trace if m.src == 0)


@exercise(
    chapter=6,
    question="A model of 6 equal layers runs as a pipeline of 4 stages holding 2, 2, 1 and 1 layers, on a batch cut "
    "into 12 micro-batches; the links cost nothing. What fraction of the pipeline's rank-time is idle?",
    why="Let t be one layer's time on one micro-batch: the stages take d = 2t, 2t, t, t. The slowest stage sets the "
    "pace, so the batch takes Σ d_s + (M − 1)·max d_s = 6t + 11 × 2t = 28t. The 4 ranks are busy 12 × 6t = 72t of "
    "their 4 × 28t = 112t, so 1 − 72/112 = 5/14 ≈ 35.7 % is idle. GPipe's (S − 1)/(M + S − 1) = 20 % holds only "
    "for equal stages.",
    solution="answer = 1 - 12 * 6 / (4 * (6 + 11 * 2))",
    hint="The stages are not equal, so GPipe's formula does not apply: find how long the batch takes (which stage "
    "sets the pace?) and how much of that time each rank computes.",
    mistakes=[
        (0.2, "That is GPipe's (S − 1)/(M + S − 1), for equal stages: these are not."),
        (0.4, "That charges every stage of the fill at the slowest stage's time: filling costs Σ d_s, not S·max d_s."),
        (
            0.25,
            "That is (S − 1)/M, the bubble against the compute time (Narayanan's form), and for equal stages: "
            "count the time the batch takes with unequal ones.",
        ),
    ],
    rel_tol=2e-3,  # 0.357 (three digits) is right; the listed mistakes are 12 % and more away
)
def gpipe_bubble_fraction():
    run = comm.run(
        lambda c: pl.pipeline_forward(np.zeros((24, 16), np.float32), pl.uniform_mlp(6, 16), c, micro_batches=12),
        4,
        link=cost.Link(0.0, 0.0),
    )
    return pl.measured_bubble(run, 4)


@exercise(
    chapter=6,
    question="With 4 equal stages and free links, what is the smallest number of micro-batches that makes the bubble "
    "less than 10 %?",
    why="Solve (S − 1)/(M + S − 1) < 0.1 for M: M + S − 1 > 10(S − 1), so M > 9(S − 1) = 27, and M = 28. GPipe's "
    "advice, M ≥ 4S, leaves 3/19 ≈ 16 % in forward-only inference.",
    solution="answer = 28",
    hint="Write the bubble as a function of M with S = 4, set it below 0.1 and solve for a whole M; mind the "
    "strict 'less than'.",
    mistakes=[
        (27, "At M = 27 the bubble is 3/30, exactly 10 %: not less."),
        (16, "That is GPipe's M = 4S: 3/19 = 16 %."),
        (30, "That is M + S − 1, the slots of the schedule: how many of them are micro-batches?"),
    ],
)
def gpipe_micro_batches_for_bubble():
    return next(m for m in range(1, 1000) if pl.bubble_fraction(4, m) < 0.1)
