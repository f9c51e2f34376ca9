"""The fall detector's per-device path: opening, judging, detecting, recovering.

Runs only for the devices whose block could matter (a peak that passed the
screen of :mod:`posture.falls.screen`, a pending candidate, an active fall,
a new reference upright): stages 1-3 of docs/falls.md on one device's
work rows (its history and the block, read from the shared ring of
:mod:`posture.falls.history`). :class:`DeviceFalls` is that device's state
while it runs, loaded from and stored back into the
:class:`~posture.falls.history.FallState` columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from posture.falls.features import column_means, first_recovery
from posture.falls.history import FallState, WorkRows
from posture.falls.impact import CandidateOpener
from posture.falls.judging import Judge, angle_deg, engine_tilt
from posture.falls.rules import RuleInputs, first_hit
from posture.falls.types import FallCandidate, FallFinding, FallSettings

__all__ = ["DeviceFalls", "DevicePath"]

_log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

_MAG, _T = 3, 8  # work columns (history.COLUMNS, then t)
_DOWN_S = (0.2, 1.0)  # after the peak: was the trunk down (down_up rule)?

# While a fall is active: (detection index, impact t, detection t, upright).
Fallen = tuple[int, float, float, FloatArray]


@dataclass(slots=True)
class DeviceFalls:
    """One device's fall state while its per-device path runs."""

    peak_next: int
    pending: list[FallCandidate]
    fallen: Fallen | None
    ref_up: FloatArray
    ref_calibrated: bool

    @classmethod
    def load(cls, state: FallState, d: int) -> DeviceFalls:
        """Device ``d``'s state; candidates are copies (the stored ones never change)."""
        stored = state.pending[d]
        pending = [replace(c, features=dict(c.features)) for c in stored or ()]
        return cls(
            int(state.peak_next[d]),
            pending,
            state.fallen[d],
            state.ref_up[:, d].copy(),
            bool(state.ref_calibrated[d]),
        )

    def store(self, state: FallState, d: int) -> None:
        state.peak_next[d] = self.peak_next
        state.pending[d] = tuple(self.pending) if self.pending else None
        state.fallen[d] = self.fallen
        state.busy[d] = bool(self.pending) or self.fallen is not None
        state.ref_up[:, d] = self.ref_up
        state.ref_calibrated[d] = self.ref_calibrated


