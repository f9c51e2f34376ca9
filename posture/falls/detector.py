"""Streaming fall detector: an impact, then what the trunk does after it.

The stages (docs/falls.md has the rules' table, their reasons and the
families of falls and everyday movements each one is for):

1. **Impact**: a local maximum of ``|a|`` above ``trigger_acc_g`` opens a
   candidate, measured in rate-independent ways: the impulse ``∫ max(|a| -
   1 g, 0) dt`` over ±``impact_window_s`` and the peak of ``|a|`` after a
   0.2 s Hann low-pass (≈ 5 Hz); also the lowest ``|a|`` in the 1.5 s before
   (free fall). The impact model (:mod:`posture.falls.model`) turns them
   into a probability; at least ``min_fall_probability`` is a *fall-grade*
   impact.
2. **Before**: where the fall starts. Lying for the whole ``pre_window_s``
   by the engine's up estimate (calibrated upright), or, before any
   calibration, far from the nominal upright with the back horizontal:
   the patient is in bed (origin ``lying``); only the out-of-bed rule
   applies. Before calibration a trunk far from the nominal upright with
   the back vertical is a wearable worn rotated: the trunk just before the
   impact serves as the upright for that candidate. The trunk direction 2-1
   s before the peak is kept to judge the change of posture.
3. **Aftermath**: the rules of :mod:`posture.falls.rules`, judged at every
   sample from ``confirm_min_s`` after the peak on the last
   ``still_window_s`` (and ``soft_still_s``): lying, reclined, unmoving,
   down-then-up within ``confirm_max_s``; two-stage up to
   ``two_stage_max_s``; soft up to ``soft_confirm_max_s``; out of bed.
   A patient up and moving like walking ends the long rules. A saturated
   gyroscope around the impact (an axis stuck at the same value of at least
   ``gyro_clip_min_dps``) lifts the requirement that the engine's
   (gyroscope-aided) up agree.

A detection is reported at the first sample that confirms it. If within
``cancel_window_s`` the patient is upright (tilt below
``cancel_upright_deg``) and moving like walking (``|a|`` deviation at least
``cancel_motion_sd_g``) for ``cancel_upright_s``, a ``"cancelled"`` finding
follows. While a fall is active (until then, or until the patient has been
upright for ``cancel_upright_s`` after the window) only a fall that starts
upright is a new fall: an impact while still down is not.

Windows are counted in samples at the nominal ``sample_rate_hz``; samples
across a lost packet are treated as contiguous. State is explicit (a short
history of per-sample signals and the pending candidates) and every window
statistic is computed the same way whatever the block boundaries
(:mod:`posture.falls.features`), so findings are identical for any split of
the stream. Orientation enters through the engine's ``up_sensor``; the
gyroscope itself is only checked for saturation, so accelerometer-only
wearables get the same detector.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from posture.falls.features import (
    column_means,
    first_recovery,
)
from posture.falls.impact import CandidateOpener
from posture.falls.judging import Judge, angle_deg, engine_tilt
from posture.falls.model import FallModel, load_fall_model
from posture.falls.rules import RuleInputs, first_hit
from posture.falls.types import FallCandidate, FallFinding, FallSettings

__all__ = ["FallCandidate", "FallDetector", "FallFinding", "FallSettings"]

_log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

_AX, _AY, _AZ, _MAG, _UX, _UY, _UZ, _CLIP, _T = range(9)  # history columns
_N_COLS = 9
_DOWN_S = (0.2, 1.0)  # after the peak: was the trunk down (down_up rule)?


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
        self._n_down = (n(_DOWN_S[0]), n(_DOWN_S[1]))
        self._n_still = n(s.still_window_s)
        self._n_soft = n(s.soft_still_s)
        self._n_confirm = (n(s.confirm_min_s), n(s.confirm_max_s))
        self._n_cancel = n(s.cancel_window_s)
        self._n_upright = n(s.cancel_upright_s)
        self._judge = Judge(s, fs, self._n_still, self._n_soft)
        self._opener = CandidateOpener(s, self.model, self._p_min, fs)
        self._history_len = (
            2 * self._n_merge
            + 2
            + max(self._opener.reach, self._n_upright, self._n_still, self._n_soft)
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
        self._prev_gyr: FloatArray | None = None  # last gyroscope sample (saturation)
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
                judged as from lying (back horizontal) or against the pre-fall
                trunk (a wearable worn rotated; see the module docstring).

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
            gyr_dps: (n, 3) angular rate in °/s, or None; only checked for
                saturation (module docstring).
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
        work[n_hist:, :_T] = self._derive(acc, up, gyr_dps).astype(np.float32)
        work[:, _T] = np.nan
        n_t = self._t_history.shape[0]
        work[n_hist - n_t : n_hist, _T] = self._t_history
        work[n_hist:, _T] = t
        first_new = self._n_seen
        base = first_new - n_hist  # sample index of work[0]
        last = base + work.shape[0] - 1
        self._n_seen += count
        self._find_candidates(work, base, last)
        findings: list[FallFinding] = []
        # Per sample the order is: the recovery from an active fall, then a
        # detection. Each step finds the earliest event in [pos, last]
        # (vectorised over the samples) and applies it.
        pos = first_new
        while pos <= last:
            recovery = self._recovery(work, base, pos, last)
            hit = self._earliest_hit(work, base, pos, last)
            if recovery is not None and (hit is None or recovery[1] <= hit[0]):
                found = self._recover(work, base, *recovery)
                if found is not None:
                    findings.append(found)
                pos = recovery[1] + 1
            elif hit is not None:
                findings.append(self._detect(work, base, *hit))
                pos = hit[0] + 1
            else:
                break
        self._expire(last)
        self._history = work[-self._history_len :, :_T].astype(np.float32)
        self._t_history = work[-min(self._t_len, work.shape[0]) :, _T].copy()
        return findings

    # -- per-sample signals ------------------------------------------------

    def _derive(self, acc: FloatArray, up: FloatArray, gyr_dps: ArrayLike | None) -> FloatArray:
        block = np.empty((acc.shape[0], _T))
        block[:, _AX : _AZ + 1] = acc
        ax, ay, az = acc[:, 0], acc[:, 1], acc[:, 2]
        block[:, _MAG] = np.sqrt(ax * ax + ay * ay + az * az)
        ux, uy, uz = up[:, 0], up[:, 1], up[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            block[:, _UX : _UZ + 1] = up / np.sqrt(ux * ux + uy * uy + uz * uz)[:, None]
        block[:, _CLIP] = 0.0
        if gyr_dps is not None:
            gyr = np.asarray(gyr_dps, dtype=np.float64)
            prev = np.concatenate(
                [gyr[:1] * np.nan if self._prev_gyr is None else self._prev_gyr[None], gyr[:-1]]
            )
            # A saturated axis reads the same full-scale value sample after sample.
            stuck = (np.abs(gyr) >= self.settings.gyro_clip_min_dps) & (gyr == prev)
            block[:, _CLIP] = stuck.any(axis=1)
            self._prev_gyr = gyr[-1].copy()
        return block

    def _find_candidates(self, work: FloatArray, base: int, last: int) -> None:
        """Open candidates at peaks whose ±merge neighbourhood completes by ``last``."""
        k = self._n_merge
        lo, hi = max(self._peak_next, base) - base, last - k - base  # work indices
        if hi < lo:
            return
        self._peak_next = hi + base + 1
        mag = work[:, _MAG]
        for i in lo + np.flatnonzero(mag[lo : hi + 1] >= self.settings.trigger_acc_g):
            left = mag[max(0, i - k) : i]
            # Strict on the left, loose on the right: a plateau opens one candidate.
            if (left.size and left.max() >= mag[i]) or mag[i + 1 : i + k + 1].max() > mag[i]:
                continue
            c = self._opener.open(
                work,
                base,
                int(i),
                self._ref_up,
                self._ref_calibrated,
                self._on_candidate is not None,
            )
            if c is not None:
                self._pending.append(c)

    # -- judging -------------------------------------------------------------

    def _earliest_hit(
        self,
        work: FloatArray,
        base: int,
        pos: int,
        last: int,
    ) -> tuple[int, str, FallCandidate, RuleInputs, int] | None:
        """The earliest sample in [pos, last] confirming a pending candidate.

        Returns (sample index, rule, candidate, its inputs, offset) or None.
        Only candidates that start upright may fire while a fall is active.
        """
        s = self.settings
        plans: list[tuple[FallCandidate, frozenset[str], int, int]] = []
        for c in self._pending:
            if not c.rules and self._on_candidate is None:
                continue
            if c.rules and self._fallen is not None and not c.pre_upright:
                continue
            e0 = max(pos, c.index + self._n_confirm[0])
            e1 = min(last, c.end_index if c.rules else c.index + self._n_confirm[1])
            if c.killed_at is not None:  # only the short rules are left
                e1 = min(e1, max(c.killed_at - 1, c.index + self._n_confirm[1]))
            if e1 < e0:
                continue
            if "down_up" in c.rules and "down_tilt_deg" not in c.features:
                d0, d1 = c.index + self._n_down[0], c.index + self._n_down[1]
                down = column_means(work[d0 - base : d1 - base + 1])
                down /= max(float(np.linalg.norm(down)), 1e-9)
                c.features["down_tilt_deg"] = float(angle_deg(down, c.ref_up))
            # A candidate no rule can confirm is looked at for an observer only.
            plans.append((c, c.rules or frozenset({"lying"}), e0, e1))
        best: tuple[int, str, FallCandidate, RuleInputs, int] | None = None
        for (c, _, _, _), x in zip(plans, self._judge.inputs(work, base, plans), strict=True):
            if not c.rules:
                self._judge.observe_lying(c, x)
                continue
            if c.killed_at is None and c.rules & {"two_stage", "soft"}:
                self._judge.killed(work, base, c, x)
            found = first_hit(c, x, s, self._p_min)
            if found is not None:
                j, rule = found
                e = int(x.index[j])
                if best is None or e < best[0]:
                    best = (e, rule, c, x, j)
        return best

    def _detect(
        self,
        work: FloatArray,
        base: int,
        e: int,
        rule: str,
        winner: FallCandidate,
        x: RuleInputs,
        j: int,
    ) -> FallFinding:
        pending, self._pending = self._pending, []
        for c in pending:
            if c is winner:
                continue
            if c.index + self._n_merge <= e:  # others opened later stay pending
                self._resolve(c, "expired" if c.end_index < e else "superseded")
            else:
                self._pending.append(c)
        t = float(work[e - base, _T])
        c = winner
        c.features.update(
            tilt_post_deg=float(x.tilt_deg[j]),
            post_acc_sd_g=float(x.sd_g[j]),
            lying_after_s=(e - c.index) / self.sample_rate_hz,
        )
        self._resolve(c, "detected")
        self._fallen = (e, c.t_s, t, c.ref_up)
        _log.info(
            "fall detected at t=%.2f s (impact %.2f s, rule %s, p=%.2f)",
            t,
            c.t_s,
            rule,
            c.probability,
        )
        f = c.features
        details = {
            "impact_t_s": c.t_s,
            "peak_acc_g": f["peak_acc_g"],
            "impulse_gs": f["impulse_gs"],
            "peak_lp_acc_g": f["peak_lp_acc_g"],
            "min_acc_before_g": f["min_acc_before_g"],
            "tilt_deg": float(x.tilt_deg[j]),
            "change_deg": float(x.change_deg[j]),
            "still_sd_g": float(x.sd_g[j]),
            "probability": c.probability,
            "latency_s": t - c.t_s,
            "from_lying": f["from_lying"],
            "gyro_clipped": f["gyro_clipped"],
            f"rule_{rule}": 1.0,
        }
        return FallFinding(kind="detected", t_s=t, details=details)

    def _expire(self, last: int) -> None:
        keep = []
        for c in self._pending:
            short = c.index + self._n_confirm[1] <= last
            long_over = c.killed_at is not None and c.killed_at <= last
            done = c.end_index <= last or (short and long_over)
            if done or (short and not c.rules & {"two_stage", "soft"}):
                self._resolve(c, "expired")
            else:
                keep.append(c)
        self._pending = keep

    def _resolve(self, c: FallCandidate, outcome: str) -> None:
        c.outcome = outcome
        if self._on_candidate is not None:
            self._on_candidate(c)

    # -- after a detection -------------------------------------------------

    def _recovery(self, work: FloatArray, base: int, pos: int, last: int) -> tuple[str, int] | None:
        """The first cancellation (up and walking soon after) or re-arm (upright
        later) of the active fall in [pos, last]: ("cancelled" | "rearmed", index)."""
        if self._fallen is None:
            return None
        detected_at = self._fallen[0]
        s, u = self.settings, self._n_upright
        # Judge only runs that start after the detection (not the impact itself).
        lo = max(pos, detected_at + u, base + u - 1) - base  # first work index judged
        if lo > last - base:
            return None
        seg = work[lo - u + 1 :]
        is_up = engine_tilt(seg, self._fallen[3]) < s.cancel_upright_deg
        window_ends = detected_at + self._n_cancel - (base + lo) + 1
        found = first_recovery(is_up, seg[:, _MAG], u, window_ends, s.cancel_motion_sd_g)
        if found is None:
            return None
        return found[0], base + lo + found[1]

    def _recover(self, work: FloatArray, base: int, kind: str, i: int) -> FallFinding | None:
        assert self._fallen is not None
        _, impact_t, detect_t, _ = self._fallen
        self._fallen = None
        t = float(work[i - base, _T])
        if kind == "rearmed":
            _log.info("fall detector re-armed at t=%.2f s", t)
            return None
        _log.info("fall at t=%.2f s cancelled at t=%.2f s: patient up", detect_t, t)
        details = {"impact_t_s": impact_t, "detected_t_s": detect_t}
        return FallFinding(kind="cancelled", t_s=t, details=details)
