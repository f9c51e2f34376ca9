"""Streaming gravity ("up") estimate of a wearable, in its own sensor frame.

Two paths, chosen by whether the wearable has a gyroscope:

* Gyroscope + accelerometer (after the inclination part of VQF: D. Laidig and
  T. Seel, "VQF: Highly accurate IMU orientation estimation with bias
  estimation and magnetic disturbance rejection", Information Fusion 91,
  2023). The bias-corrected gyroscope is integrated into a quaternion that
  maps the sensor frame to an almost inertial frame I. The accelerometer,
  rotated into I, is low-pass filtered there by a second-order Butterworth
  filter (time constant ``tau_acc_s``): in I gravity is constant while the
  wearer's accelerations average out. The filtered vector, rotated back into
  the sensor frame, is the up direction. Full correction toward the filtered
  vector every sample is what VQF does; the filter itself sets the bandwidth.
  Gyroscope bias is estimated while the wearable rests.
* Accelerometer only: the accelerometer is low-pass filtered in the sensor
  frame (second-order Butterworth, ``acc_only_cutoff_hz``).

Every LTI part is a ``scipy.signal.sosfilt`` with carried ``zi``, and the
gyroscope integration is a sequential running product, so the output does
not depend on how the stream is cut into blocks. The filter state is a
handful of small arrays (:class:`GravityState`).

"up" is the direction the accelerometer reads at rest (the specific force
opposing gravity), as a unit vector in sensor coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from posture.lti import SosFilter
from posture.rotation import cumulative_product, gyro_increments, normalize, quat_to_matrix

__all__ = [
    "GravityBlock",
    "GravityFilter",
    "GravityFilterParams",
    "GravityState",
    "estimate_up",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class GravityFilterParams:
    """Parameters of :class:`GravityFilter` (units in the names).

    ``tau_acc_s`` is the time constant of the accelerometer low-pass in the
    inertial frame (the Butterworth cutoff is ``sqrt(2) / (2 pi tau)``, so a
    ramp lags by ``tau``). Rest (for the gyroscope bias) needs the rate and
    the acceleration within ``rest_gyr_dps`` and ``rest_acc_g`` of their
    low-passed values for at least ``rest_min_s``, and the low-passed rate
    below ``bias_clip_dps``: a steady rate above that is a slow turn, not a
    bias (consumer MEMS gyroscopes stay within a few °/s after calibration).
    """

    sample_rate_hz: float
    has_gyro: bool
    tau_acc_s: float = 3.0
    acc_only_cutoff_hz: float = 3.0
    tau_rest_s: float = 0.5
    rest_gyr_dps: float = 2.0
    rest_acc_g: float = 0.05
    rest_min_s: float = 1.5
    bias_clip_dps: float = 5.0
    settle_s: float = 0.5
    gyr_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sample_rate_hz) and 5.0 <= self.sample_rate_hz <= 2000.0):
            raise ValueError(f"sample_rate_hz must be in 5..2000, got {self.sample_rate_hz!r}")
        nyquist_hz = 0.5 * self.sample_rate_hz
        for name in ("tau_acc_s", "tau_rest_s", "rest_gyr_dps", "rest_acc_g", "bias_clip_dps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0.0 < self.acc_only_cutoff_hz < 0.8 * nyquist_hz:
            raise ValueError(
                f"acc_only_cutoff_hz must be in (0, {0.8 * nyquist_hz:g}), "
                f"got {self.acc_only_cutoff_hz!r}"
            )
        if not (self.rest_min_s >= 0.0 and self.settle_s >= 0.0 and self.gyr_delay_s >= 0.0):
            raise ValueError("rest_min_s, settle_s and gyr_delay_s must be >= 0")


def _butter_lowpass_tau(tau_s: float, sample_rate_hz: float) -> FloatArray:
    """Second-order Butterworth low-pass whose ramp lag is ``tau_s``."""
    cutoff_hz = math.sqrt(2.0) / (2.0 * math.pi * tau_s)
    cutoff_hz = min(cutoff_hz, 0.45 * sample_rate_hz)
    return np.asarray(signal.butter(2, cutoff_hz, fs=sample_rate_hz, output="sos"))


@dataclass
class GravityState:
    """What :class:`GravityFilter` carries between blocks besides its
    low-pass filters' states (which live in their :class:`SosFilter`)."""

    samples_since_reset: int = 0
    quat_si: FloatArray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    gyr_prev_rps: FloatArray = field(default_factory=lambda: np.zeros(3))
    init_sum: FloatArray = field(default_factory=lambda: np.zeros(3))
    quiet_run: int = 0
    bias_rps: FloatArray = field(default_factory=lambda: np.zeros(3))