class DevicePath:
    """Stages 1-3 of one configuration, run for one device at a time.

    Args:
        settings: thresholds; sample_rate_hz: nominal rate (windows in samples).
        opener: stage 1; judge: stage 2's inputs; p_min: the model's threshold.
        on_candidate: observer of every resolved candidate (training), or None.
    """

    def __init__(
        self,
        settings: FallSettings,
        sample_rate_hz: float,
        opener: CandidateOpener,
        judge: Judge,
        p_min: float,
        on_candidate: Callable[[FallCandidate], None] | None,
    ) -> None:
        s, fs = settings, sample_rate_hz

        def n(seconds: float) -> int:
            return max(1, round(seconds * fs))

        self.settings, self.sample_rate_hz = s, fs
        self._opener, self._judge, self._p_min = opener, judge, p_min
        self._on_candidate = on_candidate
        self._n_merge = n(s.peak_merge_s)
        self._n_down = (n(_DOWN_S[0]), n(_DOWN_S[1]))
        self._n_confirm = (n(s.confirm_min_s), n(s.confirm_max_s))
        self._n_cancel = n(s.cancel_window_s)
        self._n_upright = n(s.cancel_upright_s)

    def run(
        self, dev: DeviceFalls, rows: WorkRows, base: int, first: int, last: int
    ) -> list[FallFinding]:
        """Samples ``first..last`` (work rows hold ``base..last`` and, before
        ``first``, the history): open, judge, detect, recover; findings in time order."""
        self._find_candidates(dev, rows, base, last)
        if not dev.pending and dev.fallen is None:
            return []  # nothing to judge (a walking step): |a| was all it read
        work = rows.rows
        findings: list[FallFinding] = []
        # Per sample the order is: the recovery from an active fall, then a
        # detection. Each step finds the earliest event in [pos, last]
        # (vectorised over the samples) and applies it.
        pos = first
        while pos <= last:
            recovery = self._recovery(dev, work, base, pos, last)
            hit = self._earliest_hit(dev, work, base, pos, last)
            if recovery is not None and (hit is None or recovery[1] <= hit[0]):
                found = self._recover(dev, work, base, *recovery)
                if found is not None:
                    findings.append(found)
                pos = recovery[1] + 1
            elif hit is not None:
                findings.append(self._detect(dev, work, base, *hit))
                pos = hit[0] + 1
            else:
                break
        self._expire(dev, last)
        return findings

    def _find_candidates(self, dev: DeviceFalls, work: WorkRows, base: int, last: int) -> None:
        """Open candidates at peaks whose ±merge neighbourhood completes by ``last``."""
        k = self._n_merge
        lo, hi = max(dev.peak_next, base) - base, last - k - base  # work indices
        if hi < lo:
            return
        dev.peak_next = hi + base + 1
        mag = work.mag
        for i in lo + np.flatnonzero(mag[lo : hi + 1] >= self.settings.trigger_acc_g):
            left = mag[max(0, i - k) : i]
            # Strict on the left, loose on the right: a plateau opens one candidate.
            if (left.size and left.max() >= mag[i]) or mag[i + 1 : i + k + 1].max() > mag[i]:
                continue
            c = self._opener.open(
                work,
                base,
                int(i),
                dev.ref_up,
                dev.ref_calibrated,
                self._on_candidate is not None,
            )
            if c is not None:
                dev.pending.append(c)

    # -- judging -------------------------------------------------------------

    def _earliest_hit(
        self, dev: DeviceFalls, work: FloatArray, base: int, pos: int, last: int
    ) -> tuple[int, str, FallCandidate, RuleInputs, int] | None:
        """The earliest sample in [pos, last] confirming a pending candidate.

        Returns (sample index, rule, candidate, its inputs, offset) or None.
        Only candidates that start upright may fire while a fall is active.
        """
        s = self.settings
        plans: list[tuple[FallCandidate, frozenset[str], int, int]] = []
        for c in dev.pending:
            if not c.rules and self._on_candidate is None:
                continue
            if c.rules and dev.fallen is not None and not c.pre_upright:
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
        dev: DeviceFalls,
        work: FloatArray,
        base: int,
        e: int,
        rule: str,
        winner: FallCandidate,
        x: RuleInputs,
        j: int,
    ) -> FallFinding:
        pending, dev.pending = dev.pending, []
        for c in pending:
            if c is winner:
                continue
            if c.index + self._n_merge <= e:  # others opened later stay pending
                self._resolve(c, "expired" if c.end_index < e else "superseded")
            else:
                dev.pending.append(c)
        t = float(work[e - base, _T])
        c = winner
        c.features.update(
            tilt_post_deg=float(x.tilt_deg[j]),
            post_acc_sd_g=float(x.sd_g[j]),
            lying_after_s=(e - c.index) / self.sample_rate_hz,
        )
        self._resolve(c, "detected")
        dev.fallen = (e, c.t_s, t, c.ref_up)
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

    def _expire(self, dev: DeviceFalls, last: int) -> None:
        keep = []
        for c in dev.pending:
            short = c.index + self._n_confirm[1] <= last
            long_over = c.killed_at is not None and c.killed_at <= last
            done = c.end_index <= last or (short and long_over)
            if done or (short and not c.rules & {"two_stage", "soft"}):
                self._resolve(c, "expired")
            else:
                keep.append(c)
        dev.pending = keep

    def _resolve(self, c: FallCandidate, outcome: str) -> None:
        c.outcome = outcome
        if self._on_candidate is not None:
            self._on_candidate(c)

    # -- after a detection -------------------------------------------------

    def _recovery(
        self, dev: DeviceFalls, work: FloatArray, base: int, pos: int, last: int
    ) -> tuple[str, int] | None:
        """The first cancellation (up and walking soon after) or re-arm (upright
        later) of the active fall in [pos, last]: ("cancelled" | "rearmed", index)."""
        if dev.fallen is None:
            return None
        detected_at = dev.fallen[0]
        s, u = self.settings, self._n_upright
        # Judge only runs that start after the detection (not the impact itself).
        lo = max(pos, detected_at + u, base + u - 1) - base  # first work index judged
        if lo > last - base:
            return None
        seg = work[lo - u + 1 : last - base + 1]
        is_up = engine_tilt(seg, dev.fallen[3]) < s.cancel_upright_deg
        window_ends = detected_at + self._n_cancel - (base + lo) + 1
        found = first_recovery(is_up, seg[:, _MAG], u, window_ends, s.cancel_motion_sd_g)
        if found is None:
            return None
        return found[0], base + lo + found[1]

    def _recover(
        self, dev: DeviceFalls, work: FloatArray, base: int, kind: str, i: int
    ) -> FallFinding | None:
        assert dev.fallen is not None
        _, impact_t, detect_t, _ = dev.fallen
        dev.fallen = None
        t = float(work[i - base, _T])
        if kind == "rearmed":
            _log.info("fall detector re-armed at t=%.2f s", t)
            return None
        _log.info("fall at t=%.2f s cancelled at t=%.2f s: patient up", detect_t, t)
        details = {"impact_t_s": impact_t, "detected_t_s": detect_t}
        return FallFinding(kind="cancelled", t_s=t, details=details)
