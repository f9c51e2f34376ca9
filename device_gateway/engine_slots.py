"""Which batched engine, and which device slot in it, runs each wearable.

The gateway runs one :class:`posture.batch.BatchEngine` per stream shape
(sample rate, gyroscope or not): every wearable streaming that shape is a
device slot in it, so one engine call serves all of them. A wearable gets a
slot with its first samples (with its patient's slouch prescription), keeps
it for as long as its stream keeps that shape, and moves to another engine
when the wearable changes its sample rate: the calibration goes with it (same
patient, same mounting), as it did when each wearable had its own engine.
The slot it leaves is reset and handed to the next wearable that needs one
in that engine, so slots are reused rather than the engines only growing.

Only the tick's engine pass (``device_gateway.engine_tick``) calls into
here, from one thread at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from posture import EngineConfig, EngineStats, SlouchSettings
from posture.batch import BatchBlock, BatchEngine
from posture.kernels import Kernel, selected_kernel

__all__ = ["EngineSlots", "SlotHolder", "StreamShape"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamShape:
    """What a batched engine is built for: every device in it shares these."""

    sample_rate_hz: float
    has_gyro: bool


class SlotHolder:
    """A wearable's place in the engines: set by :class:`EngineSlots` only.

    ``placed`` is (stream shape, slot), or None before the first samples:
    one attribute, replaced whole, because the event loop reads it (for
    the patient state) while the tick's worker thread may be moving it.
    """

    __slots__ = ("calibration_requested", "placed", "slouch")

    def __init__(self, slouch: SlouchSettings) -> None:
        self.slouch = slouch
        self.placed: tuple[StreamShape, int] | None = None
        self.calibration_requested = False
        """Capture the upright again before the next samples (a long absence)."""


class EngineSlots:
    """One :class:`BatchEngine` per stream shape and the wearables' slots in them."""

    def __init__(self, kernel: Kernel | None = None) -> None:
        self._engines: dict[StreamShape, BatchEngine] = {}
        self._free: dict[StreamShape, list[int]] = {}
        self.kernel = selected_kernel(kernel)
        """The implementation the engines compute with (None given:
        ``$POSTURE_KERNEL``, else compiled)."""

    def use_kernel(self, kernel: Kernel) -> None:
        """Every engine, and every engine made later, computes with ``kernel``
        from its next block on (between engine calls)."""
        self.kernel = kernel
        for engine in self._engines.values():
            engine.use_kernel(kernel)

    @property
    def engines(self) -> dict[StreamShape, BatchEngine]:
        """The engines made so far, by stream shape (for metrics and tests)."""
        return self._engines

    def place(self, holder: SlotHolder, shape: StreamShape) -> int:
        """``holder``'s slot in ``shape``'s engine (given one there if needed)."""
        placed = holder.placed
        slot = self._move(holder, shape) if placed is None or placed[0] != shape else placed[1]
        if holder.calibration_requested:
            holder.calibration_requested = False
            self._engines[shape].request_calibration(slot)
        return slot

    def process(
        self,
        shape: StreamShape,
        slots: NDArray[np.intp],
        t_s: NDArray[np.float64],
        acc_g: NDArray[np.float64],
        gyr_dps: NDArray[np.float64] | None,
    ) -> BatchBlock:
        """One call of ``shape``'s engine over ``slots`` (S,), arrays device last:
        ``t_s`` (n, S), ``acc_g`` and ``gyr_dps`` (n, 3, S)
        (:meth:`~posture.batch.BatchEngine.process_device_last`); the block's
        rows are the slots in that order."""
        return self._engines[shape].process_device_last(t_s, acc_g, gyr_dps, devices=slots)

    def calibrated(self, holder: SlotHolder) -> bool:
        placed = holder.placed
        if placed is None:
            return False
        return self._engines[placed[0]].calibration(placed[1]) is not None

    def stats(self, holder: SlotHolder) -> EngineStats | None:
        """The counters of ``holder``'s slot (since it got that slot); None before."""
        placed = holder.placed
        if placed is None:
            return None
        return self._engines[placed[0]].stats(placed[1])

    def _move(self, holder: SlotHolder, shape: StreamShape) -> int:
        calibration = None
        if holder.placed is not None:
            old_shape, old_slot = holder.placed
            calibration = self._engines[old_shape].calibration(old_slot)
            _log.info("stream changed from %s to %s; the wearable moves engine", old_shape, shape)
            self._free.setdefault(old_shape, []).append(old_slot)
        engine = self._engines.get(shape)
        if engine is None:
            engine = self._engines[shape] = BatchEngine(
                EngineConfig(sample_rate_hz=shape.sample_rate_hz, has_gyro=shape.has_gyro),
                devices=0,
                kernel=self.kernel,
            )
        free = self._free.get(shape)
        if free:
            slot = free.pop()
            engine.reset_device(slot, slouch=holder.slouch)
        else:
            slot = engine.add_device(slouch=holder.slouch)
        if calibration is not None:
            # Same patient, same mounting: only the sample rate changed.
            engine.set_calibration(slot, calibration)
        holder.placed = (shape, slot)
        return slot
