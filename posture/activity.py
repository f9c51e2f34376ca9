"""Activity of the wearer per sample: upright, moving, walking or lying.

Features, all from streaming LTI filters (``sosfilt`` with carried ``zi``):

* vertical dynamic acceleration ``acc·up - 1`` (g; ``|acc| - 1`` without a
  gyroscope), band-passed to the gait
  band (0.7-3.5 Hz); its RMS envelope and its zero-crossing rate (crossings
  of a ±``crossing_deadband_g`` band, so sensor noise does not count). Steps
  bounce the trunk vertically at the step frequency, 1-2.5 Hz, so walking
  shows a strong, regular vertical signal; a bend to pick something up
  shows one slow swing.
* RMS of the whole dynamic acceleration ``acc - up`` (g; without a
  gyroscope the up-direction follows slow changes, so this measures the
  magnitude's deviation from 1 g and the fast changes of direction).
* tilt rate of the trunk (°/s): the gyroscope's rate across the up axis,
  or the rate of change of the up-direction without a gyroscope.

Rules (thresholds in :class:`ActivitySettings`):

* UNKNOWN until the gravity filter has settled after the start or a gap.
* WALKING once the gait criteria held for ``walk_enter_s``; it lasts
  ``walk_hold_s`` after they stop (the pause between steps or a turn).
* LYING once still for ``lying_enter_s`` more than ``lying_enter_deg`` from
  the reference upright; it lasts until the trunk comes within
  ``lying_exit_deg`` or the wearer walks.
* UPRIGHT when still and less than ``lying_enter_deg`` from upright
  otherwise (sitting or standing, slouched too).
* MOVING otherwise.

``vigorous`` marks samples whose dynamic acceleration RMS exceeds
``vigorous_acc_g``; the slouch detector pauses its dwell timer there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from posture.lti import SosFilter
from posture.rotation import cross_rows
from posture.types import Activity, check_positive_fields

__all__ = ["ActivityBlock", "ActivityClassifier", "ActivitySettings"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class ActivitySettings:
    """Thresholds of :class:`ActivityClassifier` (units in the names)."""

    gait_band_hz: tuple[float, float] = (0.7, 3.5)
    envelope_tau_s: float = 0.8
    walk_min_rms_g: float = 0.04
    walk_min_crossings_per_s: float = 1.4
    walk_max_crossings_per_s: float = 8.0
    walk_min_vertical_share: float = 0.15
    crossing_deadband_g: float = 0.015
    walk_enter_s: float = 1.0
    walk_hold_s: float = 1.5
    still_max_acc_g: float = 0.08
    still_max_tilt_dps: float = 10.0
    lying_enter_deg: float = 60.0
    lying_exit_deg: float = 45.0
    lying_enter_s: float = 2.0
    vigorous_acc_g: float = 0.15

    def __post_init__(self) -> None:
        check_positive_fields(self)
        low, high = self.gait_band_hz
        if not 0.0 < low < high:
            raise ValueError(f"ActivitySettings.gait_band_hz must be (low, high), got {low, high}")
        if not 0.0 < self.lying_exit_deg <= self.lying_enter_deg < 180.0:
            raise ValueError("ActivitySettings needs 0 < lying_exit_deg <= lying_enter_deg < 180")


@dataclass(frozen=True)
class ActivityBlock:
    """``activity`` (n,) int8 :class:`Activity`; ``vigorous`` (n,) bool."""

    activity: NDArray[np.int8]
    vigorous: BoolArray


def _run_length(flags: BoolArray, carried: int) -> NDArray[np.int64]:
    """Length of the run of True ending at each sample, continuing ``carried``."""
    n = flags.size
    if flags.all():
        return np.arange(carried + 1, carried + n + 1)
    idx = np.arange(1, n + 1)
    if not flags.any():
        return np.zeros(n, dtype=np.int64)
    last_false = np.maximum.accumulate(np.where(flags, 0, idx))
    run = idx - last_false
    run[last_false == 0] += carried
    return run


def _forward_fill(values: NDArray[np.int64], valid: BoolArray, carried: int) -> NDArray[np.int64]:
    """``values`` where ``valid``, else the last valid value (``carried`` first)."""
    if not valid.any():
        return np.full(values.size, carried, dtype=np.int64)
    idx = np.arange(values.size)
    last = np.maximum.accumulate(np.where(valid, idx, -1))
    return np.where(last >= 0, values[np.maximum(last, 0)], carried)


class ActivityClassifier:
    """Streaming activity classification; see the module docstring."""

    def __init__(self, settings: ActivitySettings, sample_rate_hz: float, has_gyro: bool) -> None:
        self.settings = settings
        self.has_gyro = has_gyro
        fs = sample_rate_hz
        self._fs = fs
        low, high = settings.gait_band_hz
        high = min(high, 0.45 * fs)
        self._gait = SosFilter(
            np.asarray(signal.butter(2, (low, high), "bandpass", fs=fs, output="sos")), 1
        )
        cutoff = math.sqrt(2.0) / (2.0 * math.pi * settings.envelope_tau_s)
        self._envelope = SosFilter(np.asarray(signal.butter(2, cutoff, fs=fs, output="sos")), 4)
        self._walk_enter = max(1, round(settings.walk_enter_s * fs))
        self._walk_hold = round(settings.walk_hold_s * fs)
        self._lying_enter = max(1, round(settings.lying_enter_s * fs))
        # Thresholds on squared and per-sample quantities, computed once.
        self._walk_ms = settings.walk_min_rms_g**2
        self._still_ms = settings.still_max_acc_g**2
        self._vigorous_ms = settings.vigorous_acc_g**2
        self._min_cross = settings.walk_min_crossings_per_s / fs
        self._max_cross = settings.walk_max_crossings_per_s / fs
        self.reset()

    def reset(self) -> None:
        """Start over (after a gap): filters and runs restart, envelopes at rest."""
        self._gait.reset()
        self._envelope.reset()
        self._prev_up: FloatArray | None = None
        self._sign = 0
        self._walk_run = 0
        self._since_walk = 1 << 30
        self._still_run = 0
        self._lying = 0

    def process(
        self,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        up_sensor: FloatArray,
        settled: BoolArray,
        inclination_deg: FloatArray,
    ) -> ActivityBlock:
        """Classify one gap-free segment of ``n`` samples.

        Args:
            acc_g: (n, 3) accelerometer in g.
            gyr_dps: (n, 3) gyroscope in °/s or None.
            up_sensor: (n, 3) unit up-directions from the gravity filter.
            settled: (n,) whether the gravity filter has settled.
            inclination_deg: (n,) trunk angle from the reference upright.
        """
        s = self.settings
        n = acc_g.shape[0]
        dyn = acc_g - up_sensor
        if self.has_gyro:
            vertical = np.einsum("ni,ni->n", acc_g, up_sensor) - 1.0
        else:
            # Without a gyroscope the up-direction follows the gait bounce
            # and lags posture changes; the magnitude is vertical enough
            # (steps accelerate the trunk mostly up and down) and does not
            # depend on the tilt.
            vertical = np.sqrt(np.einsum("ni,ni->n", acc_g, acc_g)) - 1.0
        gait = self._gait(vertical[:, None])[:, 0]
        raw = np.empty((n, 4))
        raw[:, 0] = gait * gait
        raw[:, 1] = np.einsum("ni,ni->n", dyn, dyn)
        raw[:, 2] = self._tilt_rate_dps(gyr_dps, up_sensor)
        raw[:, 3] = self._crossings(gait)
        env = self._envelope(raw)
        gait_ms, dyn_ms, tilt_lp, crossings = env[:, 0], env[:, 1], env[:, 2], env[:, 3]

        walk_cond = (
            (gait_ms > self._walk_ms)
            & (crossings >= self._min_cross)
            & (crossings <= self._max_cross)
            & (gait_ms >= s.walk_min_vertical_share * dyn_ms)
            & (inclination_deg < s.lying_enter_deg)
            & settled
        )
        walk_run = _run_length(walk_cond, self._walk_run)
        self._walk_run = int(walk_run[-1])
        since = _run_length(walk_run < self._walk_enter, self._since_walk)
        self._since_walk = int(since[-1])
        walking = since <= self._walk_hold

        still = (dyn_ms < self._still_ms) & (tilt_lp < s.still_max_tilt_dps) & ~walking
        still_run = _run_length(still, self._still_run)
        self._still_run = int(still_run[-1])
        enter = (still_run >= self._lying_enter) & (inclination_deg > s.lying_enter_deg)
        leave = (inclination_deg < s.lying_exit_deg) | walking
        lying = _forward_fill(enter.astype(np.int64), enter | leave, self._lying).astype(bool)
        self._lying = int(lying[-1])

        activity = np.full(n, int(Activity.MOVING), dtype=np.int8)
        activity[still & (inclination_deg < s.lying_enter_deg)] = Activity.UPRIGHT
        activity[lying] = Activity.LYING
        activity[walking] = Activity.WALKING
        activity[~settled] = Activity.UNKNOWN
        return ActivityBlock(activity=activity, vigorous=dyn_ms > self._vigorous_ms)

    def _tilt_rate_dps(self, gyr_dps: FloatArray | None, up_sensor: FloatArray) -> FloatArray:
        if gyr_dps is not None:
            # The rate about the vertical (turning) does not tilt the trunk.
            across = cross_rows(gyr_dps, up_sensor)
            return np.sqrt(np.einsum("ni,ni->n", across, across))
        prev = np.concatenate(
            (up_sensor[:1] if self._prev_up is None else self._prev_up, up_sensor[:-1])
        )
        self._prev_up = up_sensor[-1:].copy()
        cos = np.clip(np.einsum("ni,ni->n", prev, up_sensor), -1.0, 1.0)
        return np.degrees(np.arccos(cos)) * self._fs

    def _crossings(self, gait: FloatArray) -> FloatArray:
        """1.0 where the gait signal crossed the dead band, else 0.0."""
        h = self.settings.crossing_deadband_g
        sign = (gait > h).astype(np.int64) - (gait < -h)
        filled = _forward_fill(sign, sign != 0, self._sign)
        prev = np.concatenate(((self._sign,), filled[:-1]))
        self._sign = int(filled[-1])
        return ((filled != prev) & (prev != 0)).astype(np.float64)
