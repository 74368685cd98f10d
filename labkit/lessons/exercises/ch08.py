"""Chapter 8 (fault tolerance): the exercises and, for teachers, their solutions.

Each right answer is counted from what the code does — the simulated all-reduce with a late rank, the trace of a
parameter server, the arrays a checkpoint really holds — so a solution written as a formula is checked against it.
None uses the numbers of the chapter's worked cells.
"""

import math

import numpy as np

from labkit import collectives, comm, cost, fault
from labkit.lessons.check import exercise

MIB = 2**20


@exercise(
    chapter=8,
    question="A ring all-reduce of 2 MiB over p = 4 ranks on the default link (α = 20 µs, 1.25 GB/s); rank 2 "
    "starts 3 ms late. How many milliseconds does the whole all-reduce take, from the moment the others start?",
    why="Without the delay the ring takes 2(p − 1) steps of α + (n/p)β (chapter 3): 6 × (20 µs + 512 KiB / "
    "1.25 GB/s) = 6 × 439.4 µs = 2.637 ms. Every rank of a ring needs data that passes through every other rank, "
    "so no one can finish before the late rank has caught up: the whole delay adds, T + d = 5.637 ms.",
    solution="answer = (2 * (4 - 1) * (20e-6 + 2**20 * 2 / 4 / 1.25e9) + 3e-3) * 1e3",
    hint="Two parts: the ring's time when no one is late (chapter 3's formula), and how much of the delay it can hide.",
    mistakes=[
        (2.63659, "That is the all-reduce with no one late; what does the late rank add?"),
        (3, "That is the delay alone: the all-reduce itself still takes its time after it."),
        (3.38659, "The delay is not shared out over the ranks: each rank waits for all of it."),
    ],
)
def ring_straggler_extra_ms():
    return fault.straggler_time("ring", 2 * MIB, 4, 3e-3, slow_rank=2) * 1e3


@exercise(
    chapter=8,
    question="A parameter server (rank 0) all-reduces 512 KiB over p = 6 ranks on the default link (α = 20 µs, "
    "1.25 GB/s). Rank 4 is late. Up to how many milliseconds of delay does the server not notice at all?",
    why="The server receives from ranks 1, 2, 3, 4, 5 in turn through its one receive port; rank 4's message is "
    "wanted only after those of ranks 1, 2 and 3 have arrived, each taking α + nβ = 20 µs + 419.4 µs. Any delay up to "
    "3(α + nβ) = 1.318 ms is hidden behind them; beyond that, every extra millisecond adds to the step.",
    solution="answer = (4 - 1) * (20e-6 + 2**19 / 1.25e9) * 1e3",
    hint="Section 3: in which order does the server receive, and what is it busy with before rank 4's turn?",
    mistakes=[
        (1.757715, "Rank 4's own message is not something it hides behind: count only the ranks before it."),
        (0.439429, "That is one message: how many arrive before rank 4's is wanted?"),
        (0, "The server is busy receiving from the others first."),
    ],
)
def ps_hidden_delay_ms():
    x = np.ones(2**19 // 4, np.float32)
    run = comm.run(lambda c: collectives.allreduce(x, c, "ps"), 6)
    return max(m.end for m in run.trace if m.dst == 0 and m.src == 3) * 1e3  # when the server turns to rank 4


@exercise(
    chapter=8,
    question="Six workers compute gradients g_r = (r + 1)²·1 (rank r, all entries equal). Rank 1 is dead and ranks "
    "4 and 5 miss the parameter server's deadline. What value does every entry of the average they all receive hold?",
    why="The server (rank 0, which computes too) averages only what arrived: ranks 0, 2 and 3, so (1 + 9 + 16)/3 = "
    "26/3 = 8.667. The survivors go on with a gradient from 3 of 6 shards: an unbiased estimate as long as which "
    "worker is late does not depend on its data, only noisier (Chen et al. 2016's backup workers).",
    solution="answer = (1 + 9 + 16) / 3",
    hint="Section 4: which gradients are at the server by the deadline, and what does it divide by?",
    mistakes=[
        (26 / 6, "Dividing by 6 counts the three missing gradients as zeros."),
        (17.4, "Ranks 4 and 5 did not make the deadline: the server does not wait for them."),
        (91 / 6, "Rank 1 is dead and ranks 4 and 5 are late: only three gradients arrived."),
    ],
)
def ps_deadline_average():
    grads = [np.full(4, (r + 1.0) ** 2, np.float32) for r in range(6)]
    compute = [1e-3, math.inf, 1e-3, 2e-3, 1.0, 1.0]
    run = comm.run(lambda c: fault.simple_ps_with_deadline(grads[c.rank], c, compute, 0.01), 6, link=cost.DEFAULT_LINK)
    return float(run.values[0][0][0])


@exercise(
    chapter=8,
    question="A wider MLP, 784 → 256 (ReLU) → 10 (softmax), is trained with Adam. How many bytes of float32 arrays "
    "does its labkit checkpoint hold? Leave out the two scalars (the iteration counter and the learning rate).",
    why="Parameters: 784·256 + 256 + 256·10 + 10 = 203,530. Adam keeps two moments, m and v, of the same shape as "
    "every weight: the checkpoint holds three copies of the model, 3 × 203,530 × 4 = 2,442,360 bytes. That is why "
    "optimizer state, not weights, dominates checkpoints of large models (and why ZeRO shards it).",
    solution="answer = 3 * (784 * 256 + 256 + 256 * 10 + 10) * 4",
    hint="Section 1: count the parameters first (biases too), then what besides the weights a restart needs.",
    mistakes=[
        (814120, "That is the weights alone: a resumed Adam without m and v starts over."),
        (1628240, "That is m and v; the weights are in the checkpoint too."),
    ],
)
def checkpoint_bytes():
    from labkit.compress import smaller
    from labkit.parallel import data as dataparallel

    replica = dataparallel.Replica(smaller.student_mlp(hidden=256, seed=0), dataparallel.make_optimizer("adam", 1e-3))
    arrays = replica.model.get_weights() + replica.optimizer_state()
    return sum(a.nbytes for a in arrays if a.ndim > 0 and a.dtype == np.float32)
