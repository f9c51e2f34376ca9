"""Judging pending fall candidates: the rules' inputs on the samples after an impact.

:class:`Judge` computes, for every pending candidate of one detector call,
the per-sample inputs of :func:`posture.falls.rules.first_hit` (docs/falls.md,
stage 2). The window statistics do not depend on the candidate, so they are
computed once per call for the union of the samples some candidate needs,
and only where a rule could hold by the engine's up estimate (cheap); every
window is reduced from its own samples (:mod:`posture.falls.features`), so
results do not depend on where blocks start.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.falls.features import dot3, window_means, window_sds
from posture.falls.rules import ENGINE_TILT_MARGIN_DEG, RuleInputs
from posture.falls.types import FallCandidate, FallSettings

__all__ = ["COLUMNS", "Judge", "angle_deg", "engine_tilt"]

FloatArray = NDArray[np.float64]

COLUMNS = ("ax", "ay", "az", "mag", "ux", "uy", "uz", "gyro_stuck", "t")
"""The detector's history columns, in order (docs/falls.md, state)."""
_MAG, _UX, _UZ = 3, 4, 6


def angle_deg(dirs: FloatArray, ref: FloatArray) -> FloatArray:
    """Degrees between unit rows ``dirs`` (..., 3) and the unit vector ``ref``."""
    return np.asarray(np.degrees(np.arccos(np.clip(dot3(dirs, ref), -1.0, 1.0))))


def engine_tilt(rows: FloatArray, ref: FloatArray) -> FloatArray:
    """Degrees between the engine's up (history rows' ux..uz) and ``ref``; NaN stays NaN."""
    cos = dot3(rows[:, _UX : _UZ + 1], ref)
    return np.asarray(np.degrees(np.arccos(np.minimum(np.maximum(cos, -1.0), 1.0))))


