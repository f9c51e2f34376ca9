"""Counter-based random numbers: the same key and index give the same value.

The simulator draws sensor noise and link faults from a hash of (key,
sample or packet index) rather than from a sequential generator, so a value
does not depend on how many values were drawn before it, nor on how the
event loop happened to batch the work: the samples of a seed are identical
at identical scenario times however fast the simulation runs.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["normal", "normal_keyed", "stream_key", "uniform"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def stream_key(*parts: int | str) -> int:
    """A 64-bit key from any mix of ints and strings (stable across runs)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    # SplitMix64 finaliser. Arrays (never NumPy scalars) so that the
    # intended wrap-around does not raise an overflow warning.
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _bits(key: int | NDArray[np.uint64], index: ArrayLike) -> NDArray[np.uint64]:
    idx = np.atleast_1d(np.asarray(index, dtype=np.int64)).astype(np.uint64)
    keys = np.broadcast_to(np.asarray(key, dtype=np.uint64), idx.shape)
    return _mix(_mix(idx * _GOLDEN + keys))


def uniform(key: int, index: ArrayLike) -> NDArray[np.float64]:
    """Uniform numbers in (0, 1), one per index (any shape, at least 1-d)."""
    return _unit(_bits(key, index))


def _unit(bits: NDArray[np.uint64]) -> NDArray[np.float64]:
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def normal(key: int, index: ArrayLike) -> NDArray[np.float64]:
    """Standard normal numbers, one per index (Box-Muller on two hashes)."""
    return normal_keyed(np.asarray(key, dtype=np.uint64), index)


def normal_keyed(keys: NDArray[np.uint64], index: ArrayLike) -> NDArray[np.float64]:
    """:func:`normal` with a key per index: ``keys`` broadcasts against ``index``.

    Row ``i`` of ``normal_keyed(keys[:, None], index)`` is ``normal(keys[i], index[i])``,
    so many wearables' noise is drawn in one call.
    """
    idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
    u1 = _unit(_bits(keys, 2 * idx))
    u2 = _unit(_bits(keys, 2 * idx + 1))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
