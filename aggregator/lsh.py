"""LSH band keys of a MinHash signature: the near-duplicate index's keys.

Its own module because both sides need it: `dedup` looks candidates up by these keys, and the
store deletes an entry's keys by recomputing them from its stored signature (the band tables
carry no index by entry, which would cost more to keep than the rare deletes it serves)."""

from __future__ import annotations

import struct

BANDS, ROWS = 25, 4  # LSH over the first 100 permutations: a pair at Jaccard 0.6 is a candidate 97 % of the time

_BAND_WORDS = struct.Struct(f"<{BANDS * ROWS // 2}Q")
_MASK64 = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio)
KEY_BITS = 58  # a key is the band number (5 bits) over 58 bits of the band's hash: a positive BIGINT


def band_keys(sig: bytes) -> tuple[int, ...]:
    """One key per LSH band: two entries sharing any key are near-duplicate candidates.

    MinHash values are already uniformly random, so a band's ROWS 32-bit values (read as two
    64-bit words) are folded into one 64-bit number by multiply-xor; the band number goes on
    top, so one indexed column holds every band."""
    w = _BAND_WORDS.unpack_from(sig)
    low = (1 << KEY_BITS) - 1
    return tuple((b << KEY_BITS) | ((((w[2 * b] * _MIX) & _MASK64) ^ w[2 * b + 1]) & low) for b in range(BANDS))
