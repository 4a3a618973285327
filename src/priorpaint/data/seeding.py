"""Counter-based seeds: every random choice is a pure function of (seed, step, example index).

Training draws its crops, flips, timesteps and noise from seeds derived here instead of from a
stateful generator. That makes a resumed run replay exactly the stream a straight run would
have seen, and makes example k of a global batch identical whether it lands on rank 0 of two
or on the single process of one.
"""

from __future__ import annotations

__all__ = ["derive_seed"]

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One SplitMix64 round: a bijective, well-mixing map of 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def derive_seed(*values: int) -> int:
    """A 63-bit seed from a tuple of integers (order matters; negative values are allowed)."""
    state = 0x2545F4914F6CDD1D
    for value in values:
        state = _splitmix64(state ^ (int(value) & _MASK))
    return state >> 1
