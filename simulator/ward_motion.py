"""Many patients' trunk trajectories laid out across patients.

:class:`TrajectoryTable` holds the parts of every patient's
:class:`~simulator.trajectory.TrunkTrajectory` (moves, oscillations, pulses,
transfers) in flat arrays, one entry per part with its owner, and evaluates
the orientation and the pelvis acceleration of any set of patients at a grid
of times ``(K patients, m times)`` in one pass of array operations: the
parts active in each patient's span of times are picked with one mask, their
values computed together and summed into their patient's row. The result is
what each ``TrunkTrajectory`` gives for the same times (tests/test_ward.py
holds them to it); a value depends only on its patient and time, never on
which other patients or times were asked for with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simulator import quaternion as quat
from simulator.trajectory import (
    G_MPS2,
    Oscillation,
    Pulse,
    Transfer,
    TrunkTrajectory,
    move_progress,
)

__all__ = ["TrajectoryTable"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


class _Oscillations:
    """Oscillations of many patients; terms flattened with their oscillation."""

    def __init__(self, owned: Sequence[tuple[int, Oscillation]]) -> None:
        def col(values: list[float]) -> FloatArray:
            return np.asarray(values, dtype=np.float64)

        self.owner = np.asarray([o for o, _ in owned], dtype=np.intp)
        oscs = [osc for _, osc in owned]
        self.t0 = col([o.t0_s for o in oscs])
        self.t1 = col([o.t1_s for o in oscs])
        self.ramp_in = col([o.ramp_s for o in oscs])
        ramp_out = [o.ramp_s if o.ramp_out_s is None else o.ramp_out_s for o in oscs]
        # An open-ended oscillation never fades out.
        self.ramp_out = col(
            [r if math.isfinite(o.t1_s) else 0.0 for r, o in zip(ramp_out, oscs, strict=True)]
        )
        self.omega = col([2.0 * np.pi * o.freq_hz for o in oscs])
        self.jitter_amp = col(
            [o.jitter * o.freq_hz / o.jitter_hz if o.jitter > 0.0 else 0.0 for o in oscs]
        )
        self.jitter_omega = col([2.0 * np.pi * o.jitter_hz for o in oscs])
        self.jitter_phase = col([o.jitter_phase_rad for o in oscs])
        terms = [(i, term) for i, o in enumerate(oscs) for term in o.terms]
        self.term_osc = np.asarray([i for i, _ in terms], dtype=np.intp)
        self.harmonic = col([t.harmonic for _, t in terms])
        self.phase = col([t.phase_rad for _, t in terms])
        self.vector = np.asarray([t.vector for _, t in terms], dtype=np.float64).reshape(-1, 3)

    def add_to(self, out: FloatArray, pos: IntArray, t_s: FloatArray) -> None:
        """Add the oscillations of the patients at rows ``pos[owner]`` to ``out`` (K, m, 3)."""
        active, rows = _active(self.owner, self.t0, self.t1, pos, t_s, strict_end=False)
        if active.size == 0:
            return
        t = t_s[rows]
        tau = t - self.t0[active, None]
        # Most oscillations are on through the whole span asked for (breathing,
        # holding still): their envelope is exactly 1, and skipped.
        lo, hi = t.min(axis=1), t.max(axis=1)
        fading = np.flatnonzero(
            (lo < self.t0[active] + self.ramp_in[active])
            | (hi > self.t1[active] - self.ramp_out[active])
        )
        env = None
        if fading.size:
            env = np.ones(t.shape)
            env[fading] = self._envelope(active[fading], t[fading], tau[fading])
        phase = self.omega[active, None] * tau
        jittered = np.flatnonzero(self.jitter_amp[active] != 0.0)
        if jittered.size:
            j = active[jittered]
            phase[jittered] += self.jitter_amp[j, None] * np.sin(
                self.jitter_omega[j, None] * tau[jittered] + self.jitter_phase[j, None]
            )
        # Terms of the active oscillations, with their position among them.
        where = np.full(self.t0.shape[0], -1, dtype=np.intp)
        where[active] = np.arange(active.size)
        terms = np.flatnonzero(where[self.term_osc] >= 0)
        k = where[self.term_osc[terms]]
        wave = np.sin(self.harmonic[terms, None] * phase[k] + self.phase[terms, None])
        if env is not None:
            wave *= env[k]
        _add_by_row(out, rows[k], wave[:, :, None] * self.vector[terms, None, :])

    def _envelope(self, osc: IntArray, t: FloatArray, tau: FloatArray) -> FloatArray:
        """Raised-cosine on/off ramps (0 outside ``[t0, t1]``), shape of ``t``."""
        env = ((t >= self.t0[osc, None]) & (t <= self.t1[osc, None])).astype(np.float64)
        ramp_in = self.ramp_in[osc, None]
        rise = np.clip(tau / np.where(ramp_in > 0.0, ramp_in, 1.0), 0.0, 1.0)
        env *= np.where(ramp_in > 0.0, 0.5 * (1.0 - np.cos(np.pi * rise)), 1.0)
        ramp_out = self.ramp_out[osc, None]
        fall = np.clip((self.t1[osc, None] - t) / np.where(ramp_out > 0.0, ramp_out, 1.0), 0.0, 1.0)
        env *= np.where(ramp_out > 0.0, 0.5 * (1.0 - np.cos(np.pi * fall)), 1.0)
        return env


def _group_starts(rows: IntArray) -> IntArray:
    """Where each run of equal ``rows`` starts (parts come grouped by owner)."""
    return np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])


def _add_by_row(out: NDArray[Any], rows: IntArray, values: NDArray[Any]) -> None:
    """``out[rows[i]] += values[i]`` for rows grouped together (parts in owner order)."""
    starts = _group_starts(rows)
    out[rows[starts]] += np.add.reduceat(values, starts, axis=0)


def _active(
    owner: IntArray,
    t0: FloatArray,
    t1: FloatArray,
    pos: IntArray,
    t_s: FloatArray,
    *,
    strict_end: bool,
) -> tuple[IntArray, IntArray]:
    """Parts whose ``[t0, t1]`` overlaps their patient's times; and that patient's row.

    ``pos[patient]`` is the patient's row in ``t_s`` (K, m), -1 if not asked for.
    ``strict_end``: a part ending at ``t1`` is over at ``t1`` itself.
    """
    lo, hi = t_s.min(axis=1), t_s.max(axis=1)
    row = pos[owner]
    asked = row >= 0
    r = np.where(asked, row, 0)
    ends = t1 > lo[r] if strict_end else t1 >= lo[r]
    active = np.flatnonzero(asked & (t0 <= hi[r]) & ends)
    return active, row[active]


class TrajectoryTable:
    """The trunk trajectories of patients ``0 .. len(trajectories) - 1``."""

    def __init__(self, trajectories: Sequence[TrunkTrajectory]) -> None:
        self.patients = len(trajectories)
        owner: list[int] = []
        t0: list[float] = []
        next_t0: list[float] = []
        span: list[float] = []
        taper: list[float] = []
        starts: list[FloatArray] = []
        rotvecs: list[FloatArray] = []
        for p, trajectory in enumerate(trajectories):
            moves = trajectory.moves
            # Entry 0 of each patient is the initial posture, in force until its first move.
            times = [-math.inf, *(m.t0_s for m in moves)]
            owner += [p] * len(times)
            t0 += times
            next_t0 += [*times[1:], math.inf]
            span += [0.0, *(m.t1_s - m.t0_s for m in moves)]
            taper += [0.0, *(m.taper for m in moves)]
            starts += [trajectory.initial.as_quat(), *(m.start.as_quat() for m in moves)]
            rotvecs += [np.zeros(3), *(np.asarray(m.rotvec_rad, dtype=np.float64) for m in moves)]
        self._move_owner = np.asarray(owner, dtype=np.intp)
        self._move_t0 = np.asarray(t0)
        self._move_next_t0 = np.asarray(next_t0)
        self._move_span = np.asarray(span)
        self._move_taper = np.asarray(taper)
        self._move_start = np.asarray(starts).reshape(-1, 4)
        self._move_rotvec = np.asarray(rotvecs).reshape(-1, 3)
        # Where a move ends, by the same formula as on the way (u = 1).
        s_end = move_progress(np.ones(len(t0)), self._move_taper)
        self._move_end = quat.multiply(
            self._move_start, quat.from_rotvec(self._move_rotvec * s_end[:, None])
        )
        self._sway = _Oscillations([(p, o) for p, tr in enumerate(trajectories) for o in tr.sway])
        parts = [(p, part) for p, tr in enumerate(trajectories) for part in tr.acc_parts]
        self._gait = _Oscillations([(p, o) for p, o in parts if isinstance(o, Oscillation)])
        pulses = [(p, o) for p, o in parts if isinstance(o, Pulse)]
        self._pulse_owner = np.asarray([p for p, _ in pulses], dtype=np.intp)
        self._pulse_t0 = np.asarray([o.t0_s for _, o in pulses], dtype=np.float64)
        self._pulse_duration = np.asarray([o.duration_s for _, o in pulses], dtype=np.float64)
        self._pulse_peak = np.asarray([o.peak_g for _, o in pulses], dtype=np.float64)
        transfers = [(p, o) for p, o in parts if isinstance(o, Transfer)]
        self._transfer_owner = np.asarray([p for p, _ in transfers], dtype=np.intp)
        self._transfer_t0 = np.asarray([o.t0_s for _, o in transfers], dtype=np.float64)
        self._transfer_duration = np.asarray([o.duration_s for _, o in transfers])
        self._transfer_scale = np.asarray(
            [np.asarray(o.displacement_m) / (o.duration_s**2 * G_MPS2) for _, o in transfers],
            dtype=np.float64,
        ).reshape(-1, 3)
        self.site_m = np.asarray([tr.site_m for tr in trajectories], dtype=np.float64)

    def _positions(self, patients: IntArray) -> IntArray:
        pos = np.full(self.patients, -1, dtype=np.intp)
        pos[patients] = np.arange(patients.shape[0])
        return pos

    def orientation(self, patients: IntArray, t_s: FloatArray) -> FloatArray:
        """``R_wt`` quaternions (K, m, 4) of distinct ``patients`` (K,) at times (K, m)."""
        pos = self._positions(patients)
        return quat.multiply(
            self._base(pos, t_s), quat.from_rotvec(self._oscillation_sum(self._sway, pos, t_s))
        )

    def pelvis_acc_g(self, patients: IntArray, t_s: FloatArray) -> FloatArray:
        """Pelvis acceleration (K, m, 3), world frame, g, at times (K, m)."""
        pos = self._positions(patients)
        out = self._oscillation_sum(self._gait, pos, t_s)
        active, rows = _active(
            self._pulse_owner,
            self._pulse_t0,
            self._pulse_t0 + self._pulse_duration,
            pos,
            t_s,
            strict_end=False,
        )
        if active.size:
            u = (t_s[rows] - self._pulse_t0[active, None]) / self._pulse_duration[active, None]
            shape = np.where((u >= 0.0) & (u <= 1.0), np.sin(np.pi * np.clip(u, 0.0, 1.0)), 0.0)
            _add_by_row(out, rows, shape[:, :, None] * self._pulse_peak[active, None, :])
        active, rows = _active(
            self._transfer_owner,
            self._transfer_t0,
            self._transfer_t0 + self._transfer_duration,
            pos,
            t_s,
            strict_end=False,
        )
        if active.size:
            u = (t_s[rows] - self._transfer_t0[active, None]) / self._transfer_duration[
                active, None
            ]
            inside = (u >= 0.0) & (u <= 1.0)
            u = np.clip(u, 0.0, 1.0)
            shape = np.where(inside, 60.0 * u - 180.0 * u * u + 120.0 * u**3, 0.0)
            _add_by_row(out, rows, shape[:, :, None] * self._transfer_scale[active, None, :])
        return out

    @staticmethod
    def _oscillation_sum(oscillations: _Oscillations, pos: IntArray, t_s: FloatArray) -> FloatArray:
        out = np.zeros((*t_s.shape, 3))
        oscillations.add_to(out, pos, t_s)
        return out

    def _base(self, pos: IntArray, t_s: FloatArray) -> FloatArray:
        """Orientation without the oscillations (K, m, 4)."""
        active, rows = _active(
            self._move_owner, self._move_t0, self._move_next_t0, pos, t_s, strict_end=True
        )
        # The move in force at t is the last of the patient's active moves with
        # t0 <= t; the first active one is in force at the start of its span.
        starts = _group_starts(rows)
        first = np.empty(t_s.shape[0], dtype=np.intp)
        first[rows[starts]] = starts
        started = np.zeros(t_s.shape, dtype=np.intp)
        _add_by_row(started, rows, (t_s[rows] >= self._move_t0[active, None]).astype(np.intp))
        move = active[first[:, None] + started - 1]
        q = self._move_end[move]
        span = self._move_span[move]
        moving = np.flatnonzero((span > 0.0) & (t_s - self._move_t0[move] < span))
        if moving.size:
            m = move.reshape(-1)[moving]
            u = (t_s.reshape(-1)[moving] - self._move_t0[m]) / self._move_span[m]
            s = move_progress(u, self._move_taper[m])
            q.reshape(-1, 4)[moving] = quat.multiply(
                self._move_start[m], quat.from_rotvec(self._move_rotvec[m] * s[:, None])
            )
        return q
