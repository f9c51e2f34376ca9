"""The trunk's motion as smooth functions of scenario time.

A :class:`TrunkTrajectory` is what the choreography (simulator/choreography.py)
compiles a patient's timeline into, and what the sensor model samples:

* the trunk orientation ``R_wt(t)`` (trunk frame -> world frame), a chain of
  :class:`Move` s between postures times small :class:`Oscillation` s
  (gait sway, breathing): ``R_wt = base(t) * exp(sway(t))``;
* the linear acceleration of the pelvis in the world frame (g), a sum of
  oscillations (gait), half-sine :class:`Pulse` s (falls, hard sitting) and
  minimum-jerk :class:`Transfer` s (sitting down, standing up).

Frames: world x = the patient's initial heading (forward), y = left, z = up.
Trunk x = anterior (out of the chest), y = the patient's left, z = toward the
head. Everything is pure and vectorised: arrays of times in, arrays out.
Before time 0 the patient holds the initial posture, breathing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

__all__ = [
    "DIFF_STEP_S",
    "G_MPS2",
    "SENSOR_SITE_M",
    "FallTruth",
    "Move",
    "Oscillation",
    "OscillationTerm",
    "Pulse",
    "Transfer",
    "TrunkTrajectory",
    "inclinations_deg",
    "move_progress",
    "posture_rotation",
]

FloatArray = NDArray[np.float64]
G_MPS2 = 9.80665
"""Standard gravity, m/s² per g."""

SENSOR_SITE_M = (-0.10, 0.0, 0.45)
"""Where the wearable sits in the trunk frame, metres from the pivot at the
pelvis: 45 cm up the spine (upper thoracic) and 10 cm behind its axis."""

DIFF_STEP_S = 2e-3  # central-difference step for the lever-arm acceleration


def posture_rotation(flexion_deg: float, lateral_deg: float, heading_rad: float = 0.0) -> Rotation:
    """The trunk orientation with these inclinations (docs/scenarios.md).

    ``flexion_deg`` and ``lateral_deg`` are the trunk's inclinations in its
    sagittal and frontal planes (what :func:`inclinations_deg` returns), so
    ``inclinations_deg(posture_rotation(f, l)) == (f, l)`` for ``|f| < 90``
    (beyond, the trunk axis points below the horizon and the frontal-plane
    inclination reads about 180°). ``heading_rad`` turns the patient about the vertical.
    """
    lateral = math.radians(lateral_deg)
    flexion = math.radians(flexion_deg)
    # Intrinsic Z (heading), Y (flexion), X (lateral). The Y angle is chosen
    # so the sagittal-plane projection of the trunk axis equals flexion_deg.
    pitch = math.atan2(math.sin(flexion) * math.cos(lateral), math.cos(flexion))
    return Rotation.from_euler("ZYX", [heading_rad, pitch, lateral])


def inclinations_deg(r_wt: Rotation) -> tuple[FloatArray, FloatArray]:
    """Trunk ``(flexion_deg, lateral_deg)``, each (n,), from orientations.

    With ``u`` the world's up in trunk coordinates (x anterior, y left,
    z cranial): ``flexion = atan2(-u_x, u_z)`` (+ forward) and
    ``lateral = atan2(u_y, u_z)`` (+ toward the patient's right): a two-axis
    inclinometer on the trunk. Heading (turning about the vertical) does not
    change them. Near lying both become ill-defined in one axis.
    """
    up = np.atleast_2d(r_wt.inv().apply([0.0, 0.0, 1.0]))
    flexion = np.degrees(np.arctan2(-up[:, 0], up[:, 2]))
    lateral = np.degrees(np.arctan2(up[:, 1], up[:, 2]))
    return flexion, lateral


@dataclass(frozen=True, slots=True)
class Move:
    """Rotate the trunk from ``start`` by ``rotvec_rad`` (trunk frame).

    Progress follows a minimum-jerk profile (zero rate and acceleration at
    both ends) or, with ``taper`` > 0, a fall profile: the rate grows from
    zero like a toppling body's, then drops to zero over the last ``taper``
    fraction (arms, knees and the floor stop the rotation).
    """

    t0_s: float
    t1_s: float
    start: Rotation
    rotvec_rad: FloatArray
    taper: float = 0.0

    @property
    def end(self) -> Rotation:
        return self.start * Rotation.from_rotvec(self.rotvec_rad)


def move_progress(u: FloatArray, taper: FloatArray) -> FloatArray:
    """Move progress 0..1 at normalised times ``u`` (clipped to 0..1).

    ``taper`` 0: minimum jerk. ``taper`` f > 0 (a fall): the rate grows as
    ``u²`` (a toppling body starts slowly) until ``a = 1 - f``, then falls to
    0 along a half cosine over the last fraction ``f``.
    """
    u = np.clip(u, 0.0, 1.0)
    min_jerk = u**3 * (10.0 - 15.0 * u + 6.0 * u * u)
    f = np.where(taper > 0.0, taper, 0.5)
    a = 1.0 - f
    c = 1.0 / (a**3 / 3.0 + a * a * f / 2.0)
    rising = c * u**3 / 3.0
    w = np.maximum(u - a, 0.0)
    stopping = c * a**3 / 3.0 + c * a * a / 2.0 * (w + f / np.pi * np.sin(np.pi * w / f))
    fall = np.where(u <= a, rising, stopping)
    return np.where(taper > 0.0, fall, min_jerk)


@dataclass(frozen=True, slots=True)
class OscillationTerm:
    """``vector * sin(harmonic * phase(t) + phase_rad)``."""

    harmonic: float
    vector: tuple[float, float, float]
    phase_rad: float


@dataclass(frozen=True, slots=True)
class Oscillation:
    """A periodic 3-vector with smooth on/off ramps and frequency jitter.

    Active on ``[t0_s, t1_s]`` (``t1_s`` may be inf), faded in and out by
    raised-cosine ramps of ``ramp_s`` (``ramp_out_s`` at the end if given).
    The instantaneous frequency is
    ``freq_hz * (1 + jitter * cos(2 pi jitter_hz t + jitter_phase_rad))``,
    so steps are not metronomic.
    """

    t0_s: float
    t1_s: float
    ramp_s: float
    freq_hz: float
    terms: tuple[OscillationTerm, ...]
    jitter: float = 0.0
    jitter_hz: float = 0.1
    jitter_phase_rad: float = 0.0
    ramp_out_s: float | None = None

    def value(self, t_s: FloatArray) -> FloatArray:
        """The oscillation at times (n,), shape (n, 3); 0 outside its span."""
        tau = t_s - self.t0_s
        env = np.where((t_s >= self.t0_s) & (t_s <= self.t1_s), 1.0, 0.0)
        if self.ramp_s > 0.0:
            rise = np.clip(tau / self.ramp_s, 0.0, 1.0)
            env = env * 0.5 * (1.0 - np.cos(np.pi * rise))
        ramp_out = self.ramp_s if self.ramp_out_s is None else self.ramp_out_s
        if ramp_out > 0.0 and math.isfinite(self.t1_s):
            fall = np.clip((self.t1_s - t_s) / ramp_out, 0.0, 1.0)
            env = env * 0.5 * (1.0 - np.cos(np.pi * fall))
        phase = 2.0 * np.pi * self.freq_hz * tau
        if self.jitter > 0.0:
            phase = phase + (self.jitter * self.freq_hz / self.jitter_hz) * np.sin(
                2.0 * np.pi * self.jitter_hz * tau + self.jitter_phase_rad
            )
        out = np.zeros((t_s.shape[0], 3))
        for term in self.terms:
            out += np.sin(term.harmonic * phase + term.phase_rad)[:, None] * np.asarray(term.vector)
        return out * env[:, None]


@dataclass(frozen=True, slots=True)
class Pulse:
    """A half-sine acceleration ``peak_g * sin(pi (t - t0) / duration)`` (world)."""

    t0_s: float
    duration_s: float
    peak_g: tuple[float, float, float]

    @property
    def t1_s(self) -> float:
        return self.t0_s + self.duration_s

    def value(self, t_s: FloatArray) -> FloatArray:
        u = (t_s - self.t0_s) / self.duration_s
        shape = np.where((u >= 0.0) & (u <= 1.0), np.sin(np.pi * np.clip(u, 0.0, 1.0)), 0.0)
        return shape[:, None] * np.asarray(self.peak_g, dtype=np.float64)

    @property
    def delta_v_gs(self) -> FloatArray:
        """Velocity change (g*s per axis) the pulse causes: 2 peak T / pi."""
        return np.asarray(self.peak_g) * 2.0 * self.duration_s / np.pi


@dataclass(frozen=True, slots=True)
class Transfer:
    """A minimum-jerk displacement of the pelvis by ``displacement_m`` (world)."""

    t0_s: float
    duration_s: float
    displacement_m: tuple[float, float, float]

    @property
    def t1_s(self) -> float:
        return self.t0_s + self.duration_s

    def value(self, t_s: FloatArray) -> FloatArray:
        """Acceleration in g, shape (n, 3)."""
        u = (t_s - self.t0_s) / self.duration_s
        inside = (u >= 0.0) & (u <= 1.0)
        u = np.clip(u, 0.0, 1.0)
        shape = np.where(inside, 60.0 * u - 180.0 * u * u + 120.0 * u**3, 0.0)
        scale = 1.0 / (self.duration_s**2 * G_MPS2)
        return shape[:, None] * (np.asarray(self.displacement_m) * scale)


@dataclass(frozen=True, slots=True)
class FallTruth:
    """A fall as scheduled: onset, impact (scenario s), how and from where."""

    onset_s: float
    impact_s: float
    direction: str
    origin: str
    impact_g: float


class TrunkTrajectory:
    """A patient's trunk motion: orientation, pelvis acceleration, labels.

    Built once by the choreography; evaluation never mutates it.
    """

    def __init__(
        self,
        *,
        initial: Rotation,
        moves: Sequence[Move],
        sway: Sequence[Oscillation],
        gait: Sequence[Oscillation],
        pulses: Sequence[Pulse],
        transfers: Sequence[Transfer],
        labels: Sequence[tuple[float, str]],
        falls: Sequence[FallTruth],
        site_m: tuple[float, float, float] = SENSOR_SITE_M,
    ) -> None:
        starts = [m.t0_s for m in moves]
        if starts != sorted(starts):
            raise ValueError("moves must be in time order")
        self._initial = initial
        self._moves = tuple(moves)
        # Entry 0 stands for "before the first move": the initial posture.
        self._t0 = np.array([-np.inf, *starts])
        self._span = np.array([0.0, *(m.t1_s - m.t0_s for m in moves)])
        self._taper = np.array([0.0, *(m.taper for m in moves)])
        self._starts = Rotation.concatenate([initial, *(m.start for m in moves)])
        self._rotvecs = np.array([[0.0, 0.0, 0.0], *(m.rotvec_rad for m in moves)])
        self._sway = tuple(sway)
        self._acc: tuple[Oscillation | Pulse | Transfer, ...] = (*gait, *pulses, *transfers)
        self._label_t = np.array([t for t, _ in labels])
        self._label_names = np.array([name for _, name in labels])
        self.falls: tuple[FallTruth, ...] = tuple(falls)
        self._site_m = np.asarray(site_m, dtype=np.float64)

    @property
    def moves(self) -> tuple[Move, ...]:
        return self._moves

    @property
    def initial(self) -> Rotation:
        """``R_wt`` before the first move."""
        return self._initial

    @property
    def sway(self) -> tuple[Oscillation, ...]:
        """The small oscillating rotations (trunk frame, rad)."""
        return self._sway

    @property
    def acc_parts(self) -> tuple[Oscillation | Pulse | Transfer, ...]:
        """What the pelvis acceleration sums: gait, pulses, transfers (world, g)."""
        return self._acc

    @property
    def site_m(self) -> tuple[float, float, float]:
        """The sensor site, trunk frame, metres from the pivot at the pelvis."""
        x, y, z = (float(v) for v in self._site_m)
        return (x, y, z)

    def base_orientation(self, t_s: FloatArray) -> Rotation:
        """``R_wt`` without the small oscillations, for times (n,)."""
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        idx = np.searchsorted(self._t0, t, side="right") - 1
        span = self._span[idx]
        safe_t0 = np.where(span > 0.0, self._t0[idx], 0.0)
        u = np.where(span > 0.0, (t - safe_t0) / np.where(span > 0.0, span, 1.0), 1.0)
        s = move_progress(u, self._taper[idx])
        return self._starts[idx] * Rotation.from_rotvec(self._rotvecs[idx] * s[:, None])

    def sway_rotvec(self, t_s: FloatArray) -> FloatArray:
        """The small oscillating rotation (trunk frame, rad), shape (n, 3)."""
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        out = np.zeros((t.shape[0], 3))
        if t.size:
            lo, hi = float(t.min()), float(t.max())
            for osc in self._sway:
                if osc.t0_s <= hi and osc.t1_s >= lo:
                    out += osc.value(t)
        return out

    def orientation(self, t_s: FloatArray) -> Rotation:
        """``R_wt`` (trunk -> world) at times (n,)."""
        return self.base_orientation(t_s) * Rotation.from_rotvec(self.sway_rotvec(t_s))

    def pelvis_acc_g(self, t_s: FloatArray) -> FloatArray:
        """Linear acceleration of the pelvis, world frame, g, shape (n, 3)."""
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        out = np.zeros((t.shape[0], 3))
        if t.size:
            lo, hi = float(t.min()), float(t.max())
            for part in self._acc:
                if part.t0_s <= hi and part.t1_s >= lo:
                    out += part.value(t)
        return out

    def kinematics(self, t_s: FloatArray) -> tuple[Rotation, FloatArray]:
        """Orientation and specific force at the sensor site, for times (n,).

        Returns ``R_wt`` (n rotations) and the specific force (what an
        accelerometer measures: acceleration minus gravity) at the site in
        trunk coordinates, g, shape (n, 3). The site's acceleration is the
        pelvis acceleration plus that of the lever arm rotating with the
        trunk (tangential and centripetal), by central differences.
        """
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        n = t.shape[0]
        h = DIFF_STEP_S
        r_all = self.orientation(np.concatenate([t - h, t, t + h]))
        p = r_all.apply(self._site_m)
        lever_g = (p[2 * n :] - 2.0 * p[n : 2 * n] + p[:n]) / (h * h * G_MPS2)
        f_world = self.pelvis_acc_g(t) + lever_g
        f_world[:, 2] += 1.0
        r_wt = r_all[n : 2 * n]
        return r_wt, r_wt.inv().apply(f_world).reshape(n, 3)

    def activity(self, t_s: FloatArray) -> NDArray[np.str_]:
        """The activity label (docs/scenarios.md) at times (n,)."""
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        idx = np.maximum(np.searchsorted(self._label_t, t, side="right") - 1, 0)
        return self._label_names[idx]
