"""Synthetic trunk motion for the posture engine's tests, and checks of it.

A posture trajectory is given as key frames of flexion and lateral bend
(degrees, the engine's definitions in posture/calibration.py) joined by
smooth (cosine) transitions. From it and a mounting of the wearable (rotation
about the skin normal, tilt of the face) the module computes what an ideal
IMU on the upper back would read: accelerometer in g (gravity plus any
translational acceleration of the trunk), gyroscope in °/s (exact body rate
by central differences of the orientation), with optional noise and bias.

Other test modules import :func:`synthesize` and :func:`keyframes` from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

FloatArray = NDArray[np.float64]
Signal = Callable[[FloatArray], FloatArray]

# Body frame, right-handed: F forward, L left, U up. The wearable's nominal
# axes in it: x = right = -L, y = up = U, z = backward = -F.
NOMINAL_SENSOR_IN_BODY = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class Motion:
    t_s: FloatArray
    acc_g: FloatArray
    gyr_dps: FloatArray
    flexion_deg: FloatArray
    lateral_deg: FloatArray


def keyframes(points: Sequence[tuple[float, float]]) -> Signal:
    """Value held at each ``(t_s, value)`` and eased (cosine) between them."""
    ts = np.array([p[0] for p in points], dtype=float)
    vs = np.array([p[1] for p in points], dtype=float)

    def f(t: FloatArray) -> FloatArray:
        t = np.asarray(t, dtype=float)
        i = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 1)
        j = np.minimum(i + 1, len(ts) - 1)
        span = np.where(j > i, ts[j] - ts[i], 1.0)
        u = np.clip((t - ts[i]) / span, 0.0, 1.0)
        ease = 0.5 - 0.5 * np.cos(np.pi * u)
        return np.asarray(vs[i] + (vs[j] - vs[i]) * np.where(j > i, ease, 0.0))

    return f


def constant(value: float) -> Signal:
    return lambda t: np.full(np.shape(t), float(value))


def mounting(rot_deg: float, face_tilt_deg: float) -> FloatArray:
    """Sensor -> body rotation: nominal, turned about the skin normal, face tilted.

    The face tilts about the wearer's left-right axis (the curve of the
    upper back makes the puck face up and back), so the skin normal stays
    in the sagittal plane; that is what lets "forward = -z levelled" hold.
    """
    turn = Rotation.from_euler("z", rot_deg, degrees=True).as_matrix()
    tilt = Rotation.from_euler("y", face_tilt_deg, degrees=True).as_matrix()
    return tilt @ NOMINAL_SENSOR_IN_BODY @ turn


def body_to_world(flexion_deg: FloatArray, lateral_deg: FloatArray) -> FloatArray:
    """(n, 3, 3) body -> world rotations for the engine's flexion and lateral.

    The engine's angles are the components of the trunk's swing from
    upright (a rotation vector): flexion about the left axis, lateral about
    the forward axis. This is that rotation, built independently here.
    """
    # Body axes (F, L, U). A forward bend turns the top of the trunk toward
    # +F: a rotation about +L; a bend to the right turns it toward -L: about +F.
    rotvec = np.stack(
        [np.radians(lateral_deg), np.radians(flexion_deg), np.zeros_like(flexion_deg)], axis=1
    )
    return Rotation.from_rotvec(rotvec).as_matrix()


def synthesize(
    duration_s: float,
    sample_rate_hz: float,
    flexion_deg: Signal,
    lateral_deg: Signal | None = None,
    *,
    mount: FloatArray | None = None,
    linear_acc_g: Callable[[FloatArray], FloatArray] | None = None,
    acc_noise_g: float = 0.003,
    gyr_noise_dps: float = 0.05,
    gyr_bias_dps: Sequence[float] = (0.0, 0.0, 0.0),
    seed: int = 0,
    t0_s: float = 0.0,
) -> Motion:
    """IMU readings on the upper back for a posture trajectory.

    ``linear_acc_g(t)`` (n, 3) is the trunk's translational acceleration in
    world axes (F, L, U), in g.
    """
    lateral_deg = lateral_deg or constant(0.0)
    mount = NOMINAL_SENSOR_IN_BODY if mount is None else mount
    n = round(duration_s * sample_rate_hz)
    t = t0_s + np.arange(n) / sample_rate_hz

    def sensor_to_world(times: FloatArray) -> FloatArray:
        return body_to_world(flexion_deg(times), lateral_deg(times)) @ mount

    s = sensor_to_world(t)
    world = np.tile([0.0, 0.0, 1.0], (n, 1))
    if linear_acc_g is not None:
        world = world + linear_acc_g(t)
    acc = np.einsum("nji,nj->ni", s, world)
    h = 1e-4
    rel = np.einsum("nji,njk->nik", sensor_to_world(t - h), sensor_to_world(t + h))
    gyr = np.degrees(Rotation.from_matrix(rel).as_rotvec()) / (2 * h)
    rng = np.random.default_rng(seed)
    acc = acc + rng.normal(0.0, acc_noise_g, acc.shape)
    gyr = gyr + rng.normal(0.0, gyr_noise_dps, gyr.shape) + np.asarray(gyr_bias_dps)
    return Motion(t, acc, gyr, flexion_deg(t), lateral_deg(t))


def _envelope(t: FloatArray, start_s: float, stop_s: float, ramp_s: float = 1.0) -> FloatArray:
    """0 outside [start, stop], 1 inside, with smooth ramps so rates stay finite."""
    up = np.clip((t - start_s) / ramp_s, 0.0, 1.0)
    down = np.clip((stop_s - t) / ramp_s, 0.0, 1.0)
    return np.asarray((0.5 - 0.5 * np.cos(np.pi * up)) * (0.5 - 0.5 * np.cos(np.pi * down)))


def gait_acc(
    step_hz: float = 1.8,
    vertical_g: float = 0.3,
    forward_g: float = 0.15,
    lateral_g: float = 0.1,
    start_s: float = 0.0,
    stop_s: float = 1e9,
) -> Signal:
    """Translational trunk acceleration of walking, world (F, L, U) axes, in g."""

    def f(t: FloatArray) -> FloatArray:
        w = 2 * np.pi * step_hz
        a = np.stack(
            [
                forward_g * np.sin(w * t + 1.0),
                lateral_g * np.sin(0.5 * w * t),
                vertical_g * np.sin(w * t),
            ],
            axis=1,
        )
        return np.asarray(a * _envelope(t, start_s, stop_s)[:, None])

    return f


def gait_sway(
    step_hz: float = 1.8, amp_deg: float = 2.0, start_s: float = 0.0, stop_s: float = 1e9
) -> Signal:
    """Small trunk oscillation of walking, added to a posture angle."""
    return lambda t: amp_deg * np.sin(2 * np.pi * step_hz * t) * _envelope(t, start_s, stop_s)


# -- checks of the synthesiser itself ---------------------------------------


def test_nominal_upright_reads_plus_y() -> None:
    m = synthesize(1.0, 50.0, constant(0.0), acc_noise_g=0.0, gyr_noise_dps=0.0)
    np.testing.assert_allclose(m.acc_g, np.tile([0.0, 1.0, 0.0], (50, 1)), atol=1e-12)
    np.testing.assert_allclose(m.gyr_dps, 0.0, atol=1e-9)


def test_forward_bend_tilts_gravity_toward_minus_z_and_rate_matches() -> None:
    # Bending forward makes the back face up: the accelerometer's +z (out of
    # the back) sees more and more of the 1 g.
    m = synthesize(
        2.0, 100.0, keyframes([(0.0, 0.0), (1.0, 90.0)]), acc_noise_g=0.0, gyr_noise_dps=0.0
    )
    np.testing.assert_allclose(m.acc_g[-1], [0.0, 0.0, 1.0], atol=1e-9)
    # The rate integrates to the 90° turned, about the sensor's x axis (right).
    turned = np.trapezoid(m.gyr_dps, m.t_s, axis=0)
    np.testing.assert_allclose(np.abs(turned), [90.0, 0.0, 0.0], atol=0.5)


def test_bend_to_the_right_tilts_gravity_toward_minus_x() -> None:
    m = synthesize(
        1.0, 50.0, constant(0.0), constant(90.0 - 1e-9), acc_noise_g=0.0, gyr_noise_dps=0.0
    )
    # The wearer's right side goes down: sensor +x (to the right) points down.
    np.testing.assert_allclose(m.acc_g[0], [-1.0, 0.0, 0.0], atol=1e-6)
