"""Huffman coding and bit packing (labkit.compress.huffman) against hand-worked cases and independent counts."""

import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.compress.huffman import (
    canonical_codes,
    code_lengths,
    huffman_decode,
    huffman_encode,
    pack_bits,
    unpack_bits,
)


def test_classic_example_lengths():
    # CLRS's example (a..f with 5, 9, 12, 13, 16, 45): f=0, c=100, d=101, e=111, a=1100, b=1101
    assert code_lengths([5, 9, 12, 13, 16, 45]).tolist() == [4, 4, 3, 3, 3, 1]


def _optimal_cost(freq):
    """Σ f·len of an optimal code, independently: the sum of the weights of every merge (internal node)."""
    heap = [f for f in freq if f > 0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=2, max_size=40).filter(lambda f: sum(x > 0 for x in f) >= 2))
def test_lengths_are_optimal_and_complete(freq):
    lengths = code_lengths(freq)
    assert int((np.array(freq) * lengths).sum()) == _optimal_cost(freq)
    used = lengths[lengths > 0]
    assert np.sum(2.0**-used) == pytest.approx(1.0)  # Kraft equality: a full binary tree, no wasted code


def test_canonical_codes_are_prefix_free():
    codes = canonical_codes(code_lengths([5, 9, 12, 13, 16, 45]))
    words = [format(c, f"0{n}b") for c, n in codes.values()]
    assert all(not b.startswith(a) for a in words for b in words if a != b)
    assert codes[5] == (0, 1)  # the most frequent symbol gets the one-bit code 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=400))
def test_round_trip_random(stream):
    data = huffman_encode(stream)
    out, used = huffman_decode(data)
    assert out.tolist() == stream
    assert used == len(data)


def test_round_trip_skewed_saves_bits():
    rng = np.random.default_rng(0)
    stream = rng.geometric(0.5, size=5000) - 1  # mostly 0 and 1, like gaps and cluster indices
    data = huffman_encode(stream)
    out, used = huffman_decode(b"xx" + data, offset=2)
    np.testing.assert_array_equal(out, stream)
    assert used == len(data)
    width = int(stream.max()).bit_length()
    assert len(data) < len(pack_bits(stream, width))


def test_single_symbol_and_empty():
    out, _ = huffman_decode(huffman_encode([7, 7, 7]))
    assert out.tolist() == [7, 7, 7]
    out, used = huffman_decode(huffman_encode([]))
    assert out.tolist() == [] and used == 8


def test_pack_bits_by_hand():
    assert pack_bits([1, 2, 3], 2) == bytes([0b01101100])  # 01 10 11 + two padding zeros
    assert unpack_bits(bytes([0b01101100]), 3, 2).tolist() == [1, 2, 3]
    v = np.random.default_rng(1).integers(0, 1 << 13, 101)
    assert unpack_bits(pack_bits(v, 13), 101, 13).tolist() == v.tolist()


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="non-negative integer"):
        huffman_encode([1, -1])
    with pytest.raises(ValueError, match="between 1 and 32"):
        pack_bits([1], 33)
    with pytest.raises(ValueError, match="fit in 2 bits"):
        pack_bits([4], 2)
