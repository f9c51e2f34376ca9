"""What the wearable's IMU reports, given the trunk's motion.

The sensor frame follows docs/protocol.md: on the nominal mounting device
+x points to the patient's right, +y toward the head, +z out of the skin
(backwards). ``mounting_rotation`` adds the puck's spin about its z axis and
the tilt of its face.

Per sample the model reports, like a MEMS IMU whose output filter averages
over one sample interval ``w`` centred on the sample time:

* accelerometer: the specific force at the sensor site (acceleration minus
  gravity), averaged over ``w`` (4 sub-samples), rotated into the sensor
  frame;
* gyroscope: the mean body rate over ``w``, ``log(q(t - w/2)^-1 q(t + w/2)) / w``
  of the sensor orientation ``q``; this is the quaternion derivative
  ``2 q^-1 dq/dt`` averaged, so integrating the samples reproduces the
  orientation;

then adds biases (constant per wearable; the gyroscope's warms up after
power-on and wanders slowly), white noise, and quantises to int16 counts at
the protocol's scales, clipping at full range.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from device_gateway.protocol import ACC_LSB_PER_G, GYR_LSB_PER_DPS
from simulator.config import Mounting, WearableConfig
from simulator.noise import normal, stream_key, uniform
from simulator.trajectory import TrunkTrajectory

__all__ = [
    "GYRO_WARMUP_S",
    "NOMINAL_MOUNTING",
    "SUBSAMPLES",
    "SensorModel",
    "mounting_rotation",
    "quantise",
]

FloatArray = NDArray[np.float64]

NOMINAL_MOUNTING = Rotation.from_matrix(
    # Columns: device x, y, z in trunk coordinates (x anterior, y left, z up):
    # x = right (0,-1,0), y = up (0,0,1), z = backward (-1,0,0); det = +1.
    np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
)
"""Sensor -> trunk rotation of the nominal mounting."""

SUBSAMPLES = (-0.375, -0.125, 0.125, 0.375)  # fractions of the window
GYRO_WARMUP_S = 300.0  # gyro bias settles with the die temperature after power-on


def mounting_rotation(mounting: Mounting) -> Rotation:
    """Sensor -> trunk rotation ``R_ts`` of a mounting (see :class:`Mounting`)."""
    # Trunk-frame turns (yaw about the long axis, then tilt about the
    # left-right axis) act on the nominal puck, which is first spun about
    # its own z axis. Yaw + turns the outward normal (-x_t) toward the left.
    return (
        Rotation.from_euler("z", -mounting.yaw_deg, degrees=True)
        * Rotation.from_euler("y", mounting.tilt_deg, degrees=True)
        * NOMINAL_MOUNTING
        * Rotation.from_euler("z", mounting.spin_deg, degrees=True)
    )


def quantise(values: FloatArray, lsb_per_unit: float | FloatArray) -> NDArray[np.int16]:
    """Round to int16 counts at ``lsb_per_unit`` (broadcasting), clipping at full range."""
    counts = np.rint(values * lsb_per_unit)
    return np.clip(counts, -32768, 32767).astype(np.int16)


class SensorModel:
    """The IMU of one wearable, reading one patient's trunk trajectory.

    ``key`` seeds the wearable's biases and noise (see simulator/noise.py).
    """

    def __init__(self, trajectory: TrunkTrajectory, config: WearableConfig, key: int) -> None:
        self.trajectory = trajectory
        self.config = config
        self.r_ts = mounting_rotation(config.mounting)
        self.key = key
        err = config.errors
        axes = np.arange(3)
        self.acc_bias_g = err.acc_bias_g * normal(stream_key(key, "acc_bias"), axes)
        self.gyr_bias_dps = err.gyr_bias_dps * normal(stream_key(key, "gyr_bias"), axes)
        self.gyr_warmup_dps = err.gyr_drift_dps * normal(stream_key(key, "gyr_warmup"), axes)
        self.gyr_wander_dps = 0.5 * err.gyr_drift_dps * normal(stream_key(key, "wander"), axes)
        self.wander_period_s = 300.0 + 600.0 * uniform(stream_key(key, "wander_period"), axes)
        self.wander_phase_rad = 2 * math.pi * uniform(stream_key(key, "wander_phase"), axes)

    def orientation(self, t_s: FloatArray) -> Rotation:
        """Sensor orientation ``R_ws`` (sensor -> world) at times (n,)."""
        return self.trajectory.orientation(t_s) * self.r_ts

    def ideal(self, t_s: FloatArray, window_s: float | FloatArray) -> tuple[FloatArray, FloatArray]:
        """Error-free readings ``(acc_g, gyr_dps)``, each (n, 3), at times (n,).

        ``window_s`` (scalar or (n,)) is the averaging window, normally the
        sample interval.
        """
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        w = np.broadcast_to(np.asarray(window_s, dtype=np.float64), t.shape)
        n = t.shape[0]
        sub = (t[:, None] + w[:, None] * np.asarray(SUBSAMPLES)).reshape(-1)
        _, f_trunk = self.trajectory.kinematics(sub)
        acc = self.r_ts.inv().apply(f_trunk).reshape(n, len(SUBSAMPLES), 3).mean(axis=1)
        ends = self.orientation(np.concatenate([t - w / 2.0, t + w / 2.0]))
        delta = (ends[:n].inv() * ends[n:]).as_rotvec().reshape(n, 3)
        gyr = np.degrees(delta / w[:, None])
        return acc, gyr

    def measure(
        self,
        t_s: FloatArray,
        *,
        window_s: float | FloatArray,
        since_boot_s: FloatArray,
        sample_index: NDArray[np.int64],
        boot: int,
    ) -> tuple[NDArray[np.int16], NDArray[np.int16] | None]:
        """Raw counts ``(acc, gyr)``, each (n, 3) int16; gyr None without a gyro.

        ``since_boot_s`` (n,) drives the gyro warm-up; ``sample_index`` (n,)
        and ``boot`` select the noise, so a sample is the same whenever it is
        computed.
        """
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        acc, gyr = self.ideal(t, window_s)
        rate_hz = 1.0 / np.broadcast_to(np.asarray(window_s, dtype=np.float64), t.shape)
        bandwidth = np.sqrt(rate_hz / 2.0)[:, None]
        err = self.config.errors
        noise_key = stream_key(self.key, "noise", boot)
        idx = np.asarray(sample_index, dtype=np.int64)[:, None] * 8 + np.arange(6)
        white = normal(noise_key, idx.reshape(-1)).reshape(-1, 6)
        acc = acc + self.acc_bias_g + white[:, :3] * (err.acc_noise_ug_rthz * 1e-6) * bandwidth
        acc_counts = quantise(acc, ACC_LSB_PER_G[self.config.acc_range])
        if not self.config.has_gyro:
            return acc_counts, None
        since = np.asarray(since_boot_s, dtype=np.float64).reshape(-1, 1)
        bias = (
            self.gyr_bias_dps
            + self.gyr_warmup_dps * (1.0 - np.exp(-since / GYRO_WARMUP_S))
            + self.gyr_wander_dps
            * np.sin(2 * np.pi * since / self.wander_period_s + self.wander_phase_rad)
        )
        gyr = gyr + bias + white[:, 3:] * err.gyr_noise_dps_rthz * bandwidth
        limit = float(self.config.gyr_range_dps)
        if limit < 2000.0:  # a smaller full scale saturates before the protocol's
            gyr = np.clip(gyr, -limit, limit)
        return acc_counts, quantise(gyr, GYR_LSB_PER_DPS)
