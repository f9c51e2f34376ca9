"""Streaming fall detector: an impact, then a lying or unmoving trunk.

A fall has three phases; the detector measures each with quantities that do
not depend on where on the trunk the sensor sits, nor on the sample rate:

1. **Impact**: a local maximum of ``|a|`` above ``trigger_acc_g`` opens a
   candidate. Peak values shrink at low sample rates (a 10 ms spike reads
   6 g at 200 Hz and 4 g at 25 Hz), so the impact is measured as the
   *impulse* ``∫ max(|a| - 1 g, 0) dt`` over ±``impact_window_s``
   (``impulse_gs``; x 9.81 gives the m/s lost beyond gravity) and as the
   peak of ``|a|`` after a 0.2 s Hann low-pass (≈ 5 Hz, ``peak_lp_acc_g``).
   Both hold within a few percent from 25 to 200 Hz. Also recorded: the
   shorter impulse and the lowest ``|a|`` in the 1.5 s before (free fall).
2. **Before**: if the engine's up estimate says the trunk was lying for the
   whole ``pre_window_s`` (turning over in bed), the impact is no fall. The
   upright reference is the calibrated one; while only a nominal guess is
   known (``set_reference_up(..., calibrated=False)``) and the trunk's mean
   direction over that window was that far from it (more likely a puck worn
   rotated than a patient in bed), the trunk direction just before the
   impact serves as the upright for that candidate instead.
3. **Aftermath**, judged at every sample from ``confirm_min_s`` to
   ``confirm_max_s`` after the peak on the last ``still_window_s``: *lying*
   (mean acceleration direction at least ``lying_tilt_deg`` from the
   reference upright, the engine's up estimate agreeing within 20°, and
   ``|a|`` standard deviation at most ``still_acc_sd_g``) with a fall
   probability of at least ``min_fall_probability`` from the impact model
   (:mod:`posture.falls.model`, trained by ``python -m lab.train_falls``);
   or, after a strong impact (``unmoving_impulse_gs``), *unmoving* in a new
   posture (sitting on the floor: deviation at most ``unmoving_acc_sd_g`` and
   the trunk turned by ``unmoving_tilt_change_deg`` from before the fall).

A detection is reported at the first sample that confirms it (typically
1.5 s after the impact). If within ``cancel_window_s`` the patient is upright
(tilt below ``cancel_upright_deg``) and moving like walking (``|a|``
deviation at least ``cancel_motion_sd_g``) for ``cancel_upright_s``, a
``"cancelled"`` finding follows. Until then, or until the patient has been
upright for ``cancel_upright_s`` after the window, no second fall is reported.

Windows are counted in samples at the nominal ``sample_rate_hz``; samples
across a lost packet are treated as contiguous. State is explicit (a short
history of per-sample signals and the pending candidates) and every window
statistic is computed the same way whatever the block boundaries
(:mod:`posture.falls.features`), so findings are identical for any split of
the stream. The gyroscope is not used directly: orientation enters through
the engine's ``up_sensor`` (gyroscope-aided when there is one), so
accelerometer-only wearables get the same detector.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from posture.falls.features import (
    column_means,
    dot3,
    first_recovery,
    hann_taps,
    impulse_gs,
    smoothed_peak,
    window_means,
    window_sds,
)
from posture.falls.model import FallModel, load_fall_model
from posture.falls.types import PEAK_LP_SPAN_S, FallCandidate, FallFinding, FallSettings

__all__ = ["FallCandidate", "FallDetector", "FallFinding", "FallSettings"]

_log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

_AX, _AY, _AZ, _MAG, _UX, _UY, _UZ, _T = range(8)  # history columns
_N_COLS = 8
_PRE_END_S = 0.5  # the pre-impact look-back ends this long before the peak
_MIN_BEFORE_S = 1.5  # look-back for the free-fall minimum of |a|
_PRE_DIR_S = (2.0, 1.0)  # trunk direction before the fall: mean acc over this span
_HANN_S = 0.2
# How far the engine's up estimate may disagree with the still-window mean
# acceleration about lying (filter lag just after a fall).
_ENGINE_TILT_MARGIN_DEG = 20.0


class FallDetector:
    """Streaming fall detector for one wearable (see the module docstring).

    Args:
        settings: thresholds.
        sample_rate_hz: nominal rate of the stream; windows are in samples.
        on_candidate: optional observer, called with each candidate once it is
            resolved (model training and evaluation use it).

    Raises:
        ValueError: sample rate outside 10-2000 Hz.
        ConfigError: the model file cannot be loaded.
    """

    def __init__(
        self,
        settings: FallSettings,
        sample_rate_hz: float,
        *,
        on_candidate: Callable[[FallCandidate], None] | None = None,
    ) -> None:
        if not (math.isfinite(sample_rate_hz) and 10.0 <= sample_rate_hz <= 2000.0):
            raise ValueError(f"sample_rate_hz must be in 10..2000, got {sample_rate_hz!r}")
        s = self.settings = settings
        fs = self.sample_rate_hz = float(sample_rate_hz)
        self.model: FallModel = load_fall_model(settings.model_path)
        p_min = settings.min_fall_probability
        self._p_min = self.model.threshold if p_min is None else p_min
        self._on_candidate = on_candidate

        def n(seconds: float) -> int:
            return max(1, round(seconds * fs))

        self._n_merge = n(s.peak_merge_s)
        self._n_imp = n(s.impact_window_s)
        self._n_imp_short = n(s.impact_window_s / 2.0)
        self._n_pre, self._n_pre_end = n(s.pre_window_s), n(_PRE_END_S)
        self._n_before = n(_MIN_BEFORE_S)
        self._n_pre_dir = (n(_PRE_DIR_S[0]), n(_PRE_DIR_S[1]))
        self._n_lp = (n(PEAK_LP_SPAN_S[0]), n(PEAK_LP_SPAN_S[1]))
        self._hann = hann_taps(_HANN_S, fs)
        self._n_still = n(s.still_window_s)
        self._n_confirm = (n(s.confirm_min_s), n(s.confirm_max_s))
        self._n_cancel = n(s.cancel_window_s)
        self._n_upright = n(s.cancel_upright_s)
        reach = self._n_pre + self._n_lp[0] + self._hann.size
        self._history_len = (
            2 * self._n_merge + 2 + max(reach, self._n_pre_dir[0], self._n_upright, self._n_still)
        )
        # History of the per-sample signals, stored as float32 (half the
        # memory; wearable samples are int16 counts, exact in float32). Every
        # block is rounded the same way before use, so results do not depend
        # on where blocks start. Times are kept only as far back as they are read.
        self._history = np.zeros((0, _T), dtype=np.float32)
        self._t_history = np.zeros(0)
        self._t_len = 2 * self._n_merge + 2
        self._n_seen = 0  # samples processed so far
        self._peak_next = 0  # first sample index not yet checked for a peak
        self._pending: list[FallCandidate] = []
        self._ref_up = np.array([0.0, 1.0, 0.0])
        self._ref_calibrated = True
        # While a fall is active: (detection index, impact t, detection t, upright).
        self._fallen: tuple[int, float, float, FloatArray] | None = None

    # -- public ------------------------------------------------------------

    def set_reference_up(self, up_sensor: ArrayLike, *, calibrated: bool = True) -> None:
        """Set the upright "up" (3,) in sensor axes; applies to impacts from now on.

        Args:
            up_sensor: the calibrated upright, or the mounting's nominal one.
            calibrated: False for a nominal guess (not measured on this
                patient); then an impact whose pre-fall trunk is far from it is
                judged against the pre-fall trunk instead (see module docstring).

        Raises:
            ValueError: not a finite non-zero 3-vector.
        """
        v = np.asarray(up_sensor, dtype=np.float64)
        norm = float(np.linalg.norm(v)) if v.shape == (3,) else 0.0
        if not (math.isfinite(norm) and norm > 1e-9):
            raise ValueError(f"reference up must be a finite non-zero (3,) vector, got {v!r}")
        self._ref_up = v / norm
        self._ref_calibrated = bool(calibrated)

    @property
    def fall_active(self) -> bool:
        """True from a detection until its cancellation or the detector re-arms."""
        return self._fallen is not None

    @property
    def pending_candidates(self) -> tuple[FallCandidate, ...]:
        """Candidates still waiting for their aftermath (e.g. when a recording ends)."""
        return tuple(self._pending)

    def process(
        self, t_s: ArrayLike, acc_g: ArrayLike, gyr_dps: ArrayLike | None, up_sensor: ArrayLike
    ) -> list[FallFinding]:
        """Feed one block; return the findings that became true in it, in time order.

        Args:
            t_s: (n,) sample times in seconds.
            acc_g: (n, 3) acceleration in g, sensor axes.
            gyr_dps: (n, 3) angular rate in °/s, or None; not used (module docstring).
            up_sensor: (n, 3) the engine's unit up direction per sample; NaN rows
                (no estimate yet) count as "not known to be lying".

        Raises:
            ValueError: shapes disagree, or t_s/acc_g are not finite.
        """
        t = np.asarray(t_s, dtype=np.float64)
        acc = np.asarray(acc_g, dtype=np.float64)
        up = np.asarray(up_sensor, dtype=np.float64)
        count = t.shape[0] if t.ndim == 1 else -1
        if count < 0 or acc.shape != (count, 3) or up.shape != (count, 3):
            raise ValueError(
                "expected t_s (n,), acc_g (n, 3) and up_sensor (n, 3), got "
                f"{t.shape}, {acc.shape}, {up.shape}"
            )
        if gyr_dps is not None and np.shape(gyr_dps) != (count, 3):
            raise ValueError(f"gyr_dps must be (n, 3) or None, got {np.shape(gyr_dps)}")
        if count == 0:
            return []
        if not (np.isfinite(acc).all() and np.isfinite(t).all()):
            raise ValueError("t_s and acc_g must be finite")
        n_hist = self._history.shape[0]
        work = np.empty((n_hist + count, _N_COLS))
        work[:n_hist, :_T] = self._history
        work[n_hist:, :_T] = self._derive(acc, up).astype(np.float32)
        work[:, _T] = np.nan
        n_t = self._t_history.shape[0]
        work[n_hist - n_t : n_hist, _T] = self._t_history
        work[n_hist:, _T] = t
        first_new = self._n_seen
        base = first_new - n_hist  # sample index of work[0]
        last = base + work.shape[0] - 1
        self._n_seen += count
        findings: list[FallFinding] = []
        # Per sample j the order is: open the candidate whose peak
        # neighbourhood completes at j (if armed), judge the pending ones at j,
        # then, after a detection, check cancel/re-arm at j. The loop runs
        # those steps vectorised over the stretches between state changes.
        pos = first_new
        while pos <= last:
            if self._fallen is None:
                self._find_candidates(work, base, pos, last)
                finding = self._judge(work, base, pos, last)
                if finding is None:
                    break
                findings.append(finding)
                pos = int(self._fallen[0]) + 1  # type: ignore[index]
            else:
                cancelled, rearmed_at = self._watch_fallen(work, base, pos, last)
                if cancelled is not None:
                    findings.append(cancelled)
                if rearmed_at is None:
                    # Peaks completing while a fall is active are not candidates.
                    self._peak_next = max(self._peak_next, last - self._n_merge + 1)
                    break
                pos = rearmed_at + 1
                self._peak_next = max(self._peak_next, pos - self._n_merge)
        self._history = work[-self._history_len :, :_T].astype(np.float32)
        self._t_history = work[-min(self._t_len, work.shape[0]) :, _T].copy()
        return findings

    # -- per-sample signals ------------------------------------------------

    def _derive(self, acc: FloatArray, up: FloatArray) -> FloatArray:
        block = np.empty((acc.shape[0], _T))
        block[:, _AX : _AZ + 1] = acc
        ax, ay, az = acc[:, 0], acc[:, 1], acc[:, 2]
        block[:, _MAG] = np.sqrt(ax * ax + ay * ay + az * az)
        ux, uy, uz = up[:, 0], up[:, 1], up[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            block[:, _UX : _UZ + 1] = up / np.sqrt(ux * ux + uy * uy + uz * uz)[:, None]
        return block

    @staticmethod
    def _engine_tilt(rows: FloatArray, ref: FloatArray) -> FloatArray:
        """Degrees between the engine's up (rows' _UX.._UZ) and ``ref``; NaN stays NaN."""
        cos = dot3(rows[:, _UX : _UZ + 1], ref)
        return np.asarray(np.degrees(np.arccos(np.minimum(np.maximum(cos, -1.0), 1.0))))

    # -- candidates --------------------------------------------------------

    def _find_candidates(self, work: FloatArray, base: int, pos: int, last: int) -> None:
        """Open candidates at peaks whose ±merge neighbourhood completes in [pos, last]."""
        k = self._n_merge
        lo, hi = max(self._peak_next, pos - k) - base, last - k - base  # work indices
        if hi < lo:
            return
        self._peak_next = hi + base + 1
        mag = work[:, _MAG]
        for i in lo + np.flatnonzero(mag[lo : hi + 1] >= self.settings.trigger_acc_g):
            left = mag[max(0, i - k) : i]
            # Strict on the left, loose on the right: a plateau opens one candidate.
            if (left.size and left.max() >= mag[i]) or mag[i + 1 : i + k + 1].max() > mag[i]:
                continue
            self._open(work, base, int(i))

    def _open(self, work: FloatArray, base: int, i: int) -> None:
        s, fs = self.settings, self.sample_rate_hz
        mag = work[:, _MAG]
        impulse = impulse_gs(mag[max(0, i - self._n_imp) : i + self._n_imp + 1], fs)
        if impulse < s.min_impulse_gs:
            return
        short = impulse_gs(mag[max(0, i - self._n_imp_short) : i + self._n_imp_short + 1], fs)
        lp_lo = max(0, i - self._n_lp[0] - self._hann.size + 1)
        lp_seg = mag[lp_lo : i + self._n_lp[1] + 1]
        before = mag[max(0, i - self._n_before) : i]
        features = {
            "log_impulse_gs": math.log(impulse),
            "log_impulse_short_gs": math.log(max(short, 1e-3)),
            "peak_lp_acc_g": smoothed_peak(lp_seg, self._hann[: lp_seg.size]),
            "min_acc_before_g": float(before.min()) if before.size else float(mag[i]),
        }
        probability = self.model.probability(features)
        viable = probability >= self._p_min or impulse >= s.unmoving_impulse_gs
        if not viable and self._on_candidate is None:
            return  # most walking steps end here, before the look-back below
        a, b = self._n_pre_dir
        pre_rows = work[max(0, i - a) : max(1, i - b)]
        pre_dir = column_means(pre_rows)
        pre_dir /= max(float(np.sqrt(dot3(pre_dir * pre_dir, np.ones(3)))), 1e-9)
        ref = self._ref_up
        pre = work[max(0, i - self._n_pre) : max(0, i - self._n_pre_end + 1), _UX : _UZ + 1]
        pre = pre[np.isfinite(pre).all(axis=1)]
        if pre.size and self._ref_calibrated:
            if float(dot3(pre, ref).max()) <= math.cos(math.radians(s.lying_tilt_deg)):
                return  # lying all along: turning over in bed is no fall
        elif pre.size:
            mean_up = column_means(pre)
            cos_mean = float(dot3(mean_up, ref)) / max(float(np.linalg.norm(mean_up)), 1e-9)
            if cos_mean <= math.cos(math.radians(s.lying_tilt_deg)):
                # Far from a nominal (unmeasured) upright on average: more likely
                # a puck worn rotated than a patient in bed. Judge against the
                # trunk as it was just before the impact.
                ref = pre_dir
        features.update(peak_acc_g=float(mag[i]), impulse_gs=impulse)
        self._pending.append(
            FallCandidate(base + i, float(work[i, _T]), features, probability, viable, pre_dir, ref)
        )

    def _judge(self, work: FloatArray, base: int, pos: int, last: int) -> FallFinding | None:
        """Detect at the earliest sample in [pos, last] that confirms a pending candidate."""
        s = self.settings
        lo, hi = last + 1, pos - 1
        spans = []
        for c in self._pending:
            e0 = max(pos, c.index + self._n_confirm[0])
            e1 = min(last, c.index + self._n_confirm[1])
            if e1 >= e0:
                # The engine's up estimate must agree the trunk is near lying
                # (cheap; spares the window statistics during ordinary steps).
                engine_tilt = self._engine_tilt(work[e0 - base : e1 - base + 1], c.ref_up)
                near = engine_tilt >= s.lying_tilt_deg - _ENGINE_TILT_MARGIN_DEG
                strong = c.features["impulse_gs"] >= s.unmoving_impulse_gs
                spans.append((c, e0, e1, near))
                if strong or near.any():
                    lo, hi = min(lo, e0), max(hi, e1)
        best: tuple[int, float, FallCandidate] | None = None
        if hi >= lo:
            need = np.zeros(hi - lo + 1, dtype=bool)
            for c, e0, e1, near in spans:
                if c.features["impulse_gs"] >= s.unmoving_impulse_gs:
                    need[e0 - lo : e1 - lo + 1] = True
                elif near.any():  # then [e0, e1] lies within [lo, hi]
                    need[e0 - lo : e1 - lo + 1] |= near
            at = np.flatnonzero(need)  # offsets from lo of the samples worth a look
            w = self._n_still
            sd = window_sds(work[:, _MAG], w, at + (lo - base - w + 1))
            # Both paths need a quiet trunk: skip the rest while moving (jogging).
            quiet = sd <= max(s.still_acc_sd_g, s.unmoving_acc_sd_g)
            at, sd = at[quiet], sd[quiet]
            if at.size:
                starts = at + (lo - base - w + 1)  # window start (work index) per sample
                mean_dir = np.stack([window_means(work[:, c], w, starts) for c in range(3)], 1)
                mean_dir /= np.sqrt(dot3(mean_dir * mean_dir, np.ones(3)))[:, None]
                for c, e0, e1, near in spans:
                    j0, j1 = np.searchsorted(at, [e0 - lo, e1 - lo + 1])
                    if j1 > j0:
                        engine_ok = near[at[j0:j1] + lo - e0]
                        hit = self._first_hit(
                            c, lo + at[j0:j1], mean_dir[j0:j1], sd[j0:j1], engine_ok
                        )
                        if hit is not None and (best is None or hit[0] < best[0]):
                            best = (*hit, c)
        if best is None:
            keep = []
            for c in self._pending:
                if c.index + self._n_confirm[1] <= last:
                    self._resolve(c, "expired")
                else:
                    keep.append(c)
            self._pending = keep
            return None
        e, tilt_deg, winner = best
        pending, self._pending = self._pending, []
        for c in pending:
            if c is not winner and c.index + self._n_merge <= e:  # others opened later never were
                self._resolve(c, "expired" if c.index + self._n_confirm[1] < e else "superseded")
        # Peaks completing after e are looked at only once the detector re-arms.
        self._peak_next = min(self._peak_next, e - self._n_merge + 1)
        return self._detect(winner, float(work[e - base, _T]), e, tilt_deg)

    def _first_hit(
        self,
        c: FallCandidate,
        e: NDArray[np.intp],
        mean_dir: FloatArray,
        sd: FloatArray,
        engine_ok: NDArray[np.bool_],
    ) -> tuple[int, float] | None:
        """First (sample index, tilt) among the samples ``e`` that confirms ``c``.

        ``mean_dir`` (k, 3) unit mean acceleration and ``sd`` (k,) of the
        still window ending at each sample; ``engine_ok`` (k,) where the
        engine's up agrees the trunk is near lying.
        """
        s = self.settings
        tilt = np.degrees(np.arccos(np.clip(dot3(mean_dir, c.ref_up), -1.0, 1.0)))
        lying = (tilt >= s.lying_tilt_deg) & (sd <= s.still_acc_sd_g) & engine_ok
        if "tilt_post_deg" not in c.features and lying.any():
            j = int(np.argmax(lying))
            c.features.update(
                tilt_post_deg=float(tilt[j]),
                post_acc_sd_g=float(sd[j]),
                lying_after_s=(int(e[j]) - c.index) / self.sample_rate_hz,
            )
        if not c.viable:
            return None
        hit = lying & (c.probability >= self._p_min)
        if c.features["impulse_gs"] >= s.unmoving_impulse_gs:
            change = np.degrees(np.arccos(np.clip(dot3(mean_dir, c.pre_dir), -1.0, 1.0)))
            hit |= (sd <= s.unmoving_acc_sd_g) & (change >= s.unmoving_tilt_change_deg)
        hits = np.flatnonzero(hit)
        return (int(e[hits[0]]), float(tilt[hits[0]])) if hits.size else None

    def _detect(self, c: FallCandidate, t: float, e: int, tilt_deg: float) -> FallFinding:
        self._resolve(c, "detected")
        self._fallen = (e, c.t_s, t, c.ref_up)
        _log.info("fall detected at t=%.2f s (impact %.2f s, p=%.2f)", t, c.t_s, c.probability)
        return FallFinding(
            kind="detected",
            t_s=t,
            details={
                "impact_t_s": c.t_s,
                "peak_acc_g": c.features["peak_acc_g"],
                "impulse_gs": c.features["impulse_gs"],
                "peak_lp_acc_g": c.features["peak_lp_acc_g"],
                "tilt_deg": tilt_deg,
                "probability": c.probability,
                "latency_s": t - c.t_s,
            },
        )

    def _resolve(self, c: FallCandidate, outcome: str) -> None:
        c.outcome = outcome
        if self._on_candidate is not None:
            self._on_candidate(c)

    # -- after a detection -------------------------------------------------

    def _watch_fallen(
        self, work: FloatArray, base: int, pos: int, last: int
    ) -> tuple[FallFinding | None, int | None]:
        """Cancel (up and walking soon after) or re-arm (upright later) in [pos, last].

        Returns the cancellation (or None) and the sample index at which the
        detector re-armed (None: the fall is still active).
        """
        if self._fallen is None:
            return None, pos - 1
        detected_at, impact_t, detect_t, upright_ref = self._fallen
        s, u = self.settings, self._n_upright
        # Judge only runs that start after the detection (not the impact itself).
        lo = max(pos, detected_at + u, base + u - 1) - base  # first work index judged
        if lo > last - base:
            return None, None
        seg = work[lo - u + 1 :]
        is_up = self._engine_tilt(seg, upright_ref) < s.cancel_upright_deg
        window_ends = detected_at + self._n_cancel - (base + lo) + 1
        found = first_recovery(is_up, seg[:, _MAG], u, window_ends, s.cancel_motion_sd_g)
        if found is None:
            return None, None
        self._fallen = None
        i = lo + found[1]
        t = float(work[i, _T])
        if found[0] == "rearmed":
            _log.info("fall detector re-armed at t=%.2f s", t)
            return None, base + i
        _log.info("fall at t=%.2f s cancelled at t=%.2f s: patient up", detect_t, t)
        details = {"impact_t_s": impact_t, "detected_t_s": detect_t}
        return FallFinding(kind="cancelled", t_s=t, details=details), base + i
