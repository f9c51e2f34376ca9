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

A block is ``n`` samples of every device, or of a subset of them (a
gateway tick: the latest packet of each wearable that sent one; the others'
state is untouched, so a device's results do not depend on the subsets its
blocks came in). Devices join (:meth:`BatchEngine.add_device`), a slot can
start over for another wearable or patient
(:meth:`BatchEngine.reset_device`), and each device has its own slouch rule
(:meth:`BatchEngine.set_slouch_settings`). Time stamps are per device; a
gap or clock reset of one device resets only that device. A device whose
block holds non-finite values has that block dropped (counted in
:meth:`BatchEngine.dropped_blocks`, logged, its state untouched, as if its
packet had been lost); the other devices go on.

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
from posture.kernels import Kernel
from posture.steps import BlockSteps, block_steps
from posture.types import EngineBlock, PostureEvent, SampleError, SlouchSettings

__all__ = ["BatchBlock", "BatchEngine"]

_log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IndexArray = NDArray[np.intp]


@dataclass(frozen=True)
class BatchBlock:
    """A :class:`BatchEngine`'s output for one block of ``n`` samples of ``S`` devices.

    Row ``r`` is the block's ``r``-th device: device ``r`` of the engine
    when the block had every device, else ``devices[r]`` of the call
    (:attr:`devices` holds the engine indices of the rows).
    ``t_s``, ``flexion_deg``, ``lateral_deg`` (S, n) as in
    :class:`~posture.types.EngineBlock`; ``activity`` (S, n) int8;
    ``slouching`` (S, n) bool; ``events[r]`` row ``r``'s events in time
    order; ``dropped`` (S,) rows whose block was dropped (non-finite
    values): NaN angles, UNKNOWN activity, no events.
    """

    t_s: FloatArray
    flexion_deg: FloatArray
    lateral_deg: FloatArray
    activity: NDArray[np.int8]
    slouching: BoolArray
    events: tuple[tuple[PostureEvent, ...], ...]
    dropped: BoolArray
    devices: IndexArray

    def device(self, d: int) -> EngineBlock:
        """Row ``d``'s block, as its own :class:`~posture.engine.PostureEngine` gives it."""
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

    Devices are numbered 0 .. :attr:`devices` - 1 in the order they were
    created or added; an index stays a device's for good (a slot is reused
    with :meth:`reset_device`, never removed).

    Args:
        config: the configuration every device uses (``config.slouch`` is
            each device's slouch rule until :meth:`set_slouch_settings`).
        devices: number of wearables to start with (>= 0; add more with
            :meth:`add_device`).
        kernel: the implementation to compute with (None: ``$POSTURE_KERNEL``,
            else compiled; :meth:`use_kernel` changes it between blocks).

    Raises:
        ValueError: ``devices`` < 0.
        ConfigError: from :class:`EngineConfig` if the configuration is bad.
    """

    def __init__(
        self, config: EngineConfig, devices: int, kernel: Kernel | str | None = None
    ) -> None:
        if not (isinstance(devices, int) and devices >= 0):
            raise ValueError(f"devices must be an int >= 0, got {devices!r}")
        self.config = config
        self._core = EngineCore(config, devices, kernel)
        self._dropped = np.zeros(devices, dtype=np.int64)

    @property
    def devices(self) -> int:
        """Number of devices (indices 0 .. devices - 1)."""
        return self._core.devices

    @property
    def kernel(self) -> Kernel:
        """The implementation the engine computes with."""
        return self._core.kernel

    def use_kernel(self, kernel: Kernel | str) -> Kernel:
        """Compute with ``kernel`` from the next block on, every device carrying
        on where it was; returns the implementation in use (compiled falls
        back to NumPy where numba does not import). The two agree to rounding
        (the same events at the same samples), so a gateway can start on NumPy
        while the compiled kernels are being compiled and move over after.

        Raises:
            ValueError: ``kernel`` names no implementation.
        """
        return self._core.use_kernel(kernel)

    # -- devices joining, leaving, settings --------------------------------------

    def add_device(self, slouch: SlouchSettings | None = None) -> int:
        """A new device, fresh (uncalibrated, filters at rest, counters zero).

        Args:
            slouch: its slouch rule (None: ``config.slouch``).

        Returns:
            Its index (the previous :attr:`devices`). The state grows by
            doubling its capacity, so adding devices one by one is cheap
            (amortised O(1) copies each).
        """
        device = self._core.add_device(slouch)
        if device == self._dropped.size:
            grown = np.zeros(2 * self._dropped.size + 1, np.int64)
            grown[: self._dropped.size] = self._dropped
            self._dropped = grown
        self._dropped[device] = 0
        return device

    def reset_device(self, device: int, slouch: SlouchSettings | None = None) -> None:
        """Device ``device``'s slot starts over for another wearable or patient.

        Everything it remembered goes: calibration (and any pending request),
        filters, activity and slouch state, counters (:meth:`stats`,
        :meth:`dropped_blocks`), clock; its fall detector starts over (a
        fall in progress and its recent samples are forgotten).

        Args:
            device: an index in use.
            slouch: the slot's slouch rule from now on (None: ``config.slouch``).

        Raises:
            IndexError: ``device`` is not in use.
        """
        self._check_device(device)
        self._core.reset_device(device, slouch if slouch is not None else self.config.slouch)
        self._dropped[device] = 0

    def set_slouch_settings(self, device: int, slouch: SlouchSettings) -> None:
        """Device ``device`` uses ``slouch`` (threshold, hysteresis, dwell,
        lateral threshold, ``while_walking``) from its next sample on; a
        dwell count or slouch in progress carries on under the new rule.

        Raises:
            IndexError: ``device`` is not in use.
            TypeError: ``slouch`` is not a :class:`~posture.types.SlouchSettings`.
        """
        self._check_device(device)
        if not isinstance(slouch, SlouchSettings):
            raise TypeError(f"slouch must be a SlouchSettings, got {type(slouch).__name__}")
        self._core.set_slouch_settings(device, slouch)

    def slouch_settings(self, device: int) -> SlouchSettings:
        """Device ``device``'s slouch rule."""
        self._check_device(device)
        p = self._core.slouch_params
        return SlouchSettings(
            threshold_deg=float(p.threshold_deg[device]),
            hysteresis_deg=float(p.hysteresis_deg[device]),
            dwell_s=float(p.dwell_s[device]),
            lateral_threshold_deg=float(p.lateral_threshold_deg[device]),
            while_walking=bool(p.while_walking[device]),
        )

    # -- per device ------------------------------------------------------------

    def calibration(self, device: int) -> Calibration | None:
        """Device ``device``'s current calibration (None before one)."""
        self._check_device(device)
        cal: Calibration | None = self._core.stored.calibrations[device]
        return cal

    @property
    def calibrated(self) -> BoolArray:
        """(D,) whether each device has a calibration (provisional ones too)."""
        return self._core.stored.calibrated[: self.devices].copy()

    def request_calibration(self, device: int) -> None:
        """Capture device ``device``'s upright at its next still period (any pose, any spin).

        As :meth:`posture.engine.PostureEngine.request_calibration`.

        Raises:
            IndexError: ``device`` is not in use.
        """
        self._check_device(device)
        self._core.request_calibration(device)

    def set_calibration(self, device: int, calibration: Calibration) -> None:
        """Use a stored calibration for device ``device`` from now on.

        As :meth:`posture.engine.PostureEngine.set_calibration`.

        Raises:
            IndexError: ``device`` is not in use.
        """
        self._check_device(device)
        self._core.set_calibration(device, calibration)

    def stats(self, device: int) -> EngineStats:
        """Device ``device``'s counters (dropped blocks are not counted as blocks)."""
        self._check_device(device)
        c = self._core.stored
        return EngineStats(
            samples=int(c.samples[device]),
            blocks=int(c.blocks[device]),
            gaps=int(c.gaps[device]),
            clock_resets=int(c.clock_resets[device]),
        )

    def dropped_blocks(self, device: int) -> int:
        """Blocks of ``device`` dropped for non-finite values."""
        self._check_device(device)
        return int(self._dropped[device])

    # -- processing --------------------------------------------------------------

    def process(
        self,
        t_s: ArrayLike,
        acc_g: ArrayLike,
        gyr_dps: ArrayLike | None = None,
        devices: ArrayLike | None = None,
    ) -> BatchBlock:
        """Process one block of ``n`` samples of every device, or of ``devices``.

        Args:
            t_s: (S, n) seconds, each device on its own clock.
            acc_g: (S, n, 3) accelerometer in g, sensor axes.
            gyr_dps: (S, n, 3) gyroscope in °/s, or None (must match
                ``config.has_gyro``).
            devices: (S,) indices of the devices the rows belong to, distinct,
                in any order; None: every device, ``S = devices``. The
                devices not listed are untouched (state, counters, fall
                detector): their block is simply later.

        Returns:
            The rows' angles, activity, slouch flags and events, row ``r``
            for ``devices[r]``. Each device's results are those of its own
            :class:`~posture.engine.PostureEngine` fed the same blocks, in
            whatever subsets they came. Inputs are never mutated.

        Raises:
            SampleError: wrong shapes or gyroscope presence; nothing is
                processed then. Non-finite values drop only that device's block.
            ValueError: ``devices`` is not a 1-D array of distinct indices in use.
        """
        ids = self._check_devices(devices)
        s = self.devices if ids is None else ids.size
        t, acc, gyr = self._validate(t_s, acc_g, gyr_dps, (s, -1), (s, -1, 3))
        # The core's layout (time first, device last): one copy of each.
        return self._run(
            np.ascontiguousarray(t.T),
            np.ascontiguousarray(acc.transpose(1, 2, 0)),
            None if gyr is None else np.ascontiguousarray(gyr.transpose(1, 2, 0)),
            ids,
        )

    def process_device_last(
        self,
        t_s: ArrayLike,
        acc_g: ArrayLike,
        gyr_dps: ArrayLike | None = None,
        devices: ArrayLike | None = None,
    ) -> BatchBlock:
        """:meth:`process` for arrays laid out as the engine keeps them: time
        first, device last (a gateway builds its tick's arrays so).

        Args:
            t_s: (n, S) seconds, each device on its own clock.
            acc_g: (n, 3, S) accelerometer in g, sensor axes.
            gyr_dps: (n, 3, S) gyroscope in °/s, or None.
            devices: as for :meth:`process`.

        C-contiguous float64 arrays go in without a copy; the results, the
        errors and the drops are those of :meth:`process` fed the same
        samples as (S, n) and (S, n, 3). Inputs are never mutated.

        Raises:
            SampleError, ValueError: as :meth:`process`.
        """
        ids = self._check_devices(devices)
        s = self.devices if ids is None else ids.size
        t, acc, gyr = self._validate(t_s, acc_g, gyr_dps, (-1, s), (-1, 3, s))
        return self._run(t, acc, gyr, ids)

    def _run(
        self, t: FloatArray, acc: FloatArray, gyr: FloatArray | None, ids: IndexArray | None
    ) -> BatchBlock:
        """The block, device last (``t`` (n, S), ``acc``/``gyr`` (n, 3, S)), validated."""
        n, s = t.shape
        core = self._core
        last_t_s = core.stored.last_t_s
        steps = block_steps(
            t,
            acc,
            gyr,
            last_t_s[:s] if ids is None else last_t_s[ids],
            core.max_interval_s,
            core.steps_kernel,
        )
        finite = steps.finite
        dropped = ~finite
        if n and s and np.count_nonzero(finite) == s:  # the usual block: all finite
            # The times as returned, (S, n): also the layout the fall stage reads.
            t_rows = np.ascontiguousarray(t.T)
            out = core.process(t, acc, gyr, ids, steps, t_rows)
            # The core's (n, S) results, read as (S, n) without a copy.
            return BatchBlock(
                t_s=t_rows,
                flexion_deg=out.flexion_deg.T,
                lateral_deg=out.lateral_deg.T,
                activity=out.activity.T,
                slouching=out.slouching.T,
                events=_per_device(out.events, s),
                dropped=dropped,
                devices=np.arange(s) if ids is None else ids.copy(),
            )
        rows = np.arange(s) if ids is None else ids
        if dropped.any():
            self._count_dropped(rows[dropped])
        if n == 0 or s == 0:
            if n == 0:
                core.count_empty_block(rows[finite])
            return BatchBlock(
                t.T.copy(),
                np.full((s, n), np.nan),
                np.full((s, n), np.nan),
                np.zeros((s, n), np.int8),
                np.zeros((s, n), bool),
                ((),) * s,
                dropped,
                rows.copy(),
            )
        return self._run_finite(t, acc, gyr, rows, steps)

    def _run_finite(
        self,
        t: FloatArray,
        acc: FloatArray,
        gyr: FloatArray | None,
        rows: IndexArray,
        steps: BlockSteps,
    ) -> BatchBlock:
        """The block of the rows with finite samples; the others' outputs are empty."""
        n, s = t.shape
        flexion = np.full((s, n), np.nan)
        lateral = np.full((s, n), np.nan)
        activity = np.zeros((s, n), np.int8)
        slouching = np.zeros((s, n), bool)
        events: list[tuple[PostureEvent, ...]] = [()] * s
        keep = np.flatnonzero(steps.finite)
        if keep.size:
            out = self._core.process(
                t[:, keep],
                acc[:, :, keep],
                None if gyr is None else gyr[:, :, keep],
                rows[keep],
                steps.columns(keep),
            )
            flexion[keep] = out.flexion_deg.T
            lateral[keep] = out.lateral_deg.T
            activity[keep] = out.activity.T
            slouching[keep] = out.slouching.T
            for k, evs in out.events.items():
                events[int(keep[k])] = tuple(evs)
        return BatchBlock(
            t.T.copy(),
            flexion,
            lateral,
            activity,
            slouching,
            tuple(events),
            ~steps.finite,
            rows.copy(),
        )

    def _check_device(self, device: int) -> None:
        if not (isinstance(device, int | np.integer) and 0 <= device < self.devices):
            raise IndexError(f"device must be an index in 0..{self.devices - 1}, got {device!r}")

    def _check_devices(self, devices: ArrayLike | None) -> IndexArray | None:
        if devices is None:
            return None
        ids = np.asarray(devices)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"devices must be a 1-D array of device indices, got {ids!r}")
        ids = ids.astype(np.intp, copy=False)
        if ids.size and (ids.min() < 0 or ids.max() >= self.devices):
            raise ValueError(
                f"devices must be indices in 0..{self.devices - 1}, got {ids.tolist()!r}"
            )
        # Marking is O(D); np.unique sorts (a tenth of a gateway tick's entry cost).
        seen = np.zeros(self.devices, dtype=bool)
        seen[ids] = True
        if np.count_nonzero(seen) != ids.size:
            raise ValueError(f"devices must be distinct, got {ids.tolist()!r}")
        return ids

    def _validate(
        self,
        t_s: ArrayLike,
        acc_g: ArrayLike,
        gyr_dps: ArrayLike | None,
        t_shape: tuple[int, int],
        imu_shape: tuple[int, int, int],
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        """The samples as float64 arrays of the layout given by ``t_shape`` and
        ``imu_shape``, whose -1 stands for the samples per device ``n``."""
        try:
            t = np.asarray(t_s, dtype=np.float64)
            acc = np.asarray(acc_g, dtype=np.float64)
            gyr = None if gyr_dps is None else np.asarray(gyr_dps, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SampleError(f"samples must be numeric arrays: {exc}") from exc
        axis = t_shape.index(-1)
        if t.ndim != 2 or t.shape[1 - axis] != t_shape[1 - axis]:
            want = tuple("n" if k == -1 else k for k in t_shape)
            raise SampleError(f"t_s must have shape ({want[0]}, {want[1]}), got {t.shape}")
        n = t.shape[axis]
        # -1 is the first or second axis: (n, 3, S) or (S, n, 3).
        imu = (
            (n, imu_shape[1], imu_shape[2])
            if imu_shape[0] == -1
            else (imu_shape[0], n, imu_shape[2])
        )
        if acc.shape != imu:
            raise SampleError(f"acc_g must have shape {imu}, got {acc.shape}")
        if self.config.has_gyro and gyr is None:
            raise SampleError("this engine is configured with a gyroscope; gyr_dps is None")
        if not self.config.has_gyro and gyr is not None:
            raise SampleError("this engine is configured without a gyroscope; got gyr_dps")
        if gyr is not None and gyr.shape != imu:
            raise SampleError(f"gyr_dps must have shape {imu}, got {gyr.shape}")
        return t, acc, gyr

    def _count_dropped(self, devices: IndexArray) -> None:
        self._dropped[devices] += 1
        _log.warning(
            "dropped a block of %d device(s) with non-finite samples (first: device %d)",
            devices.size,
            int(devices[0]),
        )


def _per_device(
    events: dict[int, list[PostureEvent]], devices: int
) -> tuple[tuple[PostureEvent, ...], ...]:
    if not events:
        return ((),) * devices
    per: list[tuple[PostureEvent, ...]] = [()] * devices
    for dev, evs in events.items():
        per[dev] = tuple(evs)
    return tuple(per)
