"""Opening fall candidates: an impact's features, where the fall starts, its rules.

:class:`CandidateOpener` is stage 1 of the fall detector (docs/falls.md):
for a peak of ``|a|`` it measures the impact in rate-independent ways, asks
the impact model for a probability, decides where the fall starts (upright,
or lying in bed; before calibration, a back horizontal far from the nominal
upright is a patient lying, a back vertical a wearable worn rotated) and
which rules may confirm it, from the detector's history rows.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.falls.features import column_means, dot3, hann_taps, impulse_gs, smoothed_peak
from posture.falls.history import WorkRows
from posture.falls.judging import angle_deg, engine_tilt
from posture.falls.model import FallModel
from posture.falls.rules import ENGINE_TILT_MARGIN_DEG
from posture.falls.types import PEAK_LP_SPAN_S, FallCandidate, FallSettings

__all__ = ["CandidateOpener"]

FloatArray = NDArray[np.float64]

_MAG, _UX, _UZ, _CLIP, _T = 3, 4, 6, 7, 8  # history columns (judging.COLUMNS)
_MIN_BEFORE_S = 1.5  # look-back for the free-fall minimum of |a|
_PRE_END_S = 0.5  # the pre-impact look-back ends this long before the peak
PRE_DIR_S = (2.0, 1.0)  # trunk direction before the fall: mean acc over this span
_HANN_S = 0.2


class CandidateOpener:
    """Stage 1 of one detector (module docstring).

    Args:
        settings: thresholds; model: the impact model; p_min: its threshold.
        sample_rate_hz: nominal rate (windows in samples).
    """

    def __init__(
        self, settings: FallSettings, model: FallModel, p_min: float, sample_rate_hz: float
    ) -> None:
        s, fs = settings, sample_rate_hz

        def n(seconds: float) -> int:
            return max(1, round(seconds * fs))

        self.settings, self.model, self._p_min, self.sample_rate_hz = s, model, p_min, fs
        self.n_imp = n(s.impact_window_s)
        self.n_imp_short = n(s.impact_window_s / 2.0)
        self.n_before = n(_MIN_BEFORE_S)
        self._n_pre, self._n_pre_end = n(s.pre_window_s), n(_PRE_END_S)
        self._n_pre_dir = (n(PRE_DIR_S[0]), n(PRE_DIR_S[1]))
        self.n_lp = (n(PEAK_LP_SPAN_S[0]), n(PEAK_LP_SPAN_S[1]))
        self.hann = hann_taps(_HANN_S, fs)
        self.n_merge = n(s.peak_merge_s)
        self._n_confirm_max = n(s.confirm_max_s)
        self._n_two_stage = n(s.two_stage_max_s)
        self._n_soft_max = n(s.soft_confirm_max_s)
        self.reach = max(self._n_pre + self.n_lp[0] + self.hann.size, self._n_pre_dir[0])
        """Samples of history an opening looks back."""

    def open(
        self,
        rows: WorkRows,
        base: int,
        i: int,
        ref_up: FloatArray,
        calibrated: bool,
        keep_all: bool,
    ) -> FallCandidate | None:
        """The candidate of the peak at work row ``i`` (sample ``base + i``), or
        None when no rule can confirm it (and ``keep_all`` is false: an
        observer wants every candidate)."""
        s, fs = self.settings, self.sample_rate_hz
        mag = rows.mag
        impulse = impulse_gs(mag[max(0, i - self.n_imp) : i + self.n_imp + 1], fs)
        if impulse < s.min_impulse_gs:
            return None
        short = impulse_gs(mag[max(0, i - self.n_imp_short) : i + self.n_imp_short + 1], fs)
        lp_lo = max(0, i - self.n_lp[0] - self.hann.size + 1)
        lp_seg = mag[lp_lo : i + self.n_lp[1] + 1]
        before = mag[max(0, i - self.n_before) : i]
        features = {
            "log_impulse_gs": math.log(impulse),
            "log_impulse_short_gs": math.log(max(short, 1e-3)),
            "peak_lp_acc_g": smoothed_peak(lp_seg, self.hann[: lp_seg.size]),
            "min_acc_before_g": float(before.min()) if before.size else float(mag[i]),
        }
        probability = self.model.probability(features)
        strong = probability >= self._p_min
        unmoving = impulse >= s.unmoving_impulse_gs
        soft = (
            not strong
            and features["peak_lp_acc_g"] >= s.soft_min_peak_lp_g
            and impulse >= s.soft_min_impulse_gs
        )
        if not (strong or unmoving or soft) and not keep_all:
            return None  # most walking steps end here, before the look-back below
        work = rows.rows
        a, b = self._n_pre_dir
        pre_rows = work[max(0, i - a) : max(1, i - b)]
        pre_dir = column_means(pre_rows)
        pre_dir /= max(float(np.sqrt(dot3(pre_dir * pre_dir, np.ones(3)))), 1e-9)
        ref = ref_up
        cos_lying = math.cos(math.radians(s.lying_tilt_deg))
        pre = work[max(0, i - self._n_pre) : max(0, i - self._n_pre_end + 1), _UX : _UZ + 1]
        pre = pre[np.isfinite(pre).all(axis=1)]
        origin = "upright"
        if pre.size and calibrated:
            if float(dot3(pre, ref).max()) <= cos_lying:
                origin = "lying"  # lying all along: in bed
        elif pre.size:
            mean_up = column_means(pre)
            mean_up /= max(float(np.linalg.norm(mean_up)), 1e-9)
            if float(dot3(mean_up, ref)) <= cos_lying:
                # Far from a nominal (unmeasured) upright: with the back
                # horizontal the patient is lying; with it vertical, more
                # likely a puck worn rotated, judged against the trunk as it
                # was just before the impact.
                if abs(float(mean_up[2])) >= math.sin(math.radians(s.lying_face_tilt_deg)):
                    origin = "lying"
                else:
                    ref = pre_dir
        clip = work[max(0, i - a) : i + self.n_merge + 1, _CLIP]
        clipped = bool(clip.size and clip.max() > 0.0)
        rules: set[str] = set()
        if origin == "lying":
            if strong and features["min_acc_before_g"] <= s.bed_max_min_acc_g:
                rules.add("out_of_bed")
        else:
            if strong:
                rules.update(("lying", "reclined"))
            if probability >= max(self._p_min, s.clear_fall_probability):
                # A clear fall impact: also if the patient is back up at once,
                # or lies back only later (a deep quick bend also goes "down",
                # and may be followed by lying down in bed, with a weaker one).
                rules.update(("down_up", "two_stage"))
            if unmoving:
                rules.add("unmoving")
            if soft:
                # Only if the trunk is already near lying by the end of the
                # peak's neighbourhood (a collapse ends at the floor): spares
                # the look at every walking step.
                near = engine_tilt(work[i : i + self.n_merge + 1], ref)
                fine = clipped or bool(
                    np.nanmax(near, initial=0.0) >= s.lying_tilt_deg - ENGINE_TILT_MARGIN_DEG
                )
                if fine:
                    rules.add("soft")
        if not rules and not keep_all:
            return None
        index = base + i
        end = index + self._n_confirm_max
        if "two_stage" in rules:
            end = index + self._n_two_stage
        if "soft" in rules:
            end = max(end, index + self._n_soft_max)
        features.update(
            peak_acc_g=float(mag[i]),
            impulse_gs=impulse,
            from_lying=1.0 if origin == "lying" else 0.0,
            gyro_clipped=1.0 if clipped else 0.0,
        )
        return FallCandidate(
            index,
            float(work[i, _T]),
            features,
            probability,
            bool(rules),
            pre_dir,
            ref,
            origin=origin,  # type: ignore[arg-type]
            rules=frozenset(rules),
            clipped=clipped,
            pre_upright=bool(angle_deg(pre_dir, ref) < s.cancel_upright_deg),
            end_index=end,
        )
