"""Huffman coding (Huffman 1952) of streams of small integers, and fixed-width bit packing, both bit-exact.

Deep Compression (Han, Mao & Dally 2016) ends with this step: the cluster indices and the relative sparse indices
are far from uniform (a few centroids and short gaps are common), so a Huffman code spends fewer bits on them than a
fixed width does; the paper saves 20-30 % of the storage this way. The code is *canonical*: only each symbol's code
length is stored, and encoder and decoder both rebuild the codes from the lengths (sorted by length, then symbol).

    lengths = code_lengths(np.bincount(stream))      # heapq: merge the two rarest subtrees until one is left
    data = huffman_encode(stream)                     # table (lengths) + symbol count + the bits, as bytes
    stream2, used = huffman_decode(data)              # == stream; `used` = bytes read
"""

from __future__ import annotations

import heapq
import itertools
import struct

import numpy as np

__all__ = ["code_lengths", "canonical_codes", "huffman_encode", "huffman_decode", "pack_bits", "unpack_bits"]


def _symbols(stream) -> np.ndarray:
    s = np.asarray(stream)
    if s.size and (not np.issubdtype(s.dtype, np.integer) or s.min() < 0):
        raise ValueError("Huffman coding takes non-negative integer symbols: map your values to 0, 1, 2, … first")
    return s.astype(np.int64).ravel()


def code_lengths(frequencies) -> np.ndarray:
    """Bits of each symbol's Huffman code (0 for symbols that never occur); a lone symbol gets 1 bit.

    Built with a heap: repeatedly merge the two least frequent subtrees; a symbol's length is its leaf's depth.
    Ties are broken by insertion order, so the result is deterministic.
    """
    freq = np.asarray(frequencies, dtype=np.int64)
    if freq.ndim != 1 or (freq < 0).any():
        raise ValueError("frequencies must be a 1-D array of counts ≥ 0, one per symbol")
    used = np.flatnonzero(freq)
    lengths = np.zeros(len(freq), dtype=np.int64)
    if len(used) == 1:
        lengths[used] = 1  # a code needs at least one bit per symbol, or the decoder cannot count symbols
    if len(used) <= 1:
        return lengths
    order = itertools.count()  # tie-breaker: never compare the symbol lists themselves
    heap = [(int(freq[s]), next(order), [int(s)]) for s in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        f1, _, a = heapq.heappop(heap)
        f2, _, b = heapq.heappop(heap)
        lengths[a + b] += 1  # every leaf under the new node moves one level deeper
        heapq.heappush(heap, (f1 + f2, next(order), a + b))
    return lengths


def canonical_codes(lengths) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length) of the canonical code for these lengths: shorter codes first, then by symbol."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes, code, previous = {}, 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        n = int(lengths[symbol])
        code <<= n - previous  # next code of this length: count up, append zeros when the length grows
        codes[int(symbol)] = (code, n)
        code, previous = code + 1, n
    return codes


def _write_table(lengths: np.ndarray) -> bytes:
    # alphabet size as u32, then one byte per symbol; lengths never reach 256 for streams that fit in memory
    return struct.pack("<I", len(lengths)) + lengths.astype(np.uint8).tobytes()


def huffman_encode(stream) -> bytes:
    """Bytes = code table (u32 alphabet size + one length byte per symbol) + u32 symbol count + the code bits."""
    s = _symbols(stream)
    lengths = code_lengths(np.bincount(s)) if s.size else np.zeros(0, np.int64)
    codes = canonical_codes(lengths)
    width = {sym: format(code, f"0{n}b") for sym, (code, n) in codes.items()}
    bits = "".join(width[int(sym)] for sym in s)
    bits += "0" * (-len(bits) % 8)  # pad the last byte with zeros: the symbol count says where the codes end
    payload = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    return _write_table(lengths) + struct.pack("<I", len(s)) + payload


def huffman_decode(data: bytes, offset: int = 0) -> tuple[np.ndarray, int]:
    """(symbols, bytes read) from what `huffman_encode` wrote, starting at ``offset`` in ``data``."""
    (alphabet,) = struct.unpack_from("<I", data, offset)
    lengths = np.frombuffer(data, np.uint8, alphabet, offset + 4).astype(np.int64)
    (count,) = struct.unpack_from("<I", data, offset + 4 + alphabet)
    start = offset + 8 + alphabet
    codes = canonical_codes(lengths)
    lookup = {(n, code): sym for sym, (code, n) in codes.items()}
    bits = np.unpackbits(np.frombuffer(data, np.uint8, len(data) - start, start))
    out = np.empty(count, dtype=np.int64)
    pos, max_len = 0, int(lengths.max(initial=0))
    for i in range(count):
        code, n = 0, 0
        while True:  # canonical codes are prefix-free: read a bit at a time until the code is in the table
            code, n = (code << 1) | int(bits[pos]), n + 1
            pos += 1
            if (n, code) in lookup:
                out[i] = lookup[(n, code)]
                break
            if n >= max_len:
                raise ValueError("corrupt Huffman stream: no code matches; was it written by huffman_encode?")
    return out, 8 + alphabet + (pos + 7) // 8


def pack_bits(values, bits: int) -> bytes:
    """Unsigned integers, each in ``bits`` bits (1-32), most significant first, padded with zeros to whole bytes."""
    v = np.asarray(values, dtype=np.int64).ravel()
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be between 1 and 32, got {bits}")
    if v.size and (v.min() < 0 or v.max() >= 1 << bits):
        raise ValueError(f"values must lie in [0, {(1 << bits) - 1}] to fit in {bits} bits")
    as_bits = np.unpackbits(v.astype(">u4").view(np.uint8).reshape(-1, 4), axis=1)[:, 32 - bits :]
    return np.packbits(as_bits.ravel()).tobytes()


def unpack_bits(data: bytes, count: int, bits: int, offset: int = 0) -> np.ndarray:
    """The ``count`` integers of ``bits`` bits each that `pack_bits` wrote at ``offset``."""
    nbytes = (count * bits + 7) // 8
    raw = np.unpackbits(np.frombuffer(data, np.uint8, nbytes, offset))[: count * bits].reshape(count, bits)
    return (raw.astype(np.int64) << np.arange(bits - 1, -1, -1)).sum(axis=1) if count else np.zeros(0, np.int64)
