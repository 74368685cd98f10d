"""Chapter 9 (future trends): the exercises and, for teachers, their solutions.

Each right answer comes from the kit's own code — `memory.estimate`, `llm.kv_cache_bytes`, a simulated training
step, `llm.decode_comm_seconds` — so a solution written as a formula is checked against what the code computes.
"""

from labkit import cost, llm, memory
from labkit.check import exercise


@exercise(
    chapter=9,
    question="A 1.5 B-parameter model is trained with mixed-precision Adam on 16 devices with ZeRO stage 2. How many "
    "GB (1e9 bytes) of model states does each device hold?",
    why="Stage 2 partitions the optimizer state (12 bytes a parameter) and the fp16 gradients (2 bytes) over the 16 "
    "devices; every device still holds all the fp16 weights (2 bytes): (2 + 14/16) × 1.5e9 bytes.",
    solution="answer = (2 + (2 + 12) / 16) * 1.5e9 / 1e9",
    mistakes=[
        (24.0, "That is plain data parallelism, 16 bytes a parameter on every device: ZeRO partitions part of it."),
        (1.5, "That is ZeRO-3, everything divided by 16."),
        (4.125, "That is ZeRO-1: stage 2 partitions the gradients too."),
    ],
)
def zero2_gb_per_device():
    return memory.estimate(1.5e9, devices=16, zero=2).model_states / memory.GB


@exercise(
    chapter=9,
    question="Llama-2-70B has 80 layers and grouped-query attention with 8 key/value heads of 128 dimensions. How "
    "many GiB of fp16 KV cache does a batch of 8 sequences of 4,096 tokens need?",
    why="Each token stores a key and a value per layer and KV head: 2 × 80 × 8 × 128 × 2 bytes = 320 KiB; 8 × 4,096 "
    "tokens make 10 GiB. With 64 KV heads, as without grouped-query attention, it would be 80 GiB.",
    solution="answer = 2 * 80 * 8 * 128 * 2 * 4096 * 8 / 2**30",
    mistakes=[(80.0, "That counts 64 KV heads: Llama-2-70B shares each key/value head among 8 query heads.")],
)
def llama70b_kv_cache_gib():
    m = llm.LLAMA2["Llama-2-70B"]
    return llm.kv_cache_bytes(m.layers, m.kv_heads, m.head_dim, tokens=4096, batch=8) / 2**30


@exercise(
    chapter=9,
    question="A backward pass runs 4 layers of 5 ms each; each layer has 25 MB of fp16 gradients, all-reduced in one "
    "bucket per layer with the ring over 8 devices on 100 GbE. The communication stream starts a bucket as soon as "
    "its gradients are ready and the previous bucket is done. How many ms do the backward pass and all-reduces take?",
    why="On 100 GbE (5 µs, 12.5 GB/s) a ring all-reduce of 25 MB over 8 devices takes 14 × 5 µs + 2 × 7/8 × 25 MB / "
    "12.5 GB/s = 3.57 ms, less than a layer's 5 ms: each bucket is done before the next is ready, so only the last "
    "one shows: 20 + 3.57 ms. Without overlap the step would take 20 + 4 × 3.57 = 34.28 ms.",
    solution="answer = 4 * 5 + (14 * 5e-3 + 2 * 7 / 8 * 25e6 / 12.5e9 * 1e3)",
    mistakes=[
        (34.28, "That is without overlap: the all-reduces of the first buckets run during the next layers' backward."),
        (20, "The last bucket's all-reduce can only start when the backward pass is done."),
    ],
    rel_tol=1e-4,
)
def overlapped_step_ms():
    link = cost.preset("100 GbE")
    run = llm.simulate_step([5e-3] * 4, [25_000_000] * 4, 25e6, 8, link)
    # the sim hands each bucket to the communication stream with a 0-byte message (α); only the last hand-off is on
    # the critical path, as every earlier bucket is done before the next one is ready
    return (run.time - link.alpha) * 1e3


@exercise(
    chapter=9,
    question="Llama-2-70B (80 layers, h = 8,192) is served in fp16 with tensor parallelism over 8 GPUs on NVLink "
    "(1 µs, 450 GB/s), one sequence at a time. How many ms of all-reduce does each generated token cost?",
    why="Each layer makes 2 all-reduces (after attention and after the MLP) of 8,192 fp16 values: 160 ring "
    "all-reduces of 16 KiB, each 2(t − 1) = 14 latencies plus 2 × 7/8 × 16,384 B / 450 GB/s ≈ 0.06 µs. Latency, not "
    "bandwidth, sets the cost: 160 × 14 µs ≈ 2.25 ms a token, a real part of a 20–30 ms token.",
    solution="answer = 160 * (14 * 1e-6 + 2 * 7 / 8 * 8192 * 2 / 450e9) * 1e3",
    mistakes=[(0.0102, "That counts the bytes only: each all-reduce also pays 14 latencies of 1 µs.")],
    rel_tol=1e-4,
)
def tp_decode_ms_per_token():
    return llm.decode_comm_seconds(llm.LLAMA2["Llama-2-70B"], 8, cost.preset("NVLink 4 (H100)")) * 1e3