@dataclass(frozen=True)
class GravityBlock:
    """The filter's output for one block of ``n`` samples.

    ``up_sensor`` (n, 3) unit vectors; ``settled`` (n,) true once the filter
    has run ``settle_s`` since its last reset; ``rest`` (n,) true where the
    wearable rested long enough to trust a bias estimate (gyroscope path; the
    accelerometer-only path uses the acceleration criterion alone).
    """

    up_sensor: FloatArray
    settled: BoolArray
    rest: BoolArray


class GravityFilter:
    """Streaming up-direction estimate; see the module docstring."""

    def __init__(self, params: GravityFilterParams) -> None:
        self.params = params
        fs = params.sample_rate_hz
        self._lp_inertial = SosFilter(_butter_lowpass_tau(params.tau_acc_s, fs), 3)
        # Rest detection filters acc (and gyro) side by side: 3 or 6 channels.
        self._lp_rest = SosFilter(
            _butter_lowpass_tau(params.tau_rest_s, fs), 6 if params.has_gyro else 3
        )
        self._lp_acc_only = SosFilter(
            np.asarray(signal.butter(2, params.acc_only_cutoff_hz, fs=fs, output="sos")), 3
        )
        # VQF starts its low-pass from the mean of the first tau seconds
        # rather than from one (possibly accelerated) sample.
        self._init_samples = max(1, round(params.tau_acc_s * fs))
        self._rest_samples = max(1, round(params.rest_min_s * fs))
        self._settle_samples = round(params.settle_s * fs)
        self._rest_gyr2 = math.radians(params.rest_gyr_dps) ** 2
        self._bias_clip2 = math.radians(params.bias_clip_dps) ** 2
        self._rest_acc2 = params.rest_acc_g**2
        self.state = GravityState()

    def reset(self) -> None:
        """Forget the orientation (after a gap); the gyroscope bias is kept."""
        self.state = GravityState(bias_rps=self.state.bias_rps)

    def process(
        self, acc_g: FloatArray, gyr_dps: FloatArray | None, dt_s: FloatArray
    ) -> GravityBlock:
        """Filter one contiguous segment (no gaps inside).

        Args:
            acc_g: (n, 3) accelerometer in g.
            gyr_dps: (n, 3) gyroscope in °/s, or None (required iff
                ``params.has_gyro``).
            dt_s: (n,) seconds since the previous sample; ``dt_s[0]`` is
                ignored right after a reset.

        Raises:
            ValueError: gyroscope data presence does not match ``has_gyro``.
        """
        n = acc_g.shape[0]
        st = self.state
        first = st.samples_since_reset
        if first == 0:
            # The interval before a reset means nothing; keep it harmless.
            dt_s = dt_s.copy()
            dt_s[0] = 1.0 / self.params.sample_rate_hz
        if self.params.has_gyro:
            if gyr_dps is None:
                raise ValueError("this filter was configured with a gyroscope; gyr_dps is None")
            gyr = gyr_dps * (math.pi / 180.0)
            rest, gyr_lp = self._rest(acc_g, gyr)
            up = self._gyro_path(acc_g, gyr, dt_s, rest, gyr_lp)
        else:
            rest, _ = self._rest(acc_g, None)
            up = self._acc_only_path(acc_g)
        st.samples_since_reset = first + n
        settled = np.arange(first, first + n) >= self._settle_samples
        return GravityBlock(up_sensor=up, settled=settled, rest=rest)

    # -- internals ---------------------------------------------------------

    def _rest(
        self, acc_g: FloatArray, gyr_rps: FloatArray | None
    ) -> tuple[BoolArray, FloatArray | None]:
        """Rest flags (n,) and, with a gyroscope, its low-passed rate (n, 3)."""
        st = self.state
        x = acc_g if gyr_rps is None else np.concatenate((acc_g, gyr_rps), axis=1)
        if st.samples_since_reset == 0:
            self._lp_rest.reset(x[0])
            st.quiet_run = 0
        lp = self._lp_rest(x)
        dev = x - lp
        dev *= dev
        quiet = dev[:, 0] + dev[:, 1] + dev[:, 2] < self._rest_acc2
        gyr_lp = None
        if gyr_rps is not None:
            gyr_lp = lp[:, 3:]
            quiet &= dev[:, 3] + dev[:, 4] + dev[:, 5] < self._rest_gyr2
            quiet &= np.einsum("ni,ni->n", gyr_lp, gyr_lp) < self._bias_clip2
        # Length of the quiet run ending at each sample, carried across blocks.
        if quiet.all():
            run = np.arange(st.quiet_run + 1, st.quiet_run + quiet.size + 1)
        else:
            idx = np.arange(1, quiet.size + 1)
            last_loud = np.maximum.accumulate(np.where(quiet, 0, idx))
            run = idx - last_loud
            run[last_loud == 0] += st.quiet_run
        st.quiet_run = int(run[-1])
        return run >= self._rest_samples, gyr_lp

    def _gyro_path(
        self,
        acc_g: FloatArray,
        gyr_rps: FloatArray,
        dt_s: FloatArray,
        rest: BoolArray,
        gyr_lp: FloatArray | None,
    ) -> FloatArray:
        st = self.state
        n = acc_g.shape[0]
        # Bias: the low-passed rate at rest, held between rest periods.
        if rest.any() and gyr_lp is not None:
            idx = np.arange(n)
            last = np.maximum.accumulate(np.where(rest, idx, -1))
            bias = np.where((last >= 0)[:, None], gyr_lp[np.maximum(last, 0)], st.bias_rps)
            st.bias_rps = bias[-1].copy()
            rate = gyr_rps - bias
        else:
            rate = gyr_rps - st.bias_rps
        prev = np.concatenate((st.gyr_prev_rps[None, :], rate[:-1]))
        dq = gyro_increments(prev, rate, dt_s, self.params.gyr_delay_s)
        if st.samples_since_reset == 0:
            dq[0] = (1.0, 0.0, 0.0, 0.0)  # nothing to integrate before the first sample
        quat = cumulative_product(st.quat_si, dq)
        st.quat_si = quat[-1].copy()
        st.gyr_prev_rps = rate[-1].copy()
        rot = quat_to_matrix(quat)
        acc_i = (rot @ acc_g[:, :, None])[:, :, 0]
        lp = self._lowpass_inertial(acc_i)
        # Back to sensor axes: R^T lp, then unit length.
        up = (lp[:, None, :] @ rot)[:, 0, :]
        return up / np.sqrt(np.einsum("ni,ni->n", up, up))[:, None]

    def _lowpass_inertial(self, acc_i: FloatArray) -> FloatArray:
        st = self.state
        n = acc_i.shape[0]
        first = st.samples_since_reset
        n_init = min(max(self._init_samples - first, 0), n)
        if n_init == 0:
            return self._lp_inertial(acc_i)
        out = np.empty_like(acc_i)
        csum = np.cumsum(acc_i[:n_init], axis=0) + st.init_sum
        out[:n_init] = csum / np.arange(first + 1, first + n_init + 1)[:, None]
        st.init_sum = csum[-1].copy()
        if first + n_init == self._init_samples:
            self._lp_inertial.reset(out[n_init - 1])
        if n_init < n:
            out[n_init:] = self._lp_inertial(acc_i[n_init:])
        return out

    def _acc_only_path(self, acc_g: FloatArray) -> FloatArray:
        if self.state.samples_since_reset == 0:
            self._lp_acc_only.reset(acc_g[0])
        return normalize(self._lp_acc_only(acc_g))


def estimate_up(
    acc_g: FloatArray,
    gyr_dps: FloatArray | None,
    sample_rate_hz: float,
    *,
    tau_acc_s: float = 3.0,
    acc_only_cutoff_hz: float = 3.0,
    gyr_delay_s: float = 0.0,
) -> FloatArray:
    """Offline helper: the up-direction (n, 3) of a whole gap-free recording.

    Runs the same streaming filter as the engine (gyroscope path if
    ``gyr_dps`` is given) over ``acc_g`` (n, 3) in g and ``gyr_dps`` (n, 3)
    in °/s sampled at ``sample_rate_hz``. For evaluations on datasets.
    """
    params = GravityFilterParams(
        sample_rate_hz=sample_rate_hz,
        has_gyro=gyr_dps is not None,
        tau_acc_s=tau_acc_s,
        acc_only_cutoff_hz=acc_only_cutoff_hz,
        gyr_delay_s=gyr_delay_s,
    )
    acc = np.asarray(acc_g, dtype=np.float64)
    gyr = None if gyr_dps is None else np.asarray(gyr_dps, dtype=np.float64)
    dt = np.full(acc.shape[0], 1.0 / sample_rate_hz)
    return GravityFilter(params).process(acc, gyr, dt).up_sensor
