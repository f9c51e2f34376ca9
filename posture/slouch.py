"""Slouch detection: flexion (or lateral bend) beyond a threshold for a dwell.

Per sample, from the calibrated angles and the activity:

* **beyond**: ``flexion > threshold_deg`` or ``|lateral| > lateral_threshold_deg``;
* **clear**: flexion below ``threshold_deg - hysteresis_deg`` and ``|lateral|``
  below ``lateral_threshold_deg - hysteresis_deg``.

The dwell timer (the decision, documented for the physiotherapists):

* counts sample time while beyond and UPRIGHT or MOVING (moving into a
  slouch counts: the alert comes ``dwell_s`` after the threshold is truly
  crossed, within one sample);
* fires only on a sample that is beyond and UPRIGHT (still): someone in the
  middle of lying down, getting up or bending is not told to sit up; if the
  count is complete, the alert comes as soon as they hold still;
* **resets** when clear, WALKING or LYING (walking and lying are not
  slouching; a brief bend to pick something up comes back below the
  threshold long before a dwell and resets it), or while uncalibrated;
* **pauses** (keeps its count, does not run) in the hysteresis band, in
  vigorous motion (dynamic acceleration above the activity's vigorous
  level), while the activity is UNKNOWN (after a gap) and across gaps.

A slouch starts when the count has reached ``dwell_s`` (SLOUCH_STARTED at
that sample) and ends at the first sample that is clear, WALKING or LYING
(SLOUCH_ENDED, with ``duration_s`` since the start).
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


@dataclass(frozen=True)
class SlouchTransition:
    """A slouch started (``started``) or ended at sample ``index``."""

    index: int
    started: bool
    duration_s: float


class SlouchDetector:
    """Streaming slouch state machine; see the module docstring."""

    def __init__(self, settings: SlouchSettings, max_interval_s: float) -> None:
        self.settings = settings
        self._max_interval_s = max_interval_s
        self.slouching = False
        self._count_s = 0.0
        self._timing = False
        self._started_t_s = math.nan
        self._last_t_s = math.nan

    def process(
        self,
        t_s: FloatArray,
        flexion_deg: FloatArray,
        lateral_deg: FloatArray,
        activity: NDArray[np.int8],
        vigorous: BoolArray,
    ) -> tuple[BoolArray, list[SlouchTransition]]:
        """Run over one block; returns ``slouching`` (n,) and the transitions.

        NaN angles (uncalibrated) count as not beyond and clear.
        """
        s = self.settings
        n = t_s.size
        # NaN angles compare False: never beyond (and clear, below).
        beyond = (flexion_deg > s.threshold_deg) | (np.abs(lateral_deg) > s.lateral_threshold_deg)
        idle = not self.slouching and not self._timing
        if idle and not beyond.any():  # the common case: nothing can change
            self._last_t_s = float(t_s[-1])
            return np.zeros(n, dtype=bool), []
        resetting = (activity == _WALKING) | (activity == _LYING)
        if idle and not (beyond & ~resetting).any():
            self._last_t_s = float(t_s[-1])
            return np.zeros(n, dtype=bool), []
        inside = (flexion_deg < s.threshold_deg - s.hysteresis_deg) & (
            np.abs(lateral_deg) < s.lateral_threshold_deg - s.hysteresis_deg
        )
        clear = inside | np.isnan(flexion_deg) | resetting
        if self.slouching and not clear.any():
            self._last_t_s = float(t_s[-1])
            return np.ones(n, dtype=bool), []
        upright = activity == _UPRIGHT
        counting = beyond & ~resetting & ~vigorous & (upright | (activity == _MOVING))
        return self._loop(t_s, counting & upright, clear, counting)

    def _loop(
        self, t_s: FloatArray, may_start: BoolArray, clear: BoolArray, counting: BoolArray
    ) -> tuple[BoolArray, list[SlouchTransition]]:
        dwell_s = self.settings.dwell_s
        out = np.zeros(t_s.size, dtype=bool)
        transitions: list[SlouchTransition] = []
        last = self._last_t_s
        for i, (t, can_start, is_clear, is_counting) in enumerate(
            zip(t_s.tolist(), may_start.tolist(), clear.tolist(), counting.tolist(), strict=True)
        ):
            interval = t - last
            last = t
            if self.slouching:
                if is_clear:
                    self.slouching = False
                    self._timing = False
                    self._count_s = 0.0
                    transitions.append(SlouchTransition(i, False, round(t - self._started_t_s, 6)))
                out[i] = self.slouching
                continue
            if is_clear:
                self._timing = False
                self._count_s = 0.0
                continue
            if not is_counting:
                continue  # paused
            if not self._timing:
                # The first sample beyond starts the clock at zero.
                self._timing = True
                self._count_s = 0.0
            elif 0.0 < interval <= self._max_interval_s:
                self._count_s += interval
            if can_start and self._count_s >= dwell_s - 1e-9:
                self.slouching = True
                self._started_t_s = t
                # Rounded to the microsecond: a sum of intervals is not exact.
                transitions.append(SlouchTransition(i, True, round(self._count_s, 6)))
                out[i] = True
        self._last_t_s = last
        return out, transitions
