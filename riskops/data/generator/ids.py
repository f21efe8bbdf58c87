"""Stable, collision-free ids: a keyed bijection on integers, rendered as hex or zero-padded digits.
"""

from __future__ import annotations

import zlib

import numpy as np


def stable_key(*parts: object) -> int:
    """A 32-bit key from `parts` that is the same in every process (unlike hash())."""
    return zlib.crc32("|".join(str(p) for p in parts).encode())


U64 = np.uint64


def mix_bits(x: np.ndarray, key: int, bits: int) -> np.ndarray:
    """A keyed bijection on [0, 2**bits): distinct inputs give distinct, random-looking outputs."""
    mask = U64((1 << bits) - 1)
    half = U64(bits // 2)
    v = (np.asarray(x, dtype=np.uint64) + U64(key % (1 << bits))) & mask
    for mult in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB):
        v ^= v >> half
        v = (v * U64((mult & ((1 << bits) - 1)) | 1)) & mask
    v ^= v >> half
    return v


HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_strings(values: np.ndarray, width: int) -> np.ndarray:
    """`values` as zero-padded lowercase hex strings of `width` digits."""
    v = np.asarray(values, dtype=np.uint64)
    shifts = (np.arange(width - 1, -1, -1, dtype=np.uint64) * U64(4))[None, :]
    digits = ((v[:, None] >> shifts) & U64(15)).astype(np.intp)
    chars = np.ascontiguousarray(HEX[digits])
    return chars.view(f"S{width}").ravel().astype(f"U{width}")
