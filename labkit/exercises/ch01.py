"""Chapter 1 (background): why distribute. Solutions for teachers; the student notebook has only ``answer = ...``.

Each expected answer is computed here by its own formula, written out, not by calling `labkit.background`.
"""

from __future__ import annotations

from labkit.check import exercise


@exercise(
    chapter=1,
    question="How many parameters (weights and biases) has the article's MLP, 784 → 100 → 100 → 10?",
    why=(
        "A Dense layer from m inputs to k outputs holds an m×k weight matrix and k biases; add the three layers. "
        "The missing activation of the first layer changes what the model can compute, not how many numbers it stores."
    ),
    solution="answer = (784 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)",
    mistakes=[
        (89400, "That counts the weight matrices only: every output unit also has a bias."),
        (88600, "That is two layers' worth; the model has three Dense layers."),
    ],
)
def mlp_parameters():
    layers = [(784, 100), (100, 100), (100, 10)]
    return sum(m * k + k for m, k in layers)


@exercise(
    chapter=1,
    question=(
        "GPT-2 has 1.5 billion parameters. How many GB (10⁹ bytes) do its model states take when it is trained with "
        "Adam in mixed precision (ZeRO's count: 16 bytes a parameter; activations not included)?"
    ),
    why=(
        "Per parameter: an fp16 weight (2 bytes) and an fp16 gradient (2), plus fp32 copies of the weight, Adam's "
        "momentum and Adam's variance (4 each). Multiply by the number of parameters and divide by 10⁹."
    ),
    solution="answer = 1.5e9 * (2 + 2 + 4 + 4 + 4) / 1e9",
    rel_tol=1e-3,
    mistakes=[
        (3.0, "That is the fp16 weights alone: what inference needs, not training."),
        (6.0, "That is fp32 weights alone; training also keeps gradients and Adam's two moments."),
        (24000000000.0, "Right number of bytes, but the question asks for GB (divide by 10⁹)."),
    ],
)
def gpt2_training_memory_gb():
    weights_fp16, grads_fp16, master_fp32, momentum_fp32, variance_fp32 = 2, 2, 4, 4, 4
    return 1.5e9 * (weights_fp16 + grads_fp16 + master_fp32 + momentum_fp32 + variance_fp32) / 1e9


@exercise(
    chapter=1,
    question=(
        "GPT-3 has 175 billion parameters. At 16 bytes a parameter, what is the smallest number of 80 GB GPUs "
        "(80 × 10⁹ bytes each) whose memories together could merely hold its training states?"
    ),
    why=(
        "Total bytes = parameters × 16; divide by one GPU's bytes and round up, since a fraction of a GPU does not "
        "exist. A real run needs many more: activations, buffers, and memory that is never perfectly balanced."
    ),
    solution="import math\n\nanswer = math.ceil(175e9 * 16 / 80e9)",
    mistakes=[
        (5, "That holds the fp16 weights (350 GB) only: enough to serve the model, not to train it."),
        (1, "One GPU holds 80 GB; GPT-3's training states take thousands of GB."),
    ],
)
def gpt3_min_gpus():
    total_bytes = 175_000_000_000 * 16
    gpu_bytes = 80_000_000_000
    return -(-total_bytes // gpu_bytes)  # ceiling division in integers


@exercise(
    chapter=1,
    question=(
        "GPT-3 (N = 175 billion parameters) was trained on D = 300 billion tokens. Estimate its training compute "
        "in FLOPs with Kaplan et al.'s rule C ≈ 6·N·D."
    ),
    why=(
        "Per token the forward pass costs about 2 FLOPs per parameter (one multiply, one add) and the backward "
        "pass about twice that, so 6 per parameter per token; multiply by N and by D. The GPT-3 paper's own total "
        "is within 1 % of this estimate."
    ),
    solution="answer = 6 * 175e9 * 300e9",
    rel_tol=0.01,
    mistakes=[
        (1.05e23, "That is 2·N·D, the forward pass only; training also runs the backward pass."),
        (5.25e22, "That is N·D: count the FLOPs per parameter per token (forward and backward)."),
    ],
)
def gpt3_training_flops():
    forward, backward = 2, 4  # FLOPs per parameter per token
    return (forward + backward) * 175e9 * 300e9
