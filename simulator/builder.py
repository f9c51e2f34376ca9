"""Mutable state while a patient's timeline is compiled into a trajectory.

:class:`TrajectoryBuilder` keeps the list of moves, oscillations and
accelerations added so far, the posture the patient is in and the upright
angles to come back to. simulator/movements.py adds the movements;
simulator/choreography.py drives it activity by activity.
"""

from __future__ import annotations

import enum
import math

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from simulator.trajectory import (
    FallTruth,
    Move,
    Oscillation,
    OscillationTerm,
    Pulse,
    Transfer,
    TrunkTrajectory,
    move_progress,
    posture_rotation,
)

__all__ = ["LYING_ANGLES_DEG", "Posture", "TrajectoryBuilder"]


class Posture(enum.Enum):
    """Posture classes; the value is the activity label of holding it."""

    STANDING = "stand"
    SITTING = "sit"
    LYING = "lying"


LYING_ANGLES_DEG = {
    "supine": (-90.0, 0.0),
    "prone": (90.0, 0.0),
    "left": (0.0, -90.0),
    "right": (0.0, 90.0),
}
"""(flexion_deg, lateral_deg) of each lying position."""

# Postural sway while holding still: amplitude (deg) and frequency (Hz).
_HOLD_SWAY = {
    Posture.STANDING: (0.35, 0.3),
    Posture.SITTING: (0.15, 0.2),
    Posture.LYING: (0.6, 0.06),
}


class TrajectoryBuilder:
    """Accumulates a patient's trunk motion, in time order."""

    def __init__(self, rng: np.random.Generator, posture: Posture) -> None:
        self.rng = rng
        self.heading_rad = 0.0
        self.posture = posture
        self.upright_deg = (0.0, 0.0)
        self.lying = "supine"
        self.gait_until_s = -math.inf
        self.initial = (
            self.lying_rotation("supine") if posture is Posture.LYING else posture_rotation(0, 0)
        )
        self.moves: list[Move] = []
        self.sway: list[Oscillation] = []
        self.gait: list[Oscillation] = []
        self.pulses: list[Pulse] = []
        self.transfers: list[Transfer] = []
        self.labels: list[tuple[float, str]] = [(0.0, posture.value)]
        self.falls: list[FallTruth] = []
        # Breathing rocks the upper trunk a little, always (12-18 per minute);
        # it starts before 0 so that nothing jumps when the wearable boots.
        self.sway.append(
            Oscillation(
                -600.0,
                math.inf,
                0.0,
                float(rng.uniform(0.2, 0.3)),
                (OscillationTerm(1.0, (0.0, math.radians(0.25), 0.0), float(rng.uniform(0, 6.3))),),
            )
        )

    def trajectory(self) -> TrunkTrajectory:
        """The immutable trajectory of everything added so far."""
        return TrunkTrajectory(
            initial=self.initial,
            moves=self.moves,
            sway=self.sway,
            gait=self.gait,
            pulses=self.pulses,
            transfers=self.transfers,
            labels=self.labels,
            falls=self.falls,
        )

    def orientation_at(self, t_s: float) -> Rotation:
        """Base orientation (no sway) at ``t_s`` given the moves so far."""
        rot = self.initial
        for move in self.moves:
            if move.t0_s > t_s:
                break
            span = move.t1_s - move.t0_s
            u = 1.0 if span <= 0.0 else (t_s - move.t0_s) / span
            s = float(move_progress(np.array([u]), np.array([move.taper]))[0])
            rot = move.start * Rotation.from_rotvec(move.rotvec_rad * s)
        return rot

    def move(self, t0_s: float, duration_s: float, target: Rotation, taper: float = 0.0) -> float:
        """Rotate from wherever the trunk is at ``t0_s`` to ``target``.

        A move that would start before the previous one (an activity cut
        short by the next) starts with it instead. Returns the end time.
        """
        if self.moves and t0_s < self.moves[-1].t0_s:
            t0_s = self.moves[-1].t0_s
        start = self.orientation_at(t0_s)
        rotvec = (start.inv() * target).as_rotvec()
        self.moves.append(Move(t0_s, t0_s + duration_s, start, rotvec, taper))
        return t0_s + duration_s

    def upright(self, flexion_deg: float, lateral_deg: float) -> Rotation:
        """A sitting/standing orientation at the patient's heading."""
        return posture_rotation(flexion_deg, lateral_deg, self.heading_rad)

    def lying_rotation(self, position: str) -> Rotation:
        """The orientation of lying ``supine``/``prone``/``left``/``right``."""
        flexion, lateral = LYING_ANGLES_DEG[position]
        return posture_rotation(flexion, lateral, self.heading_rad)

    def label(self, t_s: float, name: str) -> None:
        """From ``t_s`` on the activity label is ``name``."""
        while self.labels and self.labels[-1][0] >= t_s:
            self.labels.pop()
        self.labels.append((t_s, name))

    def world_axes(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Unit vectors (forward, left) of the patient's heading, world frame."""
        c, s = math.cos(self.heading_rad), math.sin(self.heading_rad)
        return np.array([c, s, 0.0]), np.array([-s, c, 0.0])

    def hold(self, t0_s: float, t1_s: float) -> None:
        """Postural sway of the current posture while holding still."""
        if t1_s - t0_s < 0.2:
            return
        amp_deg, freq_hz = _HOLD_SWAY[self.posture]
        amp = math.radians(amp_deg)
        phases = self.rng.uniform(0.0, 2 * math.pi, 3)
        terms = (
            OscillationTerm(1.0, (amp, 0.0, 0.0), float(phases[0])),
            OscillationTerm(0.7, (0.0, amp, 0.0), float(phases[1])),
            OscillationTerm(0.45, (0.0, 0.0, amp * 0.5), float(phases[2])),
        )
        self.sway.append(
            Oscillation(
                t0_s,
                t1_s,
                min(2.0, (t1_s - t0_s) / 2.0),  # slow fade: no jerk from the ramp
                freq_hz * float(self.rng.uniform(0.8, 1.2)),
                terms,
                jitter=0.2,
                jitter_hz=0.05,
                jitter_phase_rad=float(self.rng.uniform(0.0, 2 * math.pi)),
            )
        )