class Judge:
    """The rules' inputs for one detector's candidates (module docstring).

    Args:
        settings: the detector's thresholds.
        sample_rate_hz: nominal rate; ``n_still``/``n_soft`` the still and
            soft windows in samples.
    """

    def __init__(
        self, settings: FallSettings, sample_rate_hz: float, n_still: int, n_soft: int
    ) -> None:
        self.settings = settings
        self.sample_rate_hz = sample_rate_hz
        self._n_still = n_still
        self._n_soft = n_soft

    def _mean_dirs(self, work: FloatArray, width: int, starts: NDArray[np.intp]) -> FloatArray:
        mean_dir = np.stack([window_means(work[:, c], width, starts) for c in range(3)], 1)
        mean_dir /= np.maximum(np.sqrt(dot3(mean_dir * mean_dir, np.ones(3))), 1e-9)[:, None]
        return mean_dir

    def plan(
        self, work: FloatArray, base: int, c: FallCandidate, e0: int, e1: int, rules: frozenset[str]
    ) -> tuple[NDArray[np.intp], FloatArray, NDArray[np.bool_], NDArray[np.bool_]]:
        """Samples ``e0..e1``, the engine's tilt there, where the window
        deviation is needed (some rule of ``rules`` could hold by the engine's
        tilt, cheap) and where the direction is needed even if not quiet."""
        s = self.settings
        idx = np.arange(e0, e1 + 1)
        eng = engine_tilt(work[e0 - base : e1 - base + 1], c.ref_up)
        down_up = "down_up" in rules and c.features.get("down_tilt_deg", 0.0) >= s.lying_tilt_deg
        engine_up = np.nan_to_num(eng, nan=180.0) < s.cancel_upright_deg
        if c.clipped or "unmoving" in rules:
            need = np.ones(idx.shape, dtype=bool)
        else:
            need = np.zeros(idx.shape, dtype=bool)
            with np.errstate(invalid="ignore"):
                if rules & {"lying", "two_stage", "soft", "out_of_bed"}:
                    need |= eng >= s.lying_tilt_deg - ENGINE_TILT_MARGIN_DEG
                if "reclined" in rules:
                    need |= eng >= s.reclined_tilt_deg - ENGINE_TILT_MARGIN_DEG
        direction = np.zeros(idx.shape, dtype=bool)
        if down_up:
            direction = engine_up | c.clipped
            need |= direction
        return idx, eng, need, direction

    def inputs(
        self,
        work: FloatArray,
        base: int,
        plans: list[tuple[FallCandidate, frozenset[str], int, int]],
    ) -> list[RuleInputs]:
        """The rules' per-sample inputs of each planned candidate.

        Window statistics do not depend on the candidate: they are computed
        once, for the union of the samples some candidate needs (where a rule
        could hold by the engine's up estimate; the direction only where the
        trunk is quiet enough, or for down-then-up), NaN elsewhere (no rule
        holds on NaN).
        """
        s, w = self.settings, self._n_still
        if not plans:
            return []
        laid = [self.plan(work, base, c, e0, e1, rules) for c, rules, e0, e1 in plans]
        lo = min(p[2] for p in plans)
        hi = max(p[3] for p in plans)
        mag = work[:, _MAG]
        need = np.zeros(hi - lo + 1, dtype=bool)
        for idx, _, want, _ in laid:
            need[idx[want] - lo] = True
        sd = np.full(need.shape, math.nan)
        at = np.flatnonzero(need)
        if not at.size:  # nothing could hold anywhere: no statistics
            nan = np.full(need.shape, math.nan)
            return [
                RuleInputs(idx, (idx - c.index) / self.sample_rate_hz, nan, nan, nan, nan, eng)
                for (c, _, _, _), (idx, eng, _, _) in zip(plans, laid, strict=True)
            ]
        if at.size:
            sd[at] = window_sds(mag, w, at + lo - base - w + 1)
        with np.errstate(invalid="ignore"):
            want_dir = sd <= max(s.still_acc_sd_g, s.unmoving_acc_sd_g)
        for idx, _, _, direction in laid:
            want_dir[idx[direction] - lo] = True
        mean_dir = np.full((need.size, 3), math.nan)
        at_dir = np.flatnonzero(want_dir)
        if at_dir.size:
            mean_dir[at_dir] = self._mean_dirs(work, w, at_dir + lo - base - w + 1)
        sd_long = np.full(need.shape, math.nan)
        if any("soft" in rules for _, rules, _, _ in plans):
            # Only full windows (the stream may be younger than one).
            n_long = self._n_soft
            long_at = at_dir[at_dir + lo - base - n_long + 1 >= 0]
            if long_at.size:
                sd_long[long_at] = window_sds(mag, n_long, long_at + lo - base - n_long + 1)
        out = []
        for (c, _, _, _), (idx, eng, _, _) in zip(plans, laid, strict=True):
            j = idx - lo
            looked = want_dir[j]
            tilt = np.full(idx.shape, math.nan)
            change = tilt.copy()
            if looked.any():
                dirs = mean_dir[j[looked]]
                tilt[looked] = angle_deg(dirs, c.ref_up)
                change[looked] = angle_deg(dirs, c.pre_dir)
            out.append(
                RuleInputs(
                    index=idx,
                    after_s=(idx - c.index) / self.sample_rate_hz,
                    tilt_deg=tilt,
                    change_deg=change,
                    sd_g=sd[j],
                    sd_long_g=sd_long[j],
                    engine_tilt_deg=eng,
                )
            )
        return out

    def killed(self, work: FloatArray, base: int, c: FallCandidate, x: RuleInputs) -> None:
        """Mark when the patient is first up and moving like walking (ends the
        long rules); looked at every half still window, on a grid fixed to the peak."""
        s, w = self.settings, self._n_still
        stride = max(1, w // 2)
        grid = ((x.index - c.index) % stride == 0) & (x.after_s > s.confirm_min_s)
        grid &= np.nan_to_num(x.engine_tilt_deg, nan=180.0) < s.cancel_upright_deg
        check = x.index[grid]
        if check.size:
            moving = window_sds(work[:, _MAG], w, check - base - w + 1) >= s.cancel_motion_sd_g
            if moving.any():
                c.killed_at = int(check[np.argmax(moving)])

    def observe_lying(self, c: FallCandidate, x: RuleInputs) -> None:
        """For an observer (training): the posture at the first lying-and-still
        sample within ``confirm_max_s`` of a candidate no rule can confirm."""
        s = self.settings
        if "tilt_post_deg" in c.features:
            return
        near = x.engine_tilt_deg >= s.lying_tilt_deg - ENGINE_TILT_MARGIN_DEG
        lying = (x.tilt_deg >= s.lying_tilt_deg) & (x.sd_g <= s.still_acc_sd_g) & near
        if lying.any():
            j = int(np.argmax(lying))
            c.features.update(
                tilt_post_deg=float(x.tilt_deg[j]),
                post_acc_sd_g=float(x.sd_g[j]),
                lying_after_s=(int(x.index[j]) - c.index) / self.sample_rate_hz,
            )
