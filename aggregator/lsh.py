"""The dedup index's keys: an entry's LSH band keys, its URL key and its text key.

Its own module because both sides need it: `dedup` looks candidates up by these keys, and the
store deletes an entry's keys by recomputing them from its stored features (the key index
carries no index by entry, which would cost more to keep than the rare deletes it serves).

A key is a positive 63-bit integer: a space number (5 bits) over 58 bits of hash. Spaces
0 to BANDS - 1 hold the LSH bands of the MinHash signature; URL_SPACE and TEXT_SPACE hold
the digests of the canonical URL and of the normalized text, so that the exact layers find
their candidates in the same index as the near one, and the entries table needs no index of
random digests (which every new entry would write to, at a random page, once it is big)."""

from __future__ import annotations

import struct

BANDS, ROWS = 25, 4  # LSH over the first 100 permutations: a pair at Jaccard 0.6 is a candidate 97 % of the time
KEY_BITS = 58
SPACES = 32  # 5 bits of space number over KEY_BITS: a positive BIGINT
URL_SPACE, TEXT_SPACE = 30, 31
BAND = 0  # what `kind` says of a key of any band

_BAND_WORDS = struct.Struct(f"<{BANDS * ROWS // 2}Q")
_MASK64 = (1 << 64) - 1
_LOW = (1 << KEY_BITS) - 1
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio)


def band_keys(sig: bytes) -> tuple[int, ...]:
    """One key per LSH band: two entries sharing any key are near-duplicate candidates.

    MinHash values are already uniformly random, so a band's ROWS 32-bit values (read as two
    64-bit words) are folded into one 64-bit number by multiply-xor."""
    w = _BAND_WORDS.unpack_from(sig)
    return tuple((b << KEY_BITS) | ((((w[2 * b] * _MIX) & _MASK64) ^ w[2 * b + 1]) & _LOW) for b in range(BANDS))


def index_keys(url_key: int | None, fingerprint: int | None, sig: bytes | None) -> tuple[int, ...]:
    """Every key of an entry's features: its bands, then its URL key and text key if it has them.

    The digests lose 6 of their 64 bits here; an entry the index offers is compared on its
    stored digest, so a (rare) clash of the shortened keys costs a lookup, not a wrong match."""
    keys = band_keys(sig) if sig else ()
    if url_key is not None:
        keys += ((URL_SPACE << KEY_BITS) | (url_key & _LOW),)
    if fingerprint is not None:
        keys += ((TEXT_SPACE << KEY_BITS) | (fingerprint & _LOW),)
    return keys


def kind(key: int) -> int:
    """URL_SPACE, TEXT_SPACE, or BAND for the key of any band."""
    space = key >> KEY_BITS
    return space if space >= URL_SPACE else BAND
