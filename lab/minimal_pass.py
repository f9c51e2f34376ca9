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
neither. The same bytes are touched in one of three orders (:class:`Order`):
streaming (each sample across every device, the arrays' own order), in lane
blocks of :data:`~posture.kernels.gravity.LANES` devices over the same
device-last arrays (the order of the engine's lane-block kernels: every
sample of a block of devices, then the next block), and in lane blocks
laid out contiguously (arrays ``(blocks, ..., LANES)``, the ward padded to
whole blocks, a block's samples and state one run of memory).

``python -m lab.kernel_split --floor`` times the three and the engine on the
same blocks, in rotating order, with the same spin before each: the floor a
fused pass of every stage (one kernel, nothing written that a later stage
reads back) would start from, what the order of its loops costs, and how far
today's engine is above it.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import numba
import numpy as np
from numpy.typing import NDArray

from lab.blocked_layout import to_blocks
from posture.batch import BatchEngine
from posture.kernels.gravity import LANES

__all__ = ["Block", "MinimalPass", "Order", "state_bytes_per_device"]

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


class Order(enum.StrEnum):
    """The order in which a pass touches a block's bytes (module docstring)."""

    STREAM = "stream"
    LANES = "lanes"
    BLOCKED = "blocked"


@numba.njit(inline="always")
def _touch_devices(
    t: FloatArray,
    acc: FloatArray,
    gyr: FloatArray,
    outputs: tuple[FloatArray, FloatArray, FloatArray, NDArray[np.int8], NDArray[np.bool_]],
    ring: NDArray[np.float32],
    ring_t: FloatArray,
    first_row: int,
    state: FloatArray,
    lo: int,
    hi: int,
) -> None:
    """Every sample of devices ``lo .. hi - 1`` of device-last arrays, then
    their state: ``t`` (n, D), ``acc``/``gyr`` (n, 3, D); outputs times (D, n),
    flexion, lateral, activity, slouching (n, D); ring (R, 8, D), its times
    (R, D); state (k, D). Each pass below is this body in its own order."""
    t_rows, flexion, lateral, activity, slouching = outputs
    n = t.shape[0]
    for i in range(n):
        r = (first_row + i) % ring.shape[0]
        for d in range(lo, hi):
            a0, a1, a2 = acc[i, 0, d], acc[i, 1, d], acc[i, 2, d]
            s = (a0 + a1) + a2
            g = (gyr[i, 0, d] + gyr[i, 1, d]) + gyr[i, 2, d]
            flexion[i, d] = s
            lateral[i, d] = g
            activity[i, d] = np.int8(s > 1.0)
            slouching[i, d] = g > 10.0
            for c, v in enumerate((a0, a1, a2, s, g, a0 * a1, a2 * g, a1 * g)):
                ring[r, c, d] = np.float32(v)
            ring_t[r, d] = t[i, d]
        # The times device first, as the block returns them (strided stores).
        for d in range(lo, hi):
            t_rows[d, i] = t[i, d]
    for k in range(state.shape[0]):
        for d in range(lo, hi):
            state[k, d] = state[k, d] * 0.5 + flexion[n - 1, d]


Outputs = tuple[FloatArray, FloatArray, FloatArray, NDArray[np.int8], NDArray[np.bool_]]


@numba.njit(nogil=True, error_model="numpy")
def _touch_in_lane_blocks(
    t: FloatArray,
    acc: FloatArray,
    gyr: FloatArray,
    outputs: Outputs,
    ring: NDArray[np.float32],
    ring_t: FloatArray,
    first_row: int,
    state: FloatArray,
    lanes: int,
) -> None:
    """Device-last arrays (as :func:`_touch_devices`) block by block: every
    sample of devices ``base .. base + lanes - 1``, then their state, then the
    next block. With ``lanes`` the ward's size, each sample across the ward."""
    devices = t.shape[1]
    for base in range(0, devices, lanes):
        hi = min(base + lanes, devices)
        _touch_devices(t, acc, gyr, outputs, ring, ring_t, first_row, state, base, hi)


@numba.njit(nogil=True, error_model="numpy")
def _touch_blocked(
    t: FloatArray,
    acc: FloatArray,
    gyr: FloatArray,
    outputs: Outputs,
    ring: NDArray[np.float32],
    ring_t: FloatArray,
    first_row: int,
    state: FloatArray,
) -> None:
    """Lane blocks laid out contiguously (:func:`lab.blocked_layout.to_blocks`):
    ``t`` (B, n, L), ``acc``/``gyr`` (B, n, 3, L); outputs times (B, L, n),
    the others (B, n, L); ring (R, B, 8, L), its times (R, B, L); state
    (B, k, L). Block ``b``'s slices are device-last arrays of ``L`` devices."""
    t_rows, flexion, lateral, activity, slouching = outputs
    lanes = t.shape[2]
    for b in range(t.shape[0]):
        block_outputs = (t_rows[b], flexion[b], lateral[b], activity[b], slouching[b])
        _touch_devices(
            t[b], acc[b], gyr[b], block_outputs, ring[:, b], ring_t[:, b], first_row, state[b],
            0, lanes,
        )  # fmt: skip


Block = tuple[FloatArray, FloatArray, FloatArray]


class MinimalPass:
    """The bytes a block of ``engine``'s devices must touch, and nothing else,
    in ``order`` (module docstring); its own ring and state, sized as the
    engine's (the blocked layout's padded to whole lane blocks)."""

    def __init__(self, engine: BatchEngine, order: Order = Order.STREAM) -> None:
        self.order = order
        self.devices = engine.devices
        rows = engine._core.falls.state.ring_rows
        self.state_bytes = state_bytes_per_device(engine)
        k = math.ceil(self.state_bytes / 8)
        if order is Order.BLOCKED:
            blocks = math.ceil(self.devices / LANES)
            self._ring = np.zeros((rows, blocks, 8, LANES), dtype=np.float32)
            self._ring_t = np.zeros((rows, blocks, LANES))
            self._state = np.zeros((blocks, k, LANES))
        else:
            self._ring = np.zeros((rows, 8, self.devices), dtype=np.float32)
            self._ring_t = np.zeros((rows, self.devices))
            self._state = np.zeros((k, self.devices))
        self._seen = 0

    def layout(self, t: FloatArray, acc: FloatArray, gyr: FloatArray) -> Block:
        """A block given device last (``t`` (n, D), ``acc``/``gyr`` (n, 3, D))
        in this pass's layout: as it is, or (blocked) padded with zeros to whole
        lane blocks and each block's samples made one run; as a gateway would
        build its tick, so the caller does this before timing."""
        if self.order is not Order.BLOCKED:
            return t, acc, gyr
        return to_blocks(t), to_blocks(acc), to_blocks(gyr)

    def process(self, block: Block) -> None:
        """One block in this pass's layout (:meth:`layout`)."""
        t = block[0]
        n = t.shape[-2]
        # The times device first: (D, n), or (blocks, lanes, n) when blocked.
        times_shape = (*t.shape[:-2], t.shape[-1], n) if t.ndim == 3 else (self.devices, n)
        outputs = (
            np.empty(times_shape),
            np.empty(t.shape),
            np.empty(t.shape),
            np.empty(t.shape, dtype=np.int8),
            np.empty(t.shape, dtype=bool),
        )
        ring, ring_t, state = self._ring, self._ring_t, self._state
        if self.order is Order.BLOCKED:
            _touch_blocked(*block, outputs, ring, ring_t, self._seen, state)
        else:
            # Streaming is one lane block as wide as the ward.
            lanes = LANES if self.order is Order.LANES else max(self.devices, 1)
            _touch_in_lane_blocks(*block, outputs, ring, ring_t, self._seen, state, lanes)
        self._seen += n
