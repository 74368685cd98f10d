"""Chapter 1 (background): why distribute. Solutions for teachers; the student notebook has only ``answer = ...``.

Each expected answer is computed here by its own formula, written out, not by calling `labkit.background`. The
numbers differ from the chapter's worked cells, so no answer can be copied from an output printed above it.
"""

from __future__ import annotations

from labkit.lessons.check import exercise


@exercise(
    chapter=1,
    question=(
        "An MLP for CIFAR-10 takes each 32 × 32 colour image (3 channels: red, green, blue) flattened into one vector, "
        "has one hidden Dense layer of 512 units and a Dense output layer of 10. How many parameters (weights and "
        "biases) has it?"
    ),
    why=(
        "Flattening gives 32 × 32 × 3 = 3,072 inputs. A Dense layer from m inputs to k outputs holds an m × k weight "
        "matrix and k biases: (3,072 × 512 + 512) + (512 × 10 + 10) = 1,578,506."
    ),
    solution="answer = (32 * 32 * 3 * 512 + 512) + (512 * 10 + 10)",
    hint="Count the inputs first (every pixel of every channel is one number), then weights and biases per layer.",
    mistakes=[
        (1_576_984, "That counts the weight matrices only: every unit of a Dense layer also has a bias."),
        (529_930, "That flattens a grey image: a colour pixel is three numbers, so there are 32 × 32 × 3 inputs."),
    ],
)
def mlp_parameters():
    inputs = 32 * 32 * 3
    layers = [(inputs, 512), (512, 10)]
    return sum(m * k + k for m, k in layers)


@exercise(
    chapter=1,
    question=(
        "A model of 13 billion parameters is trained with Adam in mixed precision. How many GB (10⁹ bytes) do its "
        "model states take (activations not included)?"
    ),
    why=(
        "Per parameter, ZeRO's count: an fp16 weight (2 bytes) and an fp16 gradient (2), plus fp32 copies of the "
        "weight, Adam's momentum and Adam's variance (4 each): 16 bytes. 13 × 10⁹ × 16 = 208 × 10⁹ bytes = 208 GB, "
        "which no single 80 GB GPU holds, although its fp16 weights alone (26 GB) would fit for serving."
    ),
    solution="answer = 13e9 * (2 + 2 + 4 + 4 + 4) / 1e9",
    rel_tol=1e-3,
    hint="List every state training keeps for one parameter, with its precision, and add their bytes.",
    mistakes=[
        (26.0, "That is the fp16 weights alone: what serving needs, not training."),
        (52.0, "That is fp32 weights alone; training also keeps gradients and Adam's two moments."),
        (156.0, "That is the fp32 weights, momentum and variance (12 bytes); the fp16 weights and gradients add 4."),
        (208e9, "Right number of bytes, but the question asks for GB (divide by 10⁹)."),
    ],
)
def training_memory_gb():
    weights_fp16, grads_fp16, master_fp32, momentum_fp32, variance_fp32 = 2, 2, 4, 4, 4
    return 13e9 * (weights_fp16 + grads_fp16 + master_fp32 + momentum_fp32 + variance_fp32) / 1e9


@exercise(
    chapter=1,
    question=(
        "GPT-3 has 175 billion parameters. At 16 bytes a parameter, what is the smallest number of H200 GPUs "
        "(141 GB = 141 × 10⁹ bytes each) whose memories together could merely hold its training states?"
    ),
    why=(
        "Total bytes = 175 × 10⁹ × 16 = 2,800 GB; 2,800 / 141 = 19.86 GPUs. Round up, since 19 GPUs hold only "
        "2,679 GB and there is no fraction of a GPU: 20. A real run needs many more: activations, buffers, and "
        "memory that is never perfectly balanced."
    ),
    solution="import math\n\nanswer = math.ceil(175e9 * 16 / 141e9)",
    hint="Total bytes of the training states, divided by one GPU's bytes; then ask what a fraction of a GPU means.",
    mistakes=[
        (19, "That rounds down (or truncates): 19 × 141 GB = 2,679 GB is less than the 2,800 GB needed. Round up."),
        (175e9 * 16 / 141e9, "That is a fraction of a GPU: round up to a whole number of GPUs."),
        (3, "That holds the fp16 weights (350 GB) only: enough to serve the model, not to train it."),
        (35, "That is the count for 80 GB GPUs; these hold 141 GB each."),
    ],
)
def gpt3_min_gpus():
    total_bytes = 175_000_000_000 * 16
    gpu_bytes = 141_000_000_000
    return -(-total_bytes // gpu_bytes)  # ceiling division in integers


@exercise(
    chapter=1,
    question=(
        "Llama 2 70B (N = 70 billion parameters) was trained on D = 2 trillion tokens (Touvron et al. 2023). "
        "Estimate with C ≈ 6·N·D how many days the training takes on 2,048 A100 GPUs, each with a peak of "
        "312 TFLOP/s, running at 40 % of peak."
    ),
    why=(
        "C = 6 × 70 × 10⁹ × 2 × 10¹² = 8.4 × 10²³ FLOPs. The cluster delivers 2,048 × 312 × 10¹² × 0.4 = "
        "2.56 × 10¹⁷ FLOP/s, so C takes 3.29 × 10⁶ s = 38 days. That is 1.87 million GPU-hours; the Llama 2 paper "
        "reports 1.72 million for this model (Touvron et al. 2023, Table 2), within 10 % of the estimate."
    ),
    solution="answer = 6 * 70e9 * 2e12 / (2048 * 312e12 * 0.4) / 86400",
    rel_tol=0.02,
    hint="First the total FLOPs of training, then the FLOP/s the whole cluster really delivers; seconds into days.",
    mistakes=[
        (6 * 70e9 * 2e12 / (2048 * 312e12) / 86400, "That is at 100 % of peak: the GPUs run at 40 % of it."),
        (2 * 70e9 * 2e12 / (2048 * 312e12 * 0.4) / 86400, "That is 2·N·D, the forward pass only; add the backward."),
        (6 * 70e9 * 2e12 / (2048 * 312e12 * 0.4), "That is in seconds; the question asks for days."),
    ],
)
def llama2_training_days():
    forward, backward = 2, 4  # FLOPs per parameter per token
    flops = (forward + backward) * 70e9 * 2e12
    cluster_flops_per_second = 2048 * 312e12 * 0.4
    return flops / cluster_flops_per_second / (24 * 3600)
