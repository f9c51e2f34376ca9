"""Slouch detection: flexion (or lateral bend) beyond a threshold for a dwell.

Per sample, from the calibrated angles and the activity:

* **beyond**: ``flexion > threshold_deg`` or ``|lateral| > lateral_threshold_deg``;
* **clear**: flexion below ``threshold_deg - hysteresis_deg`` and ``|lateral|``
  below ``lateral_threshold_deg - hysteresis_deg``.

The dwell timer (the decision, documented for the physiotherapists):

* counts sample time while beyond and UPRIGHT, MOVING or WALKING (moving
  into a slouch counts: the alert comes ``dwell_s`` after the threshold is
  truly crossed, within one sample; walking hunched counts: hunched gait
  is the posture that loads osteoporotic vertebrae most);
* fires only on a sample that is beyond and UPRIGHT (still) or WALKING:
  someone in the middle of lying down, getting up or bending is not told to
  sit up; if the count is complete, the alert comes as soon as they hold
  still or walk on;
* **resets** when clear or LYING (lying is not slouching; a brief bend to
  pick something up, standing or while walking, comes back below the
  threshold long before a dwell and resets it), or while uncalibrated;
* **pauses** (keeps its count, does not run) in the hysteresis band, in
  vigorous motion other than walking (dynamic acceleration above the
  activity's vigorous level), while the activity is UNKNOWN (after a gap)
  and across gaps.

With ``SlouchSettings.while_walking = False`` (a per-patient setting, e.g.
a patient who walks with a frame and is told so) WALKING resets the count
and ends a slouch, as LYING does.

A slouch starts when the count has reached ``dwell_s`` (SLOUCH_STARTED at
that sample) and ends at the first sample that is clear or LYING (or
WALKING, when walking does not count; SLOUCH_ENDED, with ``duration_s``
since the start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from posture.types import Activity, SlouchSettings

__all__ = ["SlouchDetector", "SlouchTransition"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_WALKING = int(Activity.WALKING)
_LYING = int(Activity.LYING)
_UPRIGHT = int(Activity.UPRIGHT)
_MOVING = int(Activity.MOVING)

# Up to this many devices loop over plain floats per device; beyond, over
# array steps (see posture.rotation for the same choice).
_SCALAR_LOOP_MAX_DEVICES = 8


@dataclass(frozen=True)
class SlouchTransition:
    """A slouch of ``device`` started (``started``) or ended at sample ``index``."""

    index: int
    started: bool
    duration_s: float
    device: int = 0


class SlouchDetector:
    """Streaming slouch state machine of ``devices`` wearables (module docstring).

    The state is one value per device; a block runs as a few array
    operations over all devices, and the per-sample loop only for devices
    whose state may change in it.
    """

    def __init__(self, settings: SlouchSettings, max_interval_s: float, devices: int = 1) -> None:
        self.settings = settings
        self._max_interval_s = max_interval_s
        self.slouching = np.zeros(devices, dtype=bool)
        self._count_s = np.zeros(devices)
        self._timing = np.zeros(devices, dtype=bool)
        self._started_t_s = np.full(devices, math.nan)
        self._last_t_s = np.full(devices, math.nan)

    def process(
        self,
        t_s: FloatArray,
        flexion_deg: FloatArray,
        lateral_deg: FloatArray,
        activity: NDArray[np.int8],
        vigorous: BoolArray,
    ) -> tuple[BoolArray, list[SlouchTransition]]:
        """Run over one block, arrays (n, D); returns ``slouching`` (n, D) and
        the transitions (by device, in time order).

        NaN angles (uncalibrated) count as not beyond and clear.
        """
        s = self.settings
        # NaN angles compare False: never beyond (and clear, below).
        beyond = (flexion_deg > s.threshold_deg) | (np.abs(lateral_deg) > s.lateral_threshold_deg)
        out = np.zeros(beyond.shape, dtype=bool)
        busy = self.slouching | self._timing
        if not (busy.any() or beyond.any()):  # the common case: nothing can change
            self._last_t_s = t_s[-1].copy()
            return out, []
        walking = activity == _WALKING
        resetting = activity == _LYING
        if not s.while_walking:
            resetting = resetting | walking
        loop = busy | (beyond & ~resetting).any(axis=0)
        if self.slouching.any():
            inside = (flexion_deg < s.threshold_deg - s.hysteresis_deg) & (
                np.abs(lateral_deg) < s.lateral_threshold_deg - s.hysteresis_deg
            )
            clear = inside | np.isnan(flexion_deg) | resetting
            steady = self.slouching & ~clear.any(axis=0)  # slouching all through
            out[:, steady] = True
            loop &= ~steady
        else:
            clear = None
        transitions: list[SlouchTransition] = []
        if loop.any():
            if clear is None:
                inside = (flexion_deg < s.threshold_deg - s.hysteresis_deg) & (
                    np.abs(lateral_deg) < s.lateral_threshold_deg - s.hysteresis_deg
                )
                clear = inside | np.isnan(flexion_deg) | resetting
            upright = activity == _UPRIGHT
            if s.while_walking:
                # Gait is vigorous by nature: it does not pause the count.
                upright = upright | walking
                vigorous = vigorous & ~walking
            counting = beyond & ~resetting & ~vigorous & (upright | (activity == _MOVING))
            may_start = counting & upright
            devices = np.flatnonzero(loop)
            if devices.size > _SCALAR_LOOP_MAX_DEVICES:
                transitions += self._steps(devices, t_s, may_start, clear, counting, out)
            else:
                for d in devices.tolist():
                    transitions += self._loop(
                        d, t_s[:, d], may_start[:, d], clear[:, d], counting[:, d], out[:, d]
                    )
        self._last_t_s = t_s[-1].copy()
        return out, transitions

    def _steps(
        self,
        devices: NDArray[np.intp],
        t_s: FloatArray,
        may_start: BoolArray,
        clear: BoolArray,
        counting: BoolArray,
        out: BoolArray,
    ) -> list[SlouchTransition]:
        """:meth:`_loop` for many devices at once: one array step per sample,
        the same decisions and the same arithmetic (so the same numbers)."""
        dwell_s = self.settings.dwell_s - 1e-9
        slouching = self.slouching[devices]
        timing = self._timing[devices]
        count_s = self._count_s[devices]
        started_t_s = self._started_t_s[devices]
        last = self._last_t_s[devices]
        t_all, start_all = t_s[:, devices], may_start[:, devices]
        clear_all, counting_all = clear[:, devices], counting[:, devices]
        transitions: list[SlouchTransition] = []
        for i in range(t_all.shape[0]):
            t = t_all[i]
            interval = t - last
            last = t
            is_clear = clear_all[i]
            idle = ~slouching
            end = slouching & is_clear
            reset = idle & is_clear
            active = idle & ~is_clear & counting_all[i]
            first = active & ~timing
            grow = active & timing & (interval > 0.0) & (interval <= self._max_interval_s)
            timing[reset | end] = False
            count_s[reset | end | first] = 0.0
            timing[first] = True
            count_s[grow] += interval[grow]
            begin = active & start_all[i] & (count_s >= dwell_s)
            for j in np.flatnonzero(end).tolist():
                d = int(devices[j])
                duration = round(float(t[j]) - float(started_t_s[j]), 6)
                transitions.append(SlouchTransition(i, False, duration, device=d))
            for j in np.flatnonzero(begin).tolist():
                transitions.append(
                    SlouchTransition(i, True, round(float(count_s[j]), 6), device=int(devices[j]))
                )
            slouching[end] = False
            slouching[begin] = True
            started_t_s[begin] = t[begin]
            out[i, devices] = slouching
        self.slouching[devices] = slouching
        self._timing[devices] = timing
        self._count_s[devices] = count_s
        self._started_t_s[devices] = started_t_s
        return transitions

    def _loop(
        self,
        d: int,
        t_s: FloatArray,
        may_start: BoolArray,
        clear: BoolArray,
        counting: BoolArray,
        out: BoolArray,
    ) -> list[SlouchTransition]:
        dwell_s = self.settings.dwell_s
        slouching = bool(self.slouching[d])
        timing = bool(self._timing[d])
        count_s = float(self._count_s[d])
        started_t_s = float(self._started_t_s[d])
        transitions: list[SlouchTransition] = []
        last = float(self._last_t_s[d])
        for i, (t, can_start, is_clear, is_counting) in enumerate(
            zip(t_s.tolist(), may_start.tolist(), clear.tolist(), counting.tolist(), strict=True)
        ):
            interval = t - last
            last = t
            if slouching:
                if is_clear:
                    slouching = False
                    timing = False
                    count_s = 0.0
                    transitions.append(
                        SlouchTransition(i, False, round(t - started_t_s, 6), device=d)
                    )
                out[i] = slouching
                continue
            if is_clear:
                timing = False
                count_s = 0.0
                continue
            if not is_counting:
                continue  # paused
            if not timing:
                # The first sample beyond starts the clock at zero.
                timing = True
                count_s = 0.0
            elif 0.0 < interval <= self._max_interval_s:
                count_s += interval
            if can_start and count_s >= dwell_s - 1e-9:
                slouching = True
                started_t_s = t
                # Rounded to the microsecond: a sum of intervals is not exact.
                transitions.append(SlouchTransition(i, True, round(count_s, 6), device=d))
                out[i] = True
        self.slouching[d] = slouching
        self._timing[d] = timing
        self._count_s[d] = count_s
        self._started_t_s[d] = started_t_s
        return transitions
