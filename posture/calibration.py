"""Calibration to the patient's upright posture, and trunk angles from it.

Mounting convention (docs/protocol.md copies this): the wearable sits flat on
the upper back. Device **+z points out of the skin** (backwards, away from the
patient). In the nominal mounting device **+y points up** toward the head,
and device **+x points to the patient's right**, so that (x, y, z) =
(right, up, backward) is right-handed. At rest and upright the accelerometer
then reads about (0, +1, 0) g (it measures the specific force, which points
up). The rotation of the puck about its z axis and a tilt of its face (a
curved back) are arbitrary: calibration removes them.

Calibration frame, all in sensor coordinates:

* ``up`` = the mean accelerometer direction while the patient holds still,
  upright (captured on request, or automatically after connecting);
* ``forward`` = -z made orthogonal to ``up`` (the back's outward normal
  points backward, so its opposite, leveled, is the way the patient faces);
* ``right = cross(forward, up)`` (in this order, it gives the
  patient's right in a right-handed frame).

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

from posture.rotation import normalize
from posture.types import check_positive_fields
from posture_monitor.errors import PostureMonitorError

__all__ = [
    "Calibration",
    "CalibrationCapture",
    "CalibrationError",
    "CalibrationSettings",
    "inclination_deg",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# -z within 30° of up leaves "forward" ill-defined (the puck would lie almost
# horizontal on an upright back, which a back cannot hold).
_MIN_FORWARD_NORM = math.sin(math.radians(30.0))


class CalibrationError(PostureMonitorError, ValueError):
    """An upright direction cannot define a calibration frame."""


@dataclass(frozen=True)
class Calibration:
    """A patient's upright frame in sensor coordinates (unit 3-vectors).

    ``t_s`` is the sample time of the capture; ``requested`` tells whether a
    clinician asked for it (else it was automatic).
    """

    up_sensor: tuple[float, float, float]
    forward_sensor: tuple[float, float, float]
    right_sensor: tuple[float, float, float]
    t_s: float = math.nan
    requested: bool = False

    @classmethod
    def from_up(
        cls,
        up_sensor: FloatArray | tuple[float, float, float],
        *,
        t_s: float = math.nan,
        requested: bool = False,
    ) -> Calibration:
        """Build the frame from an upright up-direction (any length > 0).

        Raises:
            CalibrationError: ``up_sensor`` is zero, not finite, or within 30°
                of the device's ±z axis (forward would be undefined).
        """
        up = np.asarray(up_sensor, dtype=np.float64).reshape(3)
        norm = float(np.linalg.norm(up))
        if not (math.isfinite(norm) and norm > 1e-9):
            raise CalibrationError(f"upright direction must be a finite non-zero vector, got {up}")
        up = up / norm
        back = np.array([0.0, 0.0, 1.0])
        forward = -back + float(up @ back) * up
        f_norm = float(np.linalg.norm(forward))
        if f_norm < _MIN_FORWARD_NORM:
            raise CalibrationError(
                "device z axis is within 30° of vertical in the upright pose; "
                "is the wearable flat on the upper back?"
            )
        forward /= f_norm
        right = np.cross(forward, up)
        return cls(
            up_sensor=_as_tuple(up),
            forward_sensor=_as_tuple(forward),
            right_sensor=_as_tuple(right),
            t_s=float(t_s),
            requested=requested,
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
        body = up_sensor @ self.matrix.T  # columns: forward, right, up
        # atan2 of the sideways length against the up part is the tilt,
        # accurate near 0° and 180° where acos is not.
        side = np.sqrt(body[:, 0] * body[:, 0] + body[:, 1] * body[:, 1])
        tilt = np.arctan2(side, body[:, 2])
        # Where side is 0, body[:, :2] is 0 too and the angles come out 0.
        scale = tilt * (-180.0 / math.pi) / np.maximum(side, 1e-300)
        # + 0.0 turns -0.0 into 0.0 for display.
        return body[:, 0] * scale + 0.0, body[:, 1] * scale + 0.0, tilt * (180.0 / math.pi)


def _as_tuple(v: FloatArray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def inclination_deg(up_sensor: FloatArray, reference_up: FloatArray) -> FloatArray:
    """Angle (n,) in degrees between up-directions (n, 3) and a unit (3,)."""
    cos = np.clip(up_sensor @ reference_up, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


@dataclass(frozen=True)
class CalibrationSettings:
    """When a still period counts as the upright pose.

    Still: every sample within ``still_acc_g`` of the acceleration's
    ``tau_still_s`` low-pass, with a magnitude within ``gravity_tolerance_g``
    of 1 g and (gyroscope wearables) a rate below ``still_gyr_dps``, for
    ``still_s``. An automatic capture also needs the pose within
    ``max_auto_tilt_deg`` of the nominal up, so that a lying or bent pose is
    never taken as upright; a requested capture trusts the clinician.
    """

    still_s: float = 2.5
    still_acc_g: float = 0.04
    still_gyr_dps: float = 8.0
    gravity_tolerance_g: float = 0.15
    tau_still_s: float = 0.5
    max_auto_tilt_deg: float = 35.0

    def __post_init__(self) -> None:
        check_positive_fields(self)


@dataclass(frozen=True)
class Capture:
    """A calibration captured at sample ``index`` of the segment processed."""

    index: int
    calibration: Calibration
    tilt_from_nominal_deg: float


class CalibrationCapture:
    """Waits for a still upright period and captures a :class:`Calibration`.

    Pending after construction when ``auto`` is true, and after
    :meth:`request`. Costs nothing while nothing is pending.
    """

    def __init__(
        self,
        settings: CalibrationSettings,
        sample_rate_hz: float,
        nominal_up_sensor: tuple[float, float, float],
        *,
        auto: bool,
    ) -> None:
        self.settings = settings
        self._still_samples = max(2, round(settings.still_s * sample_rate_hz))
        # First-order low-pass coefficient per sample for the still test.
        self._alpha = 1.0 - math.exp(-1.0 / (settings.tau_still_s * sample_rate_hz))
        nominal = np.asarray(nominal_up_sensor, dtype=np.float64)
        self._nominal_up = nominal / np.linalg.norm(nominal)
        self._cos_max_tilt = math.cos(math.radians(settings.max_auto_tilt_deg))
        self._auto_pending = auto
        self._requested = False
        self._restart()

    @property
    def pending(self) -> bool:
        return self._auto_pending or self._requested

    def request(self) -> None:
        """Capture at the next still period (whose samples all come later)."""
        self._requested = True
        self._restart()

    def cancel_auto(self) -> None:
        """Stop waiting for an automatic capture (a calibration was restored)."""
        self._auto_pending = False

    def reset(self) -> None:
        """A gap in the stream: the still period must start again."""
        self._restart()

    def _restart(self) -> None:
        self._lp: list[float] | None = None
        self._run = 0
        self._sum = [0.0, 0.0, 0.0]

    def process(
        self, t_s: FloatArray, acc_g: FloatArray, gyr_dps: FloatArray | None
    ) -> Capture | None:
        """Look for the capture in one gap-free segment; at most one per call.

        The first capture ends the pending state; samples after it in the
        segment are not examined.
        """
        if not self.pending:
            return None
        s = self.settings
        norm = np.linalg.norm(acc_g, axis=1)
        ok = np.abs(norm - 1.0) < s.gravity_tolerance_g
        if gyr_dps is not None:
            ok &= np.sum(gyr_dps * gyr_dps, axis=1) < s.still_gyr_dps**2
        unit = acc_g / np.maximum(norm, 1e-9)[:, None]
        # A sequential loop: the still test has state (low-pass, run length)
        # and it only runs for the few seconds until a capture.
        alpha = self._alpha
        th2 = s.still_acc_g**2
        lp = self._lp
        for i, ((ax, ay, az), (ux, uy, uz), good) in enumerate(
            zip(acc_g.tolist(), unit.tolist(), ok.tolist(), strict=True)
        ):
            if lp is None:
                lp = [ax, ay, az]
            else:
                lp = [
                    lp[0] + alpha * (ax - lp[0]),
                    lp[1] + alpha * (ay - lp[1]),
                    lp[2] + alpha * (az - lp[2]),
                ]
            dev2 = (ax - lp[0]) ** 2 + (ay - lp[1]) ** 2 + (az - lp[2]) ** 2
            if not (good and dev2 < th2):
                self._run = 0
                self._sum = [0.0, 0.0, 0.0]
                continue
            self._run += 1
            self._sum = [self._sum[0] + ux, self._sum[1] + uy, self._sum[2] + uz]
            if self._run < self._still_samples:
                continue
            capture = self._try_capture(float(t_s[i]), i)
            self._run = 0
            self._sum = [0.0, 0.0, 0.0]
            if capture is not None:
                self._lp = None
                return capture
        self._lp = lp
        return None

    def _try_capture(self, t_s: float, index: int) -> Capture | None:
        up = normalize(np.array(self._sum))
        tilt_deg = math.degrees(math.acos(max(-1.0, min(1.0, float(up @ self._nominal_up)))))
        requested = self._requested
        if not requested and float(up @ self._nominal_up) < self._cos_max_tilt:
            return None
        try:
            calibration = Calibration.from_up(up, t_s=t_s, requested=requested)
        except CalibrationError:
            return None
        self._requested = False
        self._auto_pending = False
        return Capture(index=index, calibration=calibration, tilt_from_nominal_deg=tilt_deg)
