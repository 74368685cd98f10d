"""Chapter 7 (model compression): the exercises and, for teachers, their solutions.

Each right answer is counted from what the code does — the bytes the all-gather of a top-k payload really costs on
the simulator's accounting, the code lengths the Huffman builder really assigns, the bytes the codec really writes —
so a solution written as a formula is checked against the bytes. None uses the numbers of the chapter's worked cells.
"""

import numpy as np

from labkit.compress import codec, gradients, huffman
from labkit.lessons.check import exercise

MLP_PARAMS = 89_610  # 784·100 + 100 + 100·100 + 100 + 100·10 + 10


def _kernel_bytes(scheme: codec.Scheme, shape) -> dict[str, int]:
    kernel = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return codec.size_report(codec.encode([codec.Layer("dense", kernel, None)], scheme)).by_part()


@exercise(
    chapter=7,
    question="Six data-parallel workers train the article's MLP (89,610 gradient values). Each sends top-k with "
    "k = 0.5 % of the values, every value as an int32 position and a float32 value, and the payloads travel by a "
    "ring all-gather. How many bytes does one worker send per step?",
    why="k = round(0.005 × 89,610) = 448 values, each with its position and its value: a payload of 448 × (4 + 4) = "
    "3,584 bytes. Payloads of different workers pick different positions, so they cannot be summed on the way: a "
    "ring all-gather makes every worker forward p − 1 = 5 of them, 5 × 3,584 = 17,920 bytes. The uncompressed "
    "ring all-reduce sends 2(p − 1)/p × 358,440 = 597,400 bytes: 33× more, not the 100× that 0.5 % suggests.",
    solution="answer = (6 - 1) * round(0.005 * 89_610) * (4 + 4)",
    hint="Section 8: what is in one payload, and how many payloads does a gather make each worker pass on?",
    mistakes=[
        (3584, "That is one worker's own payload; the gather makes each worker forward the others' too."),
        (8960, "The receiver also needs to know where each value goes: count the positions."),
        (5973.333333, "Top-k payloads are not summable, so they are gathered, not all-reduced with 2(p − 1)/p."),
    ],
)
def topk_payload_bytes():
    return gradients.wire_bytes(gradients.TopK(ratio=0.005, error_feedback=False), MLP_PARAMS, 6)


@exercise(
    chapter=7,
    question="A stream of 100 cluster indices holds symbol 0 forty times, symbol 1 thirty times, symbol 2 fifteen "
    "times, symbol 3 ten times and symbol 4 five times. How many bits does a Huffman code spend on the 100 symbols "
    "(the table not counted)?",
    why="Huffman merges the two rarest subtrees each time: 5 + 10 = 15, then 15 + 15 = 30, then 30 + 30 = 60, then "
    "40 + 60. The depths are the code lengths: symbol 0 one bit, symbol 1 two, symbol 2 three, symbols 3 and 4 four "
    "(the two rarest are always siblings, so they have the same length): 40·1 + 30·2 + 15·3 + 10·4 + 5·4 = 205 bits, "
    "against 300 for a fixed 3-bit index. The entropy, 2.01 bits a symbol, is the floor no code beats.",
    solution="answer = 40 * 1 + 30 * 2 + 15 * 3 + 10 * 4 + 5 * 4",
    hint="Build the tree by merging the two rarest subtrees, again and again; a symbol's depth is its code length.",
    mistakes=[
        (300, "That is a fixed 3-bit index; Huffman gives the common symbols shorter codes."),
        (210, "The two rarest symbols are merged first, so they are siblings: their codes have the same length."),
        (201.0, "That is about the entropy bound; a code spends a whole number of bits on each symbol."),
    ],
)
def huffman_bits():
    freq = np.array([40, 30, 15, 10, 5])
    return int(huffman.code_lengths(freq) @ freq)


@exercise(
    chapter=7,
    question="A 1024 × 256 kernel (1,024 inputs, 256 output units) is quantised to int8, symmetric, one float32 "
    "scale per output channel. How many bytes do its integers and scales take?",
    why="One byte per weight, 1,024 × 256 = 262,144 bytes, plus one float32 scale for each of the 256 output "
    "channels (1,024 bytes); symmetric quantisation needs no zero points. A quarter of the 1,048,576 float32 bytes, "
    "plus 0.4 %.",
    solution="answer = 1024 * 256 * 1 + 256 * 4",
    hint="Section 4: what 'per output channel' counts, and what each channel stores besides its integers.",
    mistakes=[
        (262148, "That is one scale for the whole tensor; per channel means one per output unit."),
        (266240, "Per channel means one scale per output unit (256), not per input (1,024)."),
        (262144, "Add the scales: without them the integers cannot be turned back into weights."),
    ],
)
def int8_per_channel_bytes():
    parts = _kernel_bytes(codec.Scheme(values="linear", bits=8, per_channel=True), (1024, 256))
    return parts["weights"] + parts["scales"]


@exercise(
    chapter=7,
    question="A 100 × 100 kernel is stored with a k-means codebook of 256 float32 centroids and an 8-bit index per "
    "weight (no pruning). How many times smaller than float32 are the indices plus the codebook?",
    why="Indices: 10,000 × 8 bits = 10,000 bytes; codebook: 256 × 4 = 1,024 bytes. 40,000 / 11,024 = 3.63×, well "
    "below 32/8 = 4: a codebook costs 4·2^bits bytes, which is nothing beside a big layer at 4 bits but a tenth of "
    "this small one at 8. That is why codebooks stay small (Han et al. 2016 use 5 bits for fully connected layers) "
    "and wide integers are stored linearly, with one scale.",
    solution="answer = (100 * 100 * 4) / (100 * 100 * 8 / 8 + 256 * 4)",
    rel_tol=1e-3,
    hint="Count both parts in bytes: the indices, and the centroids every index points into.",
    mistakes=[
        (4, "That is 32/8: the 256 centroids are stored too."),
        (3.9002, "Each centroid is a float32: 4 bytes, not 1."),
    ],
)
def codebook_ratio():
    parts = _kernel_bytes(codec.Scheme(values="codebook", clusters=256), (100, 100))
    return 100 * 100 * 4 / (parts["weights"] + parts["codebook"])
