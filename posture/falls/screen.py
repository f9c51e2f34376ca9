"""Which devices' impact peaks could open a fall candidate: one pass across devices.

Stage 1 of the fall detector (:class:`~posture.falls.impact.CandidateOpener`)
runs per peak and per device; walking reaches the trigger at most steps,
yet almost every step is then dropped on its impulse or its probability
before anything else is looked at. :class:`PeakScreen` finds the completed
peaks of a block for every device at once (the same rule: ``|a| >=
trigger_acc_g``, strictly larger than the ``peak_merge_s`` before, at
least as large as the ``peak_merge_s`` after) and computes, for those
peaks only, what decides that drop: the impulse, the low-passed peak, the
lowest ``|a|`` before, the model's probability. A device passes when one
of its peaks could be fall-grade, hard or soft; only those go through the
per-device path, which decides exactly. The screen errs on the side of
passing: thresholds are compared with a small margin (the vectorised sums
may round in another order), and a stream younger than the look-back
passes on any peak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from posture.falls.impact import CandidateOpener
from posture.falls.model import FEATURE_NAMES, FallModel

if TYPE_CHECKING:
    from posture.kernels.falls import ScreenParams

__all__ = ["PeakScreen", "rolling_max"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

_MARGIN = 1e-6
"""Relative margin on every threshold (far above float64 rounding of these sums)."""


def rolling_max(x: FloatArray, width: int) -> FloatArray:
    """``out[r] = max(x[r : r + width])`` along axis 0 (exact; doubling spans)."""
    span, level = 1, x
    while 2 * span <= width:
        level = np.maximum(level[:-span], level[span:])
        span *= 2
    rows = x.shape[0] - width + 1
    return np.maximum(level[:rows], level[width - span : width - span + rows])


class PeakScreen:
    """The vectorised stage-1 screen of one configuration (module docstring).

    Args:
        opener: the per-device stage 1 whose windows and thresholds it mirrors.
        model: the impact model; p_min: its threshold.
    """

    def __init__(self, opener: CandidateOpener, model: FallModel, p_min: float) -> None:
        self._o = opener
        self._model = model
        self._p_min = p_min
        o = opener
        self.merge = o.n_merge
        # Samples each candidate row needs before it (peak rule and features).
        self.back = max(o.n_merge, o.n_imp, o.n_before, o.n_lp[0] + o.hann.size - 1, o.n_imp_short)
        s, lo = o.settings, 1.0 - _MARGIN
        self.kernel_args: ScreenParams = (
            np.array(
                [o.n_merge, self.back, o.n_imp, o.n_imp_short, o.n_before, *o.n_lp],
                dtype=np.int64,
            ),
            np.array(
                [
                    s.trigger_acc_g,
                    s.min_impulse_gs * lo,
                    s.soft_min_peak_lp_g * lo,
                    s.soft_min_impulse_gs * lo,
                    s.unmoving_impulse_gs * lo,
                    p_min - _MARGIN,
                    o.sample_rate_hz,
                    model.bias,
                ]
            ),
            np.ascontiguousarray(o.hann, dtype=np.float64),
            np.array([FEATURE_NAMES.index(f) for f in model.feature_names], dtype=np.int64),
            np.ascontiguousarray(np.stack((model.mean, model.scale, model.weights))),
        )
        """This screen's windows, thresholds (margin applied), low-pass taps and
        model as :func:`posture.kernels.falls.fall_screen` takes them."""

    def screen(self, mag: FloatArray, first_row: IntArray, peak_row: IntArray) -> BoolArray:
        """Devices (k,) with a peak that could open a candidate.

        Args:
            mag: (back + n + merge, k) ``|a|`` of each device; candidate rows
                are ``back .. back + n - 1`` (their ``merge`` samples after are in).
            first_row: (k,) each device's first row of ``mag`` that exists
                (> 0 for a stream younger than the look-back: such a device
                passes on any peak).
            peak_row: (k,) each device's first row not yet checked for a peak.
        """
        i, col = self.peaks(mag, first_row, peak_row)
        return self.judge(mag, first_row, i, col)

    def peaks(
        self, mag: FloatArray, first_row: IntArray, peak_row: IntArray
    ) -> tuple[IntArray, IntArray]:
        """The completed peaks of :meth:`screen`'s rows: their rows and columns of
        ``mag``, by row then column (:func:`posture.kernels.falls.fall_screen`
        finds the same, device by device, in the rings)."""
        s = self._o.settings
        k, back = self.merge, self.back
        n = mag.shape[0] - back - k
        none = np.zeros(0, dtype=np.int64)
        trig = mag[back : back + n] >= s.trigger_acc_g
        valid_from = np.maximum(first_row, peak_row)
        if int(valid_from.max(initial=0)) > back:  # some rows were looked at, or are none
            trig &= np.arange(back, back + n)[:, None] >= valid_from[None, :]
        cols = np.flatnonzero(trig.any(axis=0))
        if not cols.size:
            return none, none
        sub = mag[:, cols]
        lead = sub[back - k : back + n - 1]
        if int(first_row.max(initial=0)) > 0:
            # Rows before a stream's first sample are no neighbours.
            old = np.arange(back - k, back + n - 1)[:, None] < first_row[None, cols]
            lead = np.where(old, -np.inf, lead)
        c = sub[back : back + n]
        peak = trig[:, cols] & (rolling_max(lead, k) < c)
        peak &= rolling_max(sub[back + 1 : back + n + k], k) <= c
        j, col = np.nonzero(peak)
        return (back + j).astype(np.int64), cols[col].astype(np.int64)

    def judge(self, mag: FloatArray, first_row: IntArray, i: IntArray, col: IntArray) -> BoolArray:
        """Devices (k,) with one of the peaks at rows ``i``, columns ``col`` of
        ``mag`` that could open a candidate (:meth:`screen`)."""
        s, o = self._o.settings, self._o
        passed = np.zeros(mag.shape[1], dtype=bool)
        if not i.size:
            return passed
        young = first_row[col] > 0
        lo = 1.0 - _MARGIN
        impulse = self._impulse(mag, i, col, o.n_imp)
        # Most walking steps end here, on their impulse.
        keep = (impulse >= s.min_impulse_gs * lo) | young
        if not keep.any():
            return passed
        i, col, impulse, young = i[keep], col[keep], impulse[keep], young[keep]
        lp = self._smoothed_peaks(mag, i, col)
        features = {"log_impulse_gs": np.log(np.maximum(impulse, 1e-300)), "peak_lp_acc_g": lp}
        names = self._model.feature_names
        if "log_impulse_short_gs" in names:
            short = self._impulse(mag, i, col, o.n_imp_short)
            features["log_impulse_short_gs"] = np.log(np.maximum(short, 1e-3))
        if "min_acc_before_g" in names:
            before = mag[i[:, None] - o.n_before + np.arange(o.n_before), col[:, None]]
            features["min_acc_before_g"] = before.min(axis=1)
        strong = self._probability(features) >= self._p_min - _MARGIN
        soft = (lp >= s.soft_min_peak_lp_g * lo) & (impulse >= s.soft_min_impulse_gs * lo)
        hard = impulse >= s.unmoving_impulse_gs * lo
        ok = (impulse >= s.min_impulse_gs * lo) & (strong | hard | soft)
        passed[col[ok | young]] = True
        return passed

    def _impulse(self, sub: FloatArray, i: IntArray, col: IntArray, half: int) -> FloatArray:
        win = sub[i[:, None] + np.arange(-half, half + 1), col[:, None]]
        return np.asarray(np.maximum(win - 1.0, 0.0).sum(axis=1) / self._o.sample_rate_hz)

    def _smoothed_peaks(self, sub: FloatArray, i: IntArray, col: IntArray) -> FloatArray:
        """:func:`~posture.falls.features.smoothed_peak` of each peak, same order of sums."""
        taps = self._o.hann
        t = taps.shape[0]
        lo, hi = self._o.n_lp
        seg = sub[i[:, None] + np.arange(-lo - t + 1, hi + 1), col[:, None]]
        out_len = seg.shape[1] - t + 1
        acc = np.zeros((i.size, out_len))
        for j in range(t):
            acc += taps[t - 1 - j] * seg[:, j : j + out_len]
        return np.asarray(acc.max(axis=1))

    def _probability(self, features: dict[str, FloatArray]) -> FloatArray:
        m = self._model
        raw = np.stack([features[name] for name in m.feature_names], axis=1)
        z = ((raw - m.mean) / m.scale * m.weights).sum(axis=1) + m.bias
        return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))
