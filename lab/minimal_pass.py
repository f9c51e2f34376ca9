"""The least a batched engine block must touch, as one compiled pass with no arithmetic to speak of.

A block of the batched engine (:class:`~posture.batch.BatchEngine`) has to
read its samples, write what it returns and what the fall detector keeps of
each sample, and read and write every device's state once. Whatever the
stages compute, a block pays for bringing those bytes into the cache, and
on this shared host a block starts with caches other machines have used
(docs/architecture.md, "Why a cold block costs twice a warm one").
:class:`MinimalPass` does only that, in the engine's layout and sizes:

* reads ``t`` (n, D) and ``acc``, ``gyr`` (n, 3, D), the block as a gateway
  tick hands it;
* writes the outputs a :class:`~posture.batch.BatchBlock` holds: the times
  device first (S, n), flexion and lateral (n, D) float64, activity int8,
  slouching bool;
* writes each sample's fall history row (8 float32) and time into a ring
  of the engine's depth, one ring row per sample of every device;
* reads and writes, once a block, as many bytes of state per device as the
  engine keeps besides that ring (:func:`state_bytes_per_device`).

Each value written depends on values read, so the compiler can drop
neither. ``python -m lab.kernel_split --floor`` times it and the engine on
the same blocks, alternately, with the same spin between blocks: the
floor a fused pass of every stage (one kernel, nothing written that a later
stage reads back) would start from, and how far today's engine is above it.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np
from numpy.typing import NDArray

from posture.batch import BatchEngine

__all__ = ["MinimalPass", "state_bytes_per_device"]

FloatArray = NDArray[np.float64]


def _numeric_bytes(state: object, capacity: int, skip: tuple[object, ...]) -> int:
    """Bytes per device of the numeric arrays in the state dataclass ``state``
    (nested ones too), leaving out the arrays in ``skip``; object arrays (a
    calibration, fall candidates) are touched only by the rare paths."""
    total = 0
    for field in dataclasses.fields(state):  # type: ignore[arg-type]
        value = getattr(state, field.name)
        if any(value is s for s in skip):
            continue
        if isinstance(value, np.ndarray):
            if value.dtype != object:
                total += value.nbytes // capacity
        elif dataclasses.is_dataclass(value):
            total += _numeric_bytes(value, capacity, skip)
    return total


def state_bytes_per_device(engine: BatchEngine) -> int:
    """Bytes of numeric state ``engine`` keeps per device besides the fall
    detector's ring of samples (which a block writes a row of per sample)."""
    core = engine._core
    capacity = core.capacity
    falls = core.falls.state
    ring = (falls.rows, falls.t_s)
    return _numeric_bytes(core._store, capacity, ()) + _numeric_bytes(falls, capacity, ring)


@numba.njit(nogil=True, error_model="numpy")
def _touch(
    t: FloatArray,
    acc: FloatArray,
    gyr: FloatArray,
    t_rows: FloatArray,
    flexion: FloatArray,
    lateral: FloatArray,
    activity: NDArray[np.int8],
    slouching: NDArray[np.bool_],
    ring: NDArray[np.float32],
    ring_t: FloatArray,
    first_row: int,
    state: FloatArray,
) -> None:
    n, devices = t.shape
    rows = ring.shape[0]
    for i in range(n):
        r = (first_row + i) % rows
        for d in range(devices):
            a0, a1, a2 = acc[i, 0, d], acc[i, 1, d], acc[i, 2, d]
            g = gyr[i, 0, d] + gyr[i, 1, d] + gyr[i, 2, d]
            s = (a0 + a1) + a2
            flexion[i, d] = s
            lateral[i, d] = g
            activity[i, d] = np.int8(s > 1.0)
            slouching[i, d] = g > 10.0
            ring[r, 0, d] = np.float32(a0)
            ring[r, 1, d] = np.float32(a1)
            ring[r, 2, d] = np.float32(a2)
            ring[r, 3, d] = np.float32(s)
            ring[r, 4, d] = np.float32(g)
            ring[r, 5, d] = np.float32(a0 * a1)
            ring[r, 6, d] = np.float32(a2 * g)
            ring[r, 7, d] = np.float32(a1 * g)
            ring_t[r, d] = t[i, d]
        # The times device first, as the block returns them (strided stores).
        for d in range(devices):
            t_rows[d, i] = t[i, d]
    for k in range(state.shape[0]):
        for d in range(devices):
            state[k, d] = state[k, d] * 0.5 + flexion[n - 1, d]


class MinimalPass:
    """The bytes a block of ``engine``'s devices must touch, and nothing else
    (module docstring); its own ring and state, sized as the engine's."""

    def __init__(self, engine: BatchEngine) -> None:
        devices = engine.devices
        ring_rows = engine._core.falls.state.ring_rows
        self.state_bytes = state_bytes_per_device(engine)
        self._ring = np.zeros((ring_rows, 8, devices), dtype=np.float32)
        self._ring_t = np.zeros((ring_rows, devices))
        self._state = np.zeros((math.ceil(self.state_bytes / 8), devices))
        self._seen = 0

    def process(self, t: FloatArray, acc: FloatArray, gyr: FloatArray) -> FloatArray:
        """One block (``t`` (n, D), ``acc`` and ``gyr`` (n, 3, D), C-contiguous);
        returns the times device first, as :class:`~posture.batch.BatchBlock`."""
        n, devices = t.shape
        t_rows = np.empty((devices, n))
        out = (np.empty((n, devices)), np.empty((n, devices)))
        activity = np.empty((n, devices), dtype=np.int8)
        slouching = np.empty((n, devices), dtype=bool)
        _touch(
            t,
            acc,
            gyr,
            t_rows,
            *out,
            activity,
            slouching,
            self._ring,
            self._ring_t,
            self._seen,
            self._state,
        )
        self._seen += n
        return t_rows
