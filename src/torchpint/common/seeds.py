"""One seed mixer for everything keyed: data order, dropout masks, augmentation."""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def mix_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (a splitmix64 chain): e.g. ``(seed, level, i)``.

    Deterministic in every process and run (unlike ``hash``), and well mixed, so nearby
    keys give unrelated seeds. Keys are taken modulo 2**64.
    """
    h = _GOLDEN
    for k in keys:
        h = (h ^ (int(k) & _MASK64)) & _MASK64
        h = (h + _GOLDEN) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h & ((1 << 63) - 1)
