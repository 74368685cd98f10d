"""Chapter 9 (future trends): the exercises and, for teachers, their solutions.

Each right answer is written out from the chapter's formulas (ZeRO's bytes per parameter, the KV-cache size, the
overlap recurrence, the ring all-reduce's α-β cost), independently of `memory`, `llm` and the simulator, which the
notebook checks against the same formulas. The numbers differ from the worked cells on purpose.
"""

import math

from labkit.lessons.check import exercise


@exercise(
    chapter=9,
    question="A 10 B-parameter model is trained with mixed-precision Adam on 32 devices with ZeRO stage 2. How many "
    "GB (1e9 bytes) of model states does each device hold?",
    why="Stage 2 partitions the optimizer state (K = 12 bytes a parameter) and the fp16 gradients (2 bytes) over the "
    "32 devices; every device still holds all the fp16 weights (2 bytes): (2 + 14/32) × 10e9 bytes = 24.375 GB.",
    solution="answer = (2 + (2 + 12) / 32) * 10e9 / 1e9",
    hint="Go back to the table of section 2: which of the three parts does stage 2 divide by N_d, and which not?",
    mistakes=[
        (160.0, "That is plain data parallelism, 16 bytes a parameter on every device: ZeRO partitions part of it."),
        (5.0, "That is ZeRO-3, everything divided by 32: stage 2 keeps all the fp16 weights on every device."),
        (43.75, "That is ZeRO-1: stage 2 partitions the fp16 gradients too."),
    ],
)
def zero2_gb_per_device():
    psi, n_d = 10e9, 32
    return (2 * psi + (2 + 12) * psi / n_d) / 1e9


@exercise(
    chapter=9,
    question="Llama-2-70B (68.98 B parameters; 80 layers; grouped-query attention with 8 key/value heads of 128 "
    "dimensions) is served in fp16 on 8 GPUs of 80 GB (1e9 bytes) each. After the weights, how many whole sequences "
    "of 4,096 tokens fit in the KV cache (ignore activations and buffers)?",
    why="The weights take 2 × 68.98e9 = 137.96 GB of the 640 GB, leaving 502.04 GB. One token keeps a key and a "
    "value per layer and KV head: 2 × 80 × 8 × 128 × 2 B = 327,680 B, so a 4,096-token sequence needs 1.342 GB "
    "(1.25 GiB). 502.04 / 1.342 = 374.05: 374 whole sequences. Without grouped-query attention (64 KV heads) only 46.",
    solution="answer = int((8 * 80e9 - 2 * 68.98e9) // (2 * 80 * 8 * 128 * 2 * 4096))",
    hint="Two steps: the memory left after the fp16 weights, then the bytes one sequence's keys and values take.",
    mistakes=[
        (476, "That forgets the weights: they take 138 GB of the 640 GB before any cache."),
        (46, "That counts 64 KV heads: Llama-2-70B shares each key/value head among 8 query heads."),
        (401, "That divides GB (1e9 bytes) by GiB (2^30 bytes): a sequence's 1.25 GiB is 1.342 GB."),
        (374.05, "A sequence's cache fits whole or not at all: round down."),
    ],
    rel_tol=1e-9,
)
def llama70b_kv_cache_gib():
    free = 8 * 80e9 - 2 * 68.98e9
    per_sequence = 2 * 80 * 8 * 128 * 2 * 4096
    return math.floor(free / per_sequence)


@exercise(
    chapter=9,
    question="A backward pass runs 4 layers of 2 ms each; each layer has 25 MB of fp16 gradients, all-reduced in one "
    "bucket per layer with the ring over 8 devices on 100 GbE (5 µs, 12.5 GB/s). The communication stream starts a "
    "bucket as soon as its gradients are ready and the previous bucket is done. How many ms do the backward pass and "
    "all-reduces take (ignore the hand-off between the streams)?",
    why="A ring all-reduce of 25 MB over 8 devices takes 14 × 5 µs + 2 × 7/8 × 25 MB / 12.5 GB/s = 3.57 ms, more "
    "than a layer's 2 ms: the buckets queue. start_k = max(r_k, end_(k−1)): the first starts at 2 ms, every later "
    "one when the previous ends, so the step ends at 2 + 4 × 3.57 = 16.28 ms (without overlap 8 + 14.28 = 22.28 ms).",
    solution="answer = 2 + 4 * (14 * 5e-3 + 2 * 7 / 8 * 25e6 / 12.5e9 * 1e3)",
    hint="Compare one bucket's all-reduce time with one layer's backward time, then apply start_k = max(r_k, end_k-1).",
    mistakes=[
        (22.28, "That is without overlap: the all-reduces of the first buckets run during the next layers' backward."),
        (11.57, "Only the last bucket shows when each all-reduce is shorter than a layer; here it is longer."),
    ],
    rel_tol=1e-3,
)
def overlapped_step_ms():
    p, alpha, bandwidth, nbytes = 8, 5e-6, 12.5e9, 25e6
    t_k = 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes / bandwidth
    end = 0.0
    for k in range(1, 5):
        end = max(k * 2e-3, end) + t_k  # start_k = max(r_k, end_(k-1))
    return end * 1e3


@exercise(
    chapter=9,
    question="Llama-2-70B (80 layers, h = 8,192) is served in fp16 with tensor parallelism over 8 GPUs on NVLink "
    "(1 µs, 450 GB/s), with a batch of 32 sequences decoding together. How many ms of all-reduce does one decoding "
    "step (one new token for each of the 32 sequences) cost?",
    why="Each layer makes 2 all-reduces (after attention and after the MLP) of batch × h = 32 × 8,192 fp16 values, "
    "512 KiB: 160 ring all-reduces, each 2(t − 1) = 14 latencies plus 2 × 7/8 × 524,288 B / 450 GB/s = 2.04 µs. "
    "160 × 16.04 µs = 2.57 ms a step: only 14 % more than batch 1 (2.25 ms), because latency, not bandwidth, "
    "dominates: batching makes the all-reduces nearly free per token.",
    solution="answer = 160 * (14 * 1e-6 + 2 * 7 / 8 * 32 * 8192 * 2 / 450e9) * 1e3",
    hint="What does a batch change in each all-reduce: the number of messages, or their size?",
    mistakes=[
        (2.25, "That is batch 1: each all-reduce now carries 32 × 8,192 values."),
        (0.3262, "That counts the bytes only: each all-reduce also pays 14 latencies of 1 µs."),
        (1.2831, "That is one all-reduce per layer: attention and the MLP each end with one."),
    ],
    rel_tol=1e-3,
)
def tp_decode_ms_per_token():
    layers, h, t, batch, alpha, bandwidth = 80, 8192, 8, 32, 1e-6, 450e9
    nbytes = batch * h * 2
    return 2 * layers * (2 * (t - 1) * alpha + 2 * (t - 1) / t * nbytes / bandwidth) * 1e3
