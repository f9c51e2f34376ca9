"""Many wearables at once: the posture engine with its state laid out across devices.

:class:`BatchEngine` runs ``D`` wearables of the same configuration (sample
rate, gyroscope or not) in one call per block: the samples of every device
go through one array operation per step (:mod:`posture.core`, the same code
:class:`~posture.engine.PostureEngine` runs with ``D = 1``). Each device's
results equal those of its own :class:`~posture.engine.PostureEngine` fed
the same blocks (to rounding, ~1e-15; the tests hold them to 1e-9 and the
events and activities exactly). The fall detector's per-sample stage runs
across devices too; only devices with an impact that could be a fall, or a
fall under way, take its per-device path (:mod:`posture.falls.stage`).

A block is ``n`` samples of every device (a gateway tick: each wearable's
latest packet). Time stamps are per device; a gap or clock reset of one
device resets only that device. A device whose block holds non-finite
values has that block dropped (counted in :meth:`BatchEngine.stats`, logged,
its state untouched, as if its packet had been lost); the other devices go
on.

``posture-monitor bench engine`` (or ``python -m lab.batch_bench --bench``) measures
the throughput against VQF.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from posture.calibration import Calibration
from posture.config import EngineConfig
from posture.core import EngineCore
from posture.engine import EngineStats
from posture.types import EngineBlock, PostureEvent, SampleError

__all__ = ["BatchBlock", "BatchEngine"]

_log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class BatchBlock:
    """A :class:`BatchEngine`'s output for one block of ``n`` samples of ``D`` devices.

    ``t_s``, ``flexion_deg``, ``lateral_deg`` (D, n) as in
    :class:`~posture.types.EngineBlock`; ``activity`` (D, n) int8;
    ``slouching`` (D, n) bool; ``events[d]`` device ``d``'s events in time
    order; ``dropped`` (D,) devices whose block was dropped (non-finite
    values): NaN angles, UNKNOWN activity, no events.
    """

    t_s: FloatArray
    flexion_deg: FloatArray
    lateral_deg: FloatArray
    activity: NDArray[np.int8]
    slouching: BoolArray
    events: tuple[tuple[PostureEvent, ...], ...]
    dropped: BoolArray

    def device(self, d: int) -> EngineBlock:
        """Device ``d``'s block, as its own :class:`~posture.engine.PostureEngine` gives it."""
        return EngineBlock(
            t_s=self.t_s[d].copy(),
            flexion_deg=self.flexion_deg[d].copy(),
            lateral_deg=self.lateral_deg[d].copy(),
            activity=self.activity[d].copy(),
            slouching=self.slouching[d].copy(),
            events=self.events[d],
        )


