"""Run lengths and forward fills along time, for many devices at once.

Arrays are ``(n, D)``: ``n`` samples (time, the first axis) of ``D``
devices. Each function continues a state carried from the previous block
(``(D,)``), so results do not depend on where a stream is cut.
``np.count_nonzero`` does the whole-array checks: on a single wearable's short
block it costs a fifth of ``ndarray.any()``, and they run many times a block.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "device_columns",
    "forward_fill",
    "last_true",
    "run_length",
    "running_max",
]

BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


_COUNTS: dict[int, IntArray] = {}


def _counts(n: int) -> IntArray:
    """(n, 1) column 1..n (cached; read-only)."""
    c = _COUNTS.get(n)
    if c is None:
        c = np.arange(1, n + 1, dtype=np.int64)[:, None]
        c.flags.writeable = False
        if len(_COUNTS) < 256:
            _COUNTS[n] = c
    return c


def running_max(x: IntArray) -> IntArray:
    """Running maximum along time (axis 0) of ``x`` (n, D); a new array.

    For many devices a loop over the samples (one array operation each) is
    several times faster than ``np.maximum.accumulate`` along the first axis;
    for a few, the accumulate is. Both give the same numbers.
    """
    if x.ndim < 2 or x.shape[1] < 32:
        return np.maximum.accumulate(x, axis=0)
    out = x.copy()
    for i in range(1, out.shape[0]):
        np.maximum(out[i - 1], out[i], out=out[i])
    return out


def run_length(flags: BoolArray, carried: IntArray) -> IntArray:
    """Length (n, D) of the run of True ending at each sample, continuing ``carried`` (D,)."""
    n = flags.shape[0]
    count = np.count_nonzero(flags)
    if count == flags.size:
        return carried + _counts(n)
    if count == 0:
        return np.zeros(flags.shape, dtype=np.int64)
    idx = _counts(n)
    last_false = running_max(np.where(flags, 0, idx))
    run = idx - last_false
    run += np.where(last_false == 0, carried, 0)
    return run


def forward_fill(values: IntArray, valid: BoolArray, carried: IntArray) -> IntArray:
    """``values`` (n, D) where ``valid``, else the last valid value (``carried`` (D,) first)."""
    count = np.count_nonzero(valid)
    if count == valid.size:
        return values
    if count == 0:
        return np.broadcast_to(carried, values.shape).copy()
    idx = np.arange(values.shape[0])[:, None]
    last = running_max(np.where(valid, idx, -1))
    filled = np.take_along_axis(values, np.maximum(last, 0), axis=0)
    return np.where(last >= 0, filled, carried)


def last_true(flags: BoolArray) -> IntArray:
    """Index (D,) of the last True per column of (n, D), or -1."""
    n = flags.shape[0]
    last = n - 1 - np.argmax(flags[::-1], axis=0)
    return np.where(flags[last, np.arange(flags.shape[1])], last, -1)


def device_columns(devices: IntArray, signals: int, n_devices: int) -> IntArray:
    """Column indices of ``devices`` in a ``(n, signals * n_devices)`` block.

    Blocks lay signals out component-major (column ``s * n_devices + d``);
    the result lists signal 0 of every given device, then signal 1, ...,
    matching ``x[:, :, devices].reshape(n, -1)`` of a ``(n, signals, D)`` array.
    """
    return (np.arange(signals)[:, None] * n_devices + np.asarray(devices)[None, :]).reshape(-1)
