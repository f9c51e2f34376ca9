"""The IMUs of many wearables, measured together: the simulator's fast path.

:class:`WardSensors` lays out across wearables what each wearable's
:class:`~simulator.sensor.SensorModel` computes on its own (trunk
trajectory, lever arm, mounting, output filter, biases, noise,
quantisation): one call measures a block of samples of every wearable that
needs one, ``(K wearables, n samples)``, in array operations whose count does
not grow with K. ``SensorModel.measure`` stays the readable reference; the
two agree to rounding (tests/test_ward.py), and a sample's counts depend only
on its wearable, time, index and boot, never on what else was measured in
the same call (so a seed gives the same packets however the world batches).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from device_gateway.protocol import ACC_LSB_PER_G, GYR_LSB_PER_DPS
from simulator import quaternion as quat
from simulator.noise import normal_keyed
from simulator.sensor import GYRO_WARMUP_S, SUBSAMPLES, SensorModel, quantise
from simulator.trajectory import DIFF_STEP_S, G_MPS2
from simulator.ward_motion import TrajectoryTable

__all__ = ["WardSensors"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

# Rows per pass: a pass holds ~14 orientations per sample; this many
# wearables' second of 50 Hz samples keeps its arrays within the CPU caches.
_ROWS_PER_PASS = 64
_SUB = np.asarray(SUBSAMPLES)
_FULL_SCALE_GYR_DPS = 2000.0  # the protocol's range; smaller ones clip first


class WardSensors:
    """The IMUs of ``sensors`` (wearable ``i`` is ``sensors[i]``)."""

    def __init__(self, sensors: Sequence[SensorModel]) -> None:
        self.wearables = len(sensors)
        self.motion = TrajectoryTable([s.trajectory for s in sensors])
        self._q_ts = np.asarray([s.r_ts.as_quat() for s in sensors]).reshape(-1, 4)
        self._acc_bias_g = np.asarray([s.acc_bias_g for s in sensors]).reshape(-1, 3)
        self._gyr_bias_dps = np.asarray([s.gyr_bias_dps for s in sensors]).reshape(-1, 3)
        self._gyr_warmup_dps = np.asarray([s.gyr_warmup_dps for s in sensors]).reshape(-1, 3)
        self._gyr_wander_dps = np.asarray([s.gyr_wander_dps for s in sensors]).reshape(-1, 3)
        self._wander_omega = 2 * np.pi / np.asarray([s.wander_period_s for s in sensors])
        self._wander_omega = self._wander_omega.reshape(-1, 3)
        self._wander_phase = np.asarray([s.wander_phase_rad for s in sensors]).reshape(-1, 3)
        self._acc_noise_g_rthz = np.asarray(
            [s.config.errors.acc_noise_ug_rthz * 1e-6 for s in sensors], dtype=np.float64
        )
        self._gyr_noise_dps_rthz = np.asarray(
            [s.config.errors.gyr_noise_dps_rthz for s in sensors], dtype=np.float64
        )
        self._acc_lsb_per_g = np.asarray(
            [ACC_LSB_PER_G[s.config.acc_range] for s in sensors], dtype=np.float64
        )
        self._gyr_limit_dps = np.asarray(
            [float(s.config.gyr_range_dps) for s in sensors], dtype=np.float64
        )

    def measure(
        self,
        wearables: IntArray,
        t_s: FloatArray,
        *,
        window_s: FloatArray,
        since_boot_s: FloatArray,
        sample_index: NDArray[np.int64],
        noise_key: NDArray[np.uint64],
    ) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        """Raw counts ``(acc, gyr)``, each (K, n, 3) int16, of distinct ``wearables`` (K,).

        ``t_s`` (K, n) scenario times; ``window_s`` (K,) each row's averaging
        window (its sample interval); ``since_boot_s`` (K, n) drives the gyro
        warm-up; ``sample_index`` (K, n) and ``noise_key`` (K,) (the key of
        the wearable's boot, ``stream_key(key, "noise", boot)``) select the
        noise. Rows of accelerometer-only wearables get gyro counts too; the
        caller drops them.

        Raises:
            ValueError: a wearable is listed twice.
        """
        if np.unique(wearables).size != len(wearables):
            # Each wearable's parts are summed into its one row.
            raise ValueError("measure: each wearable at most once per call")
        k, n = t_s.shape
        acc = np.empty((k, n, 3), dtype=np.int16)
        gyr = np.empty((k, n, 3), dtype=np.int16)
        for lo in range(0, k, _ROWS_PER_PASS):
            part = slice(lo, lo + _ROWS_PER_PASS)
            acc[part], gyr[part] = self._measure(
                np.asarray(wearables[part], dtype=np.intp),
                t_s[part],
                np.asarray(window_s[part], dtype=np.float64),
                since_boot_s[part],
                sample_index[part],
                noise_key[part],
            )
        return acc, gyr

    def _measure(
        self,
        rows: IntArray,
        t: FloatArray,
        w: FloatArray,
        since: FloatArray,
        index: NDArray[np.int64],
        noise_key: NDArray[np.uint64],
    ) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        k, n = t.shape
        subs = len(SUBSAMPLES)
        # Every time the physics needs, per row: the output filter's
        # sub-samples at -h, 0, +h (the lever arm's central difference), then
        # the window's ends (the gyroscope).
        sub = (t[:, :, None] + w[:, None, None] * _SUB).reshape(k, n * subs)
        h = DIFF_STEP_S
        half = (0.5 * w)[:, None]
        times = np.concatenate([sub - h, sub, sub + h, t - half, t + half], axis=1)
        q = self.motion.orientation(rows, times)
        m = n * subs
        q_minus, q_sub, q_plus = q[:, :m], q[:, m : 2 * m], q[:, 2 * m : 3 * m]
        site = self.motion.site_m[rows][:, None, :]
        lever_g = (
            quat.rotate(q_plus, site) - 2.0 * quat.rotate(q_sub, site) + quat.rotate(q_minus, site)
        ) / (h * h * G_MPS2)
        f_world = self.motion.pelvis_acc_g(rows, sub) + lever_g
        f_world[:, :, 2] += 1.0
        f_trunk = quat.rotate(quat.conjugate(q_sub), f_world).reshape(k, n, subs, 3).mean(axis=2)
        q_st = quat.conjugate(self._q_ts[rows])[:, None, :]
        acc = quat.rotate(q_st, f_trunk)
        # The body rate over the window, sensor frame: the trunk's turn between
        # the window's ends, its axis seen from the sensor.
        q_start, q_end = q[:, 3 * m : 3 * m + n], q[:, 3 * m + n :]
        turn = quat.as_rotvec(quat.multiply(quat.conjugate(q_start), q_end))
        gyr = np.degrees(quat.rotate(q_st, turn) / w[:, None, None])

        bandwidth = np.sqrt(0.5 / w)[:, None, None]
        white = normal_keyed(
            noise_key[:, None, None], index[:, :, None] * 8 + np.arange(6)
        )  # (k, n, 6)
        acc += self._acc_bias_g[rows][:, None, :]
        acc += white[:, :, :3] * (self._acc_noise_g_rthz[rows][:, None, None] * bandwidth)
        acc_counts = quantise(acc, self._acc_lsb_per_g[rows][:, None, None])

        s = since[:, :, None]
        gyr += (
            self._gyr_bias_dps[rows][:, None, :]
            + self._gyr_warmup_dps[rows][:, None, :] * (1.0 - np.exp(-s / GYRO_WARMUP_S))
            + self._gyr_wander_dps[rows][:, None, :]
            * np.sin(
                self._wander_omega[rows][:, None, :] * s + self._wander_phase[rows][:, None, :]
            )
        )
        gyr += white[:, :, 3:] * (self._gyr_noise_dps_rthz[rows][:, None, None] * bandwidth)
        limit = self._gyr_limit_dps[rows][:, None, None]
        gyr = np.where(limit < _FULL_SCALE_GYR_DPS, np.clip(gyr, -limit, limit), gyr)
        return acc_counts, quantise(gyr, GYR_LSB_PER_DPS)