class BatchEngine:
    """Posture engines of ``devices`` wearables sharing one configuration.

    Args:
        config: the configuration every device uses.
        devices: number of wearables (>= 1).

    Raises:
        ValueError: ``devices`` < 1.
        ConfigError: from :class:`EngineConfig` if the configuration is bad.
    """

    def __init__(self, config: EngineConfig, devices: int) -> None:
        if not (isinstance(devices, int) and devices >= 1):
            raise ValueError(f"devices must be an int >= 1, got {devices!r}")
        self.config = config
        self.devices = devices
        self._core = EngineCore(config, devices)
        self._dropped = np.zeros(devices, dtype=np.int64)

    # -- per device ------------------------------------------------------------

    def calibration(self, device: int) -> Calibration | None:
        """Device ``device``'s current calibration (None before one)."""
        return self._core.calibrations[device]

    @property
    def calibrated(self) -> BoolArray:
        """(D,) whether each device has a calibration (provisional ones too)."""
        return np.array([c is not None for c in self._core.calibrations])

    def request_calibration(self, device: int) -> None:
        """Capture device ``device``'s upright at its next still period (any pose, any spin).

        As :meth:`posture.engine.PostureEngine.request_calibration`.
        """
        self._core.request_calibration(device)

    def set_calibration(self, device: int, calibration: Calibration) -> None:
        """Use a stored calibration for device ``device`` from now on.

        As :meth:`posture.engine.PostureEngine.set_calibration`.
        """
        self._core.set_calibration(device, calibration)

    def stats(self, device: int) -> EngineStats:
        """Device ``device``'s counters (dropped blocks are not counted as blocks)."""
        c = self._core
        return EngineStats(
            samples=int(c.samples[device]),
            blocks=int(c.blocks[device]),
            gaps=int(c.gaps[device]),
            clock_resets=int(c.clock_resets[device]),
        )

    def dropped_blocks(self, device: int) -> int:
        """Blocks of ``device`` dropped for non-finite values."""
        return int(self._dropped[device])

    # -- processing --------------------------------------------------------------

    def process(
        self, t_s: ArrayLike, acc_g: ArrayLike, gyr_dps: ArrayLike | None = None
    ) -> BatchBlock:
        """Process one block of ``n`` samples of every device.

        Args:
            t_s: (D, n) seconds, each device on its own clock.
            acc_g: (D, n, 3) accelerometer in g, sensor axes.
            gyr_dps: (D, n, 3) gyroscope in °/s, or None (must match
                ``config.has_gyro``).

        Returns:
            Every device's angles, activity, slouch flags and events. Inputs
            are never mutated.

        Raises:
            SampleError: wrong shapes or gyroscope presence; nothing is
                processed then. Non-finite values drop only that device's block.
        """
        t, acc, gyr = self._validate(t_s, acc_g, gyr_dps)
        d, n = t.shape
        finite: BoolArray = np.asarray(
            np.isfinite(t).all(axis=1) & np.isfinite(acc).all(axis=(1, 2)), dtype=bool
        )
        if gyr is not None:
            finite &= np.isfinite(gyr).all(axis=(1, 2))
        active = None
        if not finite.all():
            active = finite
            t, acc, gyr = self._fill_dropped(t, acc, gyr, ~finite)
        if n == 0:
            empty = ((),) * d
            self._core.blocks += 1 if active is None else active
            z = np.zeros((d, 0))
            return BatchBlock(
                t.copy(),
                z,
                z.copy(),
                np.zeros((d, 0), np.int8),
                np.zeros((d, 0), bool),
                empty,
                ~finite,
            )
        out = self._core.process(
            t.T,
            np.ascontiguousarray(acc.transpose(1, 2, 0)),
            None if gyr is None else np.ascontiguousarray(gyr.transpose(1, 2, 0)),
            active,
        )
        return BatchBlock(
            t_s=t.copy(),
            flexion_deg=out.flexion_deg.T,
            lateral_deg=out.lateral_deg.T,
            activity=out.activity.T,
            slouching=out.slouching.T,
            events=_per_device(out.events, d),
            dropped=~finite,
        )

    def _validate(
        self, t_s: ArrayLike, acc_g: ArrayLike, gyr_dps: ArrayLike | None
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        try:
            t = np.asarray(t_s, dtype=np.float64)
            acc = np.asarray(acc_g, dtype=np.float64)
            gyr = None if gyr_dps is None else np.asarray(gyr_dps, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SampleError(f"samples must be numeric arrays: {exc}") from exc
        d = self.devices
        if t.ndim != 2 or t.shape[0] != d:
            raise SampleError(f"t_s must have shape ({d}, n), got {t.shape}")
        n = t.shape[1]
        if acc.shape != (d, n, 3):
            raise SampleError(f"acc_g must have shape ({d}, {n}, 3), got {acc.shape}")
        if self.config.has_gyro and gyr is None:
            raise SampleError("this engine is configured with a gyroscope; gyr_dps is None")
        if not self.config.has_gyro and gyr is not None:
            raise SampleError("this engine is configured without a gyroscope; got gyr_dps")
        if gyr is not None and gyr.shape != (d, n, 3):
            raise SampleError(f"gyr_dps must have shape ({d}, {n}, 3), got {gyr.shape}")
        return t, acc, gyr

    def _fill_dropped(
        self, t: FloatArray, acc: FloatArray, gyr: FloatArray | None, bad: BoolArray
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        """Copies with the dropped devices' rows replaced by harmless values
        (their state is restored after the block anyway)."""
        devices = np.flatnonzero(bad)
        self._dropped[devices] += 1
        _log.warning(
            "dropped a block of %d device(s) with non-finite samples (first: device %d)",
            devices.size,
            int(devices[0]),
        )
        n = t.shape[1]
        t = t.copy()
        last = self._core.last_t_s[devices]
        start = np.where(np.isfinite(last), last, 0.0)
        t[devices] = start[:, None] + (np.arange(1, n + 1) / self.config.sample_rate_hz)
        acc = acc.copy()
        acc[devices] = (0.0, 0.5, 0.0)  # half a g: never still, never walking
        if gyr is not None:
            gyr = gyr.copy()
            gyr[devices] = 0.0
        return t, acc, gyr


def _per_device(
    events: dict[int, list[PostureEvent]], devices: int
) -> tuple[tuple[PostureEvent, ...], ...]:
    per: list[tuple[PostureEvent, ...]] = [()] * devices
    for dev, evs in events.items():
        per[dev] = tuple(evs)
    return tuple(per)
