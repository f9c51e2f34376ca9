"""Calibration to the patient's upright posture, and trunk angles from it.

Mounting convention (docs/protocol.md copies this): the wearable sits flat on
the upper back. Device **+z points out of the skin** (backwards, away from the
patient). In the nominal mounting device **+y points up** toward the head,
and device **+x points to the patient's right**, so that (x, y, z) =
(right, up, backward) is right-handed. At rest and upright the accelerometer
then reads about (0, +1, 0) g (it measures the specific force, which points
up). The rotation of the puck about its z axis (its *spin*: wearables are
stuck on any way round) and a tilt of its face (a curved back) are
arbitrary: calibration removes them.

Calibration frame, all in sensor coordinates:

* ``up`` = the accelerometer direction while the patient is upright
  (captured as below);
* ``forward`` = -z made orthogonal to ``up`` (the back's outward normal
  points backward, so its opposite, leveled, is the way the patient faces);
* ``right = cross(forward, up)`` (in this order, it gives the
  patient's right in a right-handed frame).

When is the patient upright? (:mod:`posture.capture` implements this.)
A still pose shows the direction of gravity in sensor axes, nothing more.
What one pose can tell without knowing the spin is whether the back is
vertical: the skin normal z is then roughly horizontal
(``|up·z| <= sin(max_face_tilt_deg)``, 50°). A vertical back with an
unknown spin is upright, or lying on the side; a horizontal one is lying
prone or supine (or bent far over). So:

1. **Still and near the nominal up**: still for ``still_s``, back vertical
   and within ``max_auto_tilt_deg`` (35°) of the nominal up (0, 1, 0):
   calibrate at once. A puck worn the nominal way round on a sitting or
   standing patient gets its calibration within seconds.
2. **Gait tells the spin**: walking happens only with an upright trunk, and
   gait is detected from the wearable's own vertical (the gravity filter),
   without any calibration or nominal mounting. The mean accelerometer
   direction over ``gait_s`` of detected walking (the periodic gait
   accelerations average out) is a *provisional* calibration, used at once
   (angles, slouch, falls); it carries the walking trunk's lean (a few
   degrees).
3. **Refined at the next still upright**: the first still period, back
   vertical, within ``max_refine_deg`` (25°) of the provisional up, replaces
   it (confirmed). A still period that ended at most ``pre_walk_gap_s``
   before the walking bout began (standing, then walking off) is confirmed
   retroactively when the gait calibration comes, if it agrees within
   ``max_refine_deg``; sitting, standing up and walking off takes longer, so
   a slumped sitting pose is not taken this way.
4. **Requested** (the clinician asks the patient to sit or stand up
   straight, :meth:`~posture.engine.PostureEngine.request_calibration`):
   the next still period that begins after the request, any pose, any spin.

Before any calibration the trunk's inclination (for LYING) is judged by the
tilt of the back from vertical, ``asin(|up·z|)``, which needs no spin: lying
prone or supine shows, lying on the side looks upright until a calibration
tells them apart. The fall detector gets the nominal up as an unmeasured
guess (it then judges each impact against the trunk's direction just before
it when the guess does not fit).

Angles of a later up-direction ``v`` (unit, sensor frame). The trunk's tilt
from the calibrated upright is the smallest rotation that takes ``v`` to
``up`` (the "swing": how far, ``acos(v·up)``, and toward which side).
Written as a rotation vector in degrees, its component about the patient's
left axis is the forward bend and its component about the forward axis the
bend to the right:

* ``tilt = acos(v·up)``, ``direction = atan2(-v·right, -v·forward)``;
* ``flexion_deg = tilt · cos(direction)`` (+ forward bend; lying prone
  +90, supine -90, touching the toes beyond +90);
* ``lateral_deg = tilt · sin(direction)`` (+ bend to the patient's right;
  lying on the right side +90).

For a pure forward or sideways bend they are that bend's angle; for small
combined bends they equal the sagittal and frontal inclinations; they stay
well defined all the way round (only an upside-down trunk has no
direction). Both are 0 at the captured upright, whatever the mounting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from common.errors import PostureMonitorError
from posture.kernels import Kernel, selected_kernel
from posture.types import check_positive_fields

__all__ = [
    "Calibration",
    "CalibrationError",
    "CalibrationSettings",
    "TrunkAngles",
    "angles_tcd",
    "face_tilt_deg",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# -z within 30° of up leaves "forward" ill-defined (the puck would lie almost
# horizontal on an upright back, which a back cannot hold).
MIN_FORWARD_NORM = math.sin(math.radians(30.0))


class CalibrationError(PostureMonitorError, ValueError):
    """An upright direction cannot define a calibration frame."""


@dataclass(frozen=True)
class Calibration:
    """A patient's upright frame in sensor coordinates (unit 3-vectors).

    ``t_s`` is the sample time of the capture; ``requested`` tells whether a
    clinician asked for it (else it was automatic); ``provisional`` that it
    comes from walking and is still waiting for a still upright to refine
    it (a restored provisional calibration keeps waiting).
    """

    up_sensor: tuple[float, float, float]
    forward_sensor: tuple[float, float, float]
    right_sensor: tuple[float, float, float]
    t_s: float = math.nan
    requested: bool = False
    provisional: bool = False

    @classmethod
    def from_up(
        cls,
        up_sensor: FloatArray | tuple[float, float, float],
        *,
        t_s: float = math.nan,
        requested: bool = False,
        provisional: bool = False,
    ) -> Calibration:
        """Build the frame from an upright up-direction (any length > 0).

        Raises:
            CalibrationError: ``up_sensor`` is zero, not finite, or within 30°
                of the device's ±z axis (forward would be undefined).
        """
        # Python floats, in a fixed order: faster than NumPy on one
        # 3-vector, and the compiled capture (posture.kernels.capture)
        # normalises the up the same way, bit for bit (BLAS's dot may fuse
        # or reorder).
        x, y, z = (float(v) for v in np.asarray(up_sensor, dtype=np.float64).reshape(3))
        norm = math.sqrt((x * x + y * y) + z * z)
        if not (math.isfinite(norm) and norm > 1e-9):
            raise CalibrationError(
                f"upright direction must be a finite non-zero vector, got {[x, y, z]}"
            )
        up = (x / norm, y / norm, z / norm)
        # forward = -back + (up·back) up with back = +z, made unit.
        fx, fy, fz = up[2] * up[0], up[2] * up[1], -1.0 + up[2] * up[2]
        f_norm = math.sqrt((fx * fx + fy * fy) + fz * fz)
        if f_norm < MIN_FORWARD_NORM:
            raise CalibrationError(
                "device z axis is within 30° of vertical in the upright pose; "
                "is the wearable flat on the upper back?"
            )
        fx, fy, fz = fx / f_norm, fy / f_norm, fz / f_norm
        # right = forward x up (np.cross's order of operations)
        right = (fy * up[2] - fz * up[1], fz * up[0] - fx * up[2], fx * up[1] - fy * up[0])
        return cls(
            up_sensor=up,
            forward_sensor=(fx, fy, fz),
            right_sensor=right,
            t_s=float(t_s),
            requested=requested,
            provisional=provisional,
        )

    @cached_property
    def matrix(self) -> FloatArray:
        """(3, 3) rows forward, right, up: sensor vector -> patient frame."""
        return np.array([self.forward_sensor, self.right_sensor, self.up_sensor])

    def angles_deg(self, up_sensor: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(flexion_deg, lateral_deg)``, each (n,), of up-directions (n, 3)."""
        flexion, lateral, _ = self.angles_and_tilt_deg(up_sensor)
        return flexion, lateral

    def angles_and_tilt_deg(
        self, up_sensor: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Flexion, lateral and the tilt from upright (all (n,), degrees)."""
        flexion, lateral, tilt = angles_tcd(
            np.asarray(up_sensor, dtype=np.float64)[:, :, None], self.matrix[:, :, None]
        )
        return flexion[:, 0], lateral[:, 0], tilt[:, 0]


def angles_tcd(
    up_sensor: FloatArray, matrix: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Flexion, lateral and tilt (each (n, D), degrees) of up-directions.

    ``up_sensor`` (n, 3, D) unit vectors; ``matrix`` (3, 3, D) each device's
    :attr:`Calibration.matrix` (rows forward, right, up).
    """
    # Body-frame components (n, 3, D): forward, right, up.
    body = np.add.reduce(matrix[None] * up_sensor[:, None], axis=2)
    fwd, rgt, upc = body[:, 0], body[:, 1], body[:, 2]
    # atan2 of the sideways length against the up part is the tilt,
    # accurate near 0° and 180° where acos is not.
    side = np.sqrt(np.add.reduce(body[:, :2] * body[:, :2], axis=1))
    tilt = np.arctan2(side, upc)
    # Where side is 0, fwd and rgt are 0 too and the angles come out 0.
    scale = tilt * (-180.0 / math.pi)
    scale /= np.maximum(side, 1e-300)
    # + 0.0 turns -0.0 into 0.0 for display.
    flexion = fwd * scale
    flexion += 0.0
    lateral = rgt * scale
    lateral += 0.0
    tilt *= 180.0 / math.pi
    return flexion, lateral, tilt


def face_tilt_deg(up_sensor: FloatArray) -> FloatArray:
    """Tilt of the back from vertical, ``asin(|up·z|)`` in degrees, (n, D) from (n, 3, D).

    Spin-free: 0 for a vertical back (upright, or lying on the side), 90 for
    a horizontal one (lying prone or supine), plus the face's own tilt.
    """
    z = np.minimum(np.abs(up_sensor[:, 2]), 1.0)
    return np.degrees(np.arcsin(z))


class TrunkAngles:
    """The engine's angles of many devices' up-directions, each under its own
    calibration or none.

    ``kernel`` picks the implementation (:func:`posture.kernels.selected_kernel`);
    the NumPy code (:func:`angles_tcd`, :func:`face_tilt_deg`) is the
    reference that :mod:`posture.kernels.angles` is tested against.
    """

    def __init__(self, kernel: Kernel | str | None = None) -> None:
        self.kernel = selected_kernel(kernel)
        if self.kernel is Kernel.COMPILED:
            from posture.kernels import angles

            self._kernels = angles

    def of_devices(
        self, up_sensor: FloatArray, matrix: FloatArray, calibrated: BoolArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Flexion, lateral (n, D), NaN where ``calibrated`` (D,) is False, and
        the inclination (n, D): the tilt from the calibrated upright, else the
        back's tilt from vertical (:func:`face_tilt_deg`); all degrees.

        ``up_sensor`` (n, 3, D) unit vectors; ``matrix`` (3, 3, D) each
        device's :attr:`Calibration.matrix` (ignored where uncalibrated).

        Raises:
            ValueError: the shapes do not match.
        """
        n, d = _check_shapes(up_sensor, matrix)
        if calibrated.shape != (d,):
            raise ValueError(f"calibrated flags of shape {calibrated.shape} for {d} devices")
        if self.kernel is Kernel.COMPILED:
            flexion, lateral, incl = np.empty((n, d)), np.empty((n, d)), np.empty((n, d))
            self._kernels.angles_of_devices(
                np.ascontiguousarray(up_sensor),
                np.ascontiguousarray(matrix),
                np.ascontiguousarray(calibrated),
                flexion,
                lateral,
                incl,
            )
            return flexion, lateral, incl
        count = np.count_nonzero(calibrated)
        if count == d:
            return angles_tcd(up_sensor, matrix)
        incl = face_tilt_deg(up_sensor)
        if count == 0:
            return np.full((n, d), math.nan), np.full((n, d), math.nan), incl
        flexion, lateral, tilt = angles_tcd(up_sensor, matrix)
        flexion[:, ~calibrated] = math.nan
        lateral[:, ~calibrated] = math.nan
        incl[:, calibrated] = tilt[:, calibrated]
        return flexion, lateral, incl

    def redo_device(
        self,
        up_sensor: FloatArray,
        matrix: FloatArray,
        device: int,
        first: int,
        flexion: FloatArray,
        lateral: FloatArray,
        incl: FloatArray,
    ) -> None:
        """Device ``device``'s angles from sample ``first`` on under its
        calibration in ``matrix`` (just captured): rewrites rows ``first:`` of
        its column of ``flexion``, ``lateral`` and ``incl`` (n, D, as
        :meth:`of_devices` returned them; the inclination becomes the tilt).

        Raises:
            ValueError: the shapes do not match, or ``device``/``first`` is
                out of range.
        """
        n, d = _check_shapes(up_sensor, matrix)
        if not (0 <= device < d and 0 <= first <= n):
            raise ValueError(f"device {device}, sample {first} of a block of {(n, d)}")
        if not (flexion.shape == lateral.shape == incl.shape == (n, d)):
            raise ValueError(f"angle arrays {flexion.shape}, {lateral.shape}, {incl.shape}")
        if (
            self.kernel is Kernel.COMPILED
            and flexion.flags.c_contiguous
            and lateral.flags.c_contiguous
            and incl.flags.c_contiguous
        ):
            self._kernels.angles_of_device(
                np.ascontiguousarray(up_sensor),
                np.ascontiguousarray(matrix),
                device,
                first,
                flexion,
                lateral,
                incl,
            )
            return
        column = slice(device, device + 1)
        f, lat, tilt = angles_tcd(up_sensor[first:, :, column], matrix[:, :, column])
        flexion[first:, device] = f[:, 0]
        lateral[first:, device] = lat[:, 0]
        incl[first:, device] = tilt[:, 0]


def _check_shapes(up_sensor: FloatArray, matrix: FloatArray) -> tuple[int, int]:
    """(n, D) of ``up_sensor`` (n, 3, D) and ``matrix`` (3, 3, D); the compiled
    kernels index without bounds checks, so a mismatch never reaches them."""
    if up_sensor.ndim != 3 or up_sensor.shape[1] != 3 or matrix.shape != (3, 3, up_sensor.shape[2]):
        raise ValueError(
            f"up-directions (n, 3, D) and matrices (3, 3, D) expected, got {up_sensor.shape}"
            f" and {matrix.shape}"
        )
    return up_sensor.shape[0], up_sensor.shape[2]


@dataclass(frozen=True)
class CalibrationSettings:
    """When a pose counts as the upright one (rules in the module docstring).

    Still: every sample within ``still_acc_g`` of the acceleration's
    low-pass (the gravity filter's rest low-pass, 0.5 s), with a magnitude
    within ``gravity_tolerance_g`` of 1 g and (gyroscope wearables) a rate
    below ``still_gyr_dps``, for ``still_s``. Automatic captures also need the
    back vertical (face within ``max_face_tilt_deg`` of vertical) and either
    the pose within ``max_auto_tilt_deg`` of the nominal up, or ``gait_s`` of
    walking (provisional), refined by a still pose within ``max_refine_deg``
    of it; a still period ending at most ``pre_walk_gap_s`` before the walk
    is confirmed retroactively. A requested capture trusts the clinician.
    """

    still_s: float = 2.5
    still_acc_g: float = 0.04
    still_gyr_dps: float = 8.0
    gravity_tolerance_g: float = 0.15
    max_auto_tilt_deg: float = 35.0
    max_face_tilt_deg: float = 50.0
    gait_s: float = 4.0
    max_refine_deg: float = 25.0
    pre_walk_gap_s: float = 3.0

    def __post_init__(self) -> None:
        check_positive_fields(self)
        for name in ("max_auto_tilt_deg", "max_refine_deg"):
            if getattr(self, name) >= 90.0:
                raise ValueError(f"CalibrationSettings.{name} must be below 90°")
        # Beyond 60° the skin normal may be within 30° of vertical, where
        # "forward" is undefined (Calibration.from_up).
        if self.max_face_tilt_deg >= 60.0:
            raise ValueError("CalibrationSettings.max_face_tilt_deg must be below 60°")
