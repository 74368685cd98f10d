"""Chapter 8 (fault tolerance): the exercises and, for teachers, their solutions.

Each right answer is counted from what the code does — the simulated all-reduce with a late rank, the trace of a
parameter server, the arrays a checkpoint really holds — so a solution written as a formula is checked against it.
"""

import math

import numpy as np

from labkit import collectives, comm, cost, fault
from labkit.check import exercise

MB = 4 * 2**18  # 1 MiB of float32, divisible by every p used here


@exercise(
    chapter=8,
    question="A ring all-reduce of 1 MiB over p = 4 ranks on the default link (10 GbE); rank 1 starts 5 ms late. "
    "How many milliseconds longer does the all-reduce take than when no one is late?",
    why="Every rank of a ring needs data that passes through every other rank, so no one can finish before the "
    "slow rank has sent its last chunk: the whole delay adds to the completion time, T + d.",
    solution="answer = 5",
    mistakes=[(1.25, "The delay is not shared out over the ranks: each rank waits for all of it."), (0, "Run it.")],
)
def ring_straggler_extra_ms():
    late = fault.straggler_time("ring", 4, MB, 5e-3, slow_rank=1)
    return (late - fault.straggler_time("ring", 4, MB, 0.0, slow_rank=1)) * 1e3


@exercise(
    chapter=8,
    question="A parameter server (rank 0) all-reduces 1 MiB over p = 8 ranks on the default link. Its last worker "
    "(rank 7) is late. Up to how many milliseconds of delay does the server not notice at all?",
    why="The server receives from ranks 1, 2, …, 7 in turn through one receive port; rank 7's message is wanted only "
    "after the six others have arrived, each taking α + nβ. Any delay up to 6(α + nβ) is hidden behind them.",
    solution="answer = 6 * (20e-6 + 2**20 / 1.25e9) * 1e3",
    rel_tol=1e-6,
    mistakes=[
        (0, "The server is busy receiving from the others first."),
        (0.858861, "That is one message: count them."),
    ],
)
def ps_hidden_delay_ms():
    x = np.ones(MB // 4, np.float32)
    run = comm.run(lambda c: collectives.allreduce(x, c, "ps"), 8)
    return max(m.end for m in run.trace if m.dst == 0 and m.src == 6) * 1e3  # when the server turns to rank 7


@exercise(
    chapter=8,
    question="Five workers compute gradients g_r = (r + 1)·1 (rank r, all entries equal). Rank 2 is dead and rank 3 "
    "misses the parameter server's deadline. What value does every entry of the average they all receive hold?",
    why="The server averages only what arrived: ranks 0, 1 and 4, so (1 + 2 + 5)/3 = 8/3. The survivors go on with a "
    "gradient from 3 of 5 shards: an unbiased estimate, only noisier (Chen et al. 2016's backup workers).",
    solution="answer = (1 + 2 + 5) / 3",
    mistakes=[(2.2, "Dividing by 5 counts the two missing gradients as zeros."), (3.0, "Rank 3 did not make it.")],
)
def ps_deadline_average():
    grads = [np.full(4, r + 1.0, np.float32) for r in range(5)]
    compute = [1e-3, 1e-3, math.inf, 1.0, 1e-3]
    run = comm.run(lambda c: fault.simple_ps_with_deadline(grads[c.rank], c, compute, 0.01), 5, link=cost.DEFAULT_LINK)
    return float(run.values[0][0][0])


@exercise(
    chapter=8,
    question="How many bytes of float32 arrays does a labkit checkpoint of the article's MLP (89,610 parameters) "
    "trained with Adam hold? Leave out the two scalars (the iteration counter and the learning rate).",
    why="Adam keeps two moments, m and v, of the same shape as every weight: the checkpoint holds three copies of "
    "the model, 3 × 89,610 × 4 bytes. That is why optimizer state, not weights, dominates checkpoints of large models "
    "(and why ZeRO shards it).",
    solution="answer = 3 * 89_610 * 4",
    mistakes=[(358440, "That is the weights alone: a resumed Adam without m and v starts over."), (716880, "m and v.")],
)
def checkpoint_bytes():
    from labkit import dataparallel, models

    replica = dataparallel.Replica(models.article_mlp(0), dataparallel.make_optimizer("adam", 1e-3))
    arrays = replica.model.get_weights() + replica.optimizer_state()
    return sum(a.nbytes for a in arrays if a.ndim > 0 and a.dtype == np.float32)
