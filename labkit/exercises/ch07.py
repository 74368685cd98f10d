"""Chapter 7 (model compression): the exercises and, for teachers, their solutions.

Each right answer is counted from what the code does — the payload a compressor really builds, the code lengths the
Huffman builder really assigns, the bytes the codec really writes — so a formula is checked against the bytes.
"""

import numpy as np

from labkit.check import exercise
from labkit.compress import codec, gradients, huffman

MLP_PARAMS = 89_610  # 784·100 + 100 + 100·100 + 100 + 100·10 + 10


def _kernel_bytes(scheme: codec.Scheme, shape=(784, 100)) -> dict[str, int]:
    kernel = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return codec.size_report(codec.encode([codec.Layer("dense_1", kernel, None)], scheme)).by_part()


@exercise(
    chapter=7,
    question="Top-k sends k = 1 % of the article's MLP's 89,610 gradient values, each as an int32 position and a "
    "float32 value. How many bytes is one worker's payload?",
    why="k = round(0.01 × 89,610) = 896 values; each needs its position (4 bytes: 89,610 does not fit in 16 bits) "
    "and its value (4 bytes): 896 × 8 bytes, 50× less than the 358,440 bytes of the dense gradient. It is "
    "all-gathered, though, so a ring of p workers still sends (p − 1) of these a step.",
    solution="answer = round(0.01 * 89_610) * (4 + 4)",
    mistakes=[
        (3584, "That counts the values only: the receiver also needs to know where each one goes."),
        (7168.8, "k is a whole number of values: round 896.1 first."),
        (358440, "That is the whole float32 gradient."),
    ],
)
def topk_payload_bytes():
    grad = np.random.default_rng(0).standard_normal(MLP_PARAMS).astype(np.float32)
    return gradients.TopK(ratio=0.01, error_feedback=False).compress(grad, {}).nbytes


@exercise(
    chapter=7,
    question="A stream of 100 cluster indices holds symbol 0 fifty times, symbol 1 25 times, symbol 2 15 times and "
    "symbol 3 ten times. How many bits does a Huffman code spend on the 100 symbols (the table not counted)?",
    why="Huffman merges the two rarest subtrees: 10 + 15 = 25, then 25 + 25 = 50, then 50 + 50. Symbol 0 gets a 1-bit "
    "code, symbol 1 two bits, symbols 2 and 3 three bits: 50·1 + 25·2 + 15·3 + 10·3 = 175 bits, against 200 for a "
    "fixed 2-bit index. The entropy, 1.74 bits a symbol, is the floor no code beats.",
    solution="answer = 50 * 1 + 25 * 2 + 15 * 3 + 10 * 3",
    mistakes=[
        (200, "That is the fixed 2-bit width; Huffman gives the common symbol a shorter code."),
        (174.3, "That is the entropy bound; a code spends a whole number of bits per symbol."),
    ],
)
def huffman_bits():
    freq = np.array([50, 25, 15, 10])
    return int(huffman.code_lengths(freq) @ freq)


@exercise(
    chapter=7,
    question="The first layer's kernel (784 × 100) is quantised to int8, symmetric, one float32 scale per output "
    "channel. How many bytes do its integers and scales take?",
    why="One byte per weight, 784 × 100 = 78,400 bytes, plus one float32 scale for each of the 100 output channels "
    "(400 bytes); symmetric quantisation needs no zero points. A quarter of the 313,600 float32 bytes, plus 0.5 %.",
    solution="answer = 784 * 100 * 1 + 100 * 4",
    mistakes=[
        (78404, "That is one scale for the whole tensor; per channel means one per output unit."),
        (81536, "Per channel means one scale per output unit (100), not per input (784)."),
        (78400, "Add the scales: without them the integers cannot be turned back into weights."),
    ],
)
def int8_per_channel_bytes():
    parts = _kernel_bytes(codec.Scheme(values="linear", bits=8, per_channel=True))
    return parts["weights"] + parts["scales"]


@exercise(
    chapter=7,
    question="The same 784 × 100 kernel is stored with a k-means codebook of 16 float32 centroids and a 4-bit index "
    "per weight (no pruning). How many times smaller than float32 are the indices plus the codebook?",
    why="Indices: 78,400 × 4 bits = 39,200 bytes; codebook: 16 × 4 = 64 bytes. 313,600 / 39,264 = 7.99×: a hair "
    "below 32/4 = 8. The codebook costs 4·2^bits bytes: nothing at 4 bits, but at 16 bits it would be 262,144 "
    "bytes, nearly the whole float32 layer; that is why codebooks stay small and wide integers are stored linearly.",
    solution="answer = (784 * 100 * 4) / (784 * 100 * 4 / 8 + 16 * 4)",
    rel_tol=1e-3,
    mistakes=[(8, "Almost: the 16 centroids are stored too.")],
)
def codebook_ratio():
    parts = _kernel_bytes(codec.Scheme(values="codebook", clusters=16))
    return 784 * 100 * 4 / (parts["weights"] + parts["codebook"])
