"""Streaming gravity ("up") estimate of wearables, each in its own sensor frame.

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

Every LTI part is a :class:`~posture.lti.SosFilter` whose state is carried
in :class:`GravityState` and the gyroscope integration is a sequential
running product, so the output does not depend on how the stream is cut
into blocks. Only the integration is
sequential; in the inertial frame the correction is an LTI filter run over
the whole block. One :class:`GravityFilter` serves ``devices`` wearables of
the same rate side by side (arrays in the *time, component, device* layout of
:mod:`posture.rotation`); every device's numbers are the same as if it were
filtered alone.

"up" is the direction the accelerometer reads at rest (the specific force
opposing gravity), as a unit vector in sensor coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from posture.kernels import Kernel, contiguous_fields, selected_kernel
from posture.lti import SosFilter
from posture.rotation import (
    cumulative_product,
    cumulative_products,
    gyro_increments,
    increments_tcd,
    matrix_tcd,
    normalize_rows,
    quat_to_matrix,
    rotate_back_tcd,
    rotate_tcd,
)
from posture.runs import run_length, running_max

__all__ = [
    "GravityBlock",
    "GravityFilter",
    "GravityFilterParams",
    "GravityState",
    "estimate_up",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

# (6, 2): sums the squares of the acc (first 3) and gyro (last 3) columns.
_PAIR_SUMS = np.repeat(np.eye(2), 3, axis=0)


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


@dataclass(slots=True)
class GravityState:
    """What :class:`GravityFilter` carries between blocks, one column per device
    (:mod:`posture.state`).

    ``count`` (D,) samples since the last reset; ``quat_si`` (4, D) sensor to
    inertial frame; ``gyr_prev_rps`` (3, D) last bias-corrected rate;
    ``init_sum`` (3, D) sum of the inertial accelerations while the low-pass
    starts up; ``quiet_run`` (D,) samples of the current quiet run;
    ``bias_rps`` (3, D) gyroscope bias; ``lp_inertial`` (order, 3, D),
    ``lp_rest`` (order, 3 or 6, D) and ``lp_acc_only`` (order, 3, D) the
    low-pass filters' states (:class:`~posture.lti.SosFilter` layout,
    signal-major).
    """

    count: IntArray
    quat_si: FloatArray
    gyr_prev_rps: FloatArray
    init_sum: FloatArray
    quiet_run: IntArray
    bias_rps: FloatArray
    lp_inertial: FloatArray
    lp_rest: FloatArray
    lp_acc_only: FloatArray

    @classmethod
    def fresh(cls, devices: int, rest_signals: int = 6, order: int = 4) -> GravityState:
        """The state of ``devices`` wearables never seen (``rest_signals``: 6 with
        a gyroscope, 3 without; ``order``: the filters' state length)."""
        quat = np.zeros((4, devices))
        quat[0] = 1.0
        return cls(
            count=np.zeros(devices, dtype=np.int64),
            quat_si=quat,
            gyr_prev_rps=np.zeros((3, devices)),
            init_sum=np.zeros((3, devices)),
            quiet_run=np.zeros(devices, dtype=np.int64),
            bias_rps=np.zeros((3, devices)),
            lp_inertial=np.zeros((order, 3, devices)),
            lp_rest=np.zeros((order, rest_signals, devices)),
            lp_acc_only=np.zeros((order, 3, devices)),
        )

    def reset(self, devices: IntArray) -> None:
        """Forget the orientation of ``devices`` (indices); keep their bias.

        The low-pass filters restart at their first sample (``count`` 0), so
        their states need no reset here.
        """
        self.count[devices] = 0
        self.quat_si[:, devices] = ((1.0,), (0.0,), (0.0,), (0.0,))
        self.gyr_prev_rps[:, devices] = 0.0
        self.init_sum[:, devices] = 0.0
        self.quiet_run[devices] = 0


@dataclass(slots=True)
class GravityBlock:
    """The filter's output for one block of ``n`` samples of ``D`` devices.

    ``up_sensor`` (n, 3, D) unit vectors; ``settled`` (n, D) true once the
    filter has run ``settle_s`` since its last reset; ``rest`` (n, D) true
    where the wearable rested long enough to trust a bias estimate
    (gyroscope path; the accelerometer-only path uses the acceleration
    criterion alone). ``acc_lp_g`` (n, 3, D) is the accelerometer after the
    rest detector's low-pass (``tau_rest_s``) and ``acc_dev2_g2`` (n, D) the
    squared distance of the raw accelerometer from it: the calibration's
    stillness test reuses both.
    """

    up_sensor: FloatArray
    settled: BoolArray
    rest: BoolArray
    acc_lp_g: FloatArray
    acc_dev2_g2: FloatArray


class GravityFilter:
    """Streaming up-direction estimate of ``devices`` wearables (module docstring).

    The filter holds its parameters and coefficients; what it remembers per
    device is :attr:`state` (a :class:`GravityState`), which the engine may
    swap for another state of any number of devices between blocks.

    ``kernel`` picks the implementation (:func:`posture.kernels.selected_kernel`:
    ``$POSTURE_KERNEL``, else the compiled kernel where numba imports); the
    NumPy code below is the reference the compiled one is tested against.
    """

    def __init__(
        self, params: GravityFilterParams, devices: int = 1, kernel: Kernel | str | None = None
    ) -> None:
        self.params = params
        self.kernel = selected_kernel(kernel)
        fs = params.sample_rate_hz
        # The filters' own states are unused: each block runs from the
        # columns in self.state (SosFilter.run is pure).
        self._lp_inertial = SosFilter(_butter_lowpass_tau(params.tau_acc_s, fs), 0)
        # Rest detection filters acc (and gyro) side by side: 3 or 6 signals.
        self._rest_signals = 6 if params.has_gyro else 3
        self._lp_rest = SosFilter(_butter_lowpass_tau(params.tau_rest_s, fs), 0)
        self._lp_acc_only = SosFilter(
            np.asarray(signal.butter(2, params.acc_only_cutoff_hz, fs=fs, output="sos")), 0
        )
        # VQF starts its low-pass from the mean of the first tau seconds
        # rather than from one (possibly accelerated) sample.
        self._init_samples = max(1, round(params.tau_acc_s * fs))
        self._rest_samples = max(1, round(params.rest_min_s * fs))
        self._settle_samples = round(params.settle_s * fs)
        self._rest_gyr2 = math.radians(params.rest_gyr_dps) ** 2
        self._bias_clip2 = math.radians(params.bias_clip_dps) ** 2
        self._rest_acc2 = params.rest_acc_g**2
        self._rest_thresholds = np.array([self._rest_acc2, self._rest_gyr2])
        if self.kernel is Kernel.COMPILED:
            self._coefficients = _KernelCoefficients.of(self)
            from posture.kernels import gravity

            self._kernels = gravity
        self.state = self.fresh_state(devices)

    @property
    def state(self) -> GravityState:
        """What the filter remembers per device; the engine may swap it between
        blocks. Its arrays are updated in place: a field replaced by another
        array takes effect once the state is assigned here again (the compiled
        kernel's arguments are made from the state bound, see :meth:`_bound_args`)."""
        return self._state

    @state.setter
    def state(self, state: GravityState) -> None:
        self._state = state
        self._args: tuple[object, ...] = ()
        self._args_devices = -1

    def fresh_state(self, devices: int) -> GravityState:
        """The state of ``devices`` wearables never seen."""
        return GravityState.fresh(devices, self._rest_signals, self._lp_rest.order)

    def reset(self, devices: IntArray | None = None) -> None:
        """Forget the orientation (after a gap) of ``devices`` (all if None); keep the bias."""
        st = self.state
        st.reset(np.arange(st.count.shape[0]) if devices is None else devices)

    def process(
        self, acc_g: FloatArray, gyr_dps: FloatArray | None, dt_s: FloatArray
    ) -> GravityBlock:
        """Filter one contiguous block (no gaps inside) of every device.

        Args:
            acc_g: (n, 3, D) accelerometer in g.
            gyr_dps: (n, 3, D) gyroscope in °/s, or None (required iff
                ``params.has_gyro``).
            dt_s: (n, D) seconds since the previous sample; ignored for the
                first sample after a reset.

        Raises:
            ValueError: gyroscope data presence does not match ``has_gyro``.
        """
        if self.kernel is Kernel.COMPILED:
            return self._process_compiled(acc_g, gyr_dps, dt_s)
        n = acc_g.shape[0]
        st = self.state
        if st.count.shape[0] == 1 and st.count[0] > 0:
            return self._process_one(
                acc_g[:, :, 0], None if gyr_dps is None else gyr_dps[:, :, 0], dt_s[:, 0]
            )
        fresh = np.flatnonzero(st.count == 0)
        if self.params.has_gyro:
            if gyr_dps is None:
                raise ValueError("this filter was configured with a gyroscope; gyr_dps is None")
            x = np.empty((n, 6, acc_g.shape[2]))
            x[:, :3] = acc_g
            gyr = x[:, 3:]
            np.multiply(gyr_dps, math.pi / 180.0, out=gyr)
        else:
            gyr = None
            x = acc_g
        rest, lp, dev2 = self._rest(x, fresh)
        if gyr is not None:
            up = self._gyro_path(acc_g, gyr, dt_s, rest, lp[:, 3:], fresh)
        else:
            up = self._acc_only_path(acc_g, fresh)
        settled = (st.count + np.arange(n)[:, None]) >= self._settle_samples
        st.count += n
        return GravityBlock(
            up_sensor=up, settled=settled, rest=rest, acc_lp_g=lp[:, :3], acc_dev2_g2=dev2
        )

    # -- the compiled kernel (posture.kernels.gravity) --------------------------

    def _process_compiled(
        self, acc_g: FloatArray, gyr_dps: FloatArray | None, dt_s: FloatArray
    ) -> GravityBlock:
        """:meth:`process` by the compiled kernel: the same filter, one pass per sample."""
        has_gyro = self.params.has_gyro
        if has_gyro and gyr_dps is None:
            raise ValueError("this filter was configured with a gyroscope; gyr_dps is None")
        n, _, d = acc_g.shape
        args = self._args if self._args_devices == d else self._bound_args(d)
        if (
            has_gyro
            and gyr_dps is not None
            and not (gyr_dps.shape == acc_g.shape and dt_s.shape == (n, d))
        ):
            # The kernel indexes without bounds checks: never run it on a mismatch.
            raise ValueError(
                f"gravity filter block of shape {acc_g.shape} with gyroscope "
                f"{gyr_dps.shape} and intervals {dt_s.shape}"
            )
        out = GravityBlock(
            up_sensor=np.empty((n, 3, d)),
            settled=np.empty((n, d), dtype=bool),
            rest=np.empty((n, d), dtype=bool),
            acc_lp_g=np.empty((n, 3, d)),
            acc_dev2_g2=np.empty((n, d)),
        )
        outs = (out.up_sensor, out.settled, out.rest, out.acc_lp_g, out.acc_dev2_g2)
        if has_gyro and gyr_dps is not None:
            self._kernels.gravity_gyro(
                np.ascontiguousarray(acc_g),
                np.ascontiguousarray(gyr_dps),
                np.ascontiguousarray(dt_s),
                *outs,
                *args,
            )
        else:
            self._kernels.gravity_acc_only(np.ascontiguousarray(acc_g), *outs, *args)
        return out

    def _bound_args(self, devices: int) -> tuple[object, ...]:
        """The kernel's arguments after the block's and its outputs: the bound
        state (its arrays made C-contiguous once, as the kernel updates them in
        place) and the coefficients; checked against a block of ``devices``.

        Made when a state is bound and kept while blocks of as many devices
        come (the state's arrays are the same objects from block to block).

        Raises:
            ValueError: the state is not of ``devices`` devices.
        """
        st, co, d = self._state, self._coefficients, devices
        contiguous_fields(st, _STATE_FIELDS)
        order = st.lp_rest.shape[0]
        expected = {
            "count": (d,),
            "quiet_run": (d,),
            "quat_si": (4, d),
            "gyr_prev_rps": (3, d),
            "init_sum": (3, d),
            "bias_rps": (3, d),
            "lp_rest": (2, self._rest_signals, d),
            "lp_inertial": (order, 3, d),
            "lp_acc_only": (order, 3, d),
        }
        if order != 2 or any(getattr(st, k).shape != v for k, v in expected.items()):
            # The kernel indexes without bounds checks: never run it on a mismatch.
            raise ValueError(
                f"gravity state of {st.count.shape[0]} devices (filters {st.lp_rest.shape}) "
                f"for a block of {d} devices"
            )
        rest_lp = _rows(st.lp_rest, d)
        if self.params.has_gyro:
            args: tuple[object, ...] = (
                st.count,
                st.quiet_run,
                _rows(st.quat_si, d),
                _rows(st.gyr_prev_rps, d),
                _rows(st.init_sum, d),
                _rows(st.bias_rps, d),
                rest_lp,
                _rows(st.lp_inertial, d),
                co.rest_sos,
                co.main_sos,
                co.thresholds,
                co.samples,
                self.params.gyr_delay_s,
                1.0 / self.params.sample_rate_hz,
            )
        else:
            args = (
                st.count,
                st.quiet_run,
                rest_lp,
                _rows(st.lp_acc_only, d),
                co.rest_sos,
                co.main_sos,
                co.thresholds,
                co.samples,
            )
        self._args, self._args_devices = args, d
        return args

    # -- one device: row layout, few array operations --------------------------

    def _process_one(
        self, acc_g: FloatArray, gyr_dps: FloatArray | None, dt_s: FloatArray
    ) -> GravityBlock:
        """:meth:`process` for a single device already running (not fresh):
        the same filter written for ``(n, 3)`` rows, where a handful of stacked
        operations beat many small per-component ones. It agrees with the
        many-device path to rounding (the batch tests compare them)."""
        st = self.state
        n = acc_g.shape[0]
        has_gyro = gyr_dps is not None
        if gyr_dps is not None:
            x = np.empty((n, 6))
            x[:, :3] = acc_g
            np.multiply(gyr_dps, math.pi / 180.0, out=x[:, 3:])
        else:
            if self.params.has_gyro:
                raise ValueError("this filter was configured with a gyroscope; gyr_dps is None")
            x = acc_g
        lp, zf = self._lp_rest.run(x, st.lp_rest[:, :, 0])
        st.lp_rest = zf[:, :, None]
        dev = x - lp
        dev *= dev
        if has_gyro:
            sums = dev @ _PAIR_SUMS  # (n, 2): acc and gyro deviation²
            acc_dev2 = sums[:, 0]
            gyr_lp = lp[:, 3:]
            quiet = np.all(sums < self._rest_thresholds, axis=1)
            quiet &= np.einsum("ni,ni->n", gyr_lp, gyr_lp) < self._bias_clip2
        else:
            acc_dev2 = np.einsum("ni->n", dev)
            quiet = acc_dev2 < self._rest_acc2
        run = run_length(quiet[:, None], st.quiet_run)
        st.quiet_run = run[-1].copy()
        rest = run >= self._rest_samples
        if has_gyro:
            up = self._gyro_one(acc_g, x[:, 3:], dt_s, rest[:, 0], lp[:, 3:])
        else:
            lp_acc, zf = self._lp_acc_only.run(acc_g, st.lp_acc_only[:, :, 0])
            st.lp_acc_only = zf[:, :, None]
            up = normalize_rows(lp_acc)
        if st.count[0] >= self._settle_samples:
            settled = np.ones((n, 1), dtype=bool)
        else:
            settled = (st.count + np.arange(n)[:, None]) >= self._settle_samples
        st.count += n
        return GravityBlock(
            up_sensor=up[:, :, None],
            settled=settled,
            rest=rest,
            acc_lp_g=lp[:, :3, None],
            acc_dev2_g2=acc_dev2[:, None],
        )

    def _gyro_one(
        self,
        acc_g: FloatArray,
        gyr_rps: FloatArray,
        dt_s: FloatArray,
        rest: BoolArray,
        gyr_lp: FloatArray,
    ) -> FloatArray:
        st = self.state
        n = acc_g.shape[0]
        resting = np.count_nonzero(rest)
        if resting == n:
            bias = gyr_lp
        elif resting:
            last = np.maximum.accumulate(np.where(rest, np.arange(n), -1))
            bias = np.where((last >= 0)[:, None], gyr_lp[np.maximum(last, 0)], st.bias_rps[:, 0])
        else:
            bias = st.bias_rps[:, 0]
        rate = gyr_rps - bias
        if resting:
            st.bias_rps = bias[-1][:, None].copy()
        prev = np.empty((n, 3))
        prev[0] = st.gyr_prev_rps[:, 0]
        prev[1:] = rate[:-1]
        dq = gyro_increments(prev, rate, dt_s, self.params.gyr_delay_s)
        quat = cumulative_product(st.quat_si[:, 0], dq)
        st.quat_si = quat[-1][:, None].copy()
        st.gyr_prev_rps = rate[-1][:, None].copy()
        r = quat_to_matrix(quat)  # (n, 3, 3)
        acc_i = (r @ acc_g[:, :, None])[:, :, 0]
        lp = self._lowpass_inertial(acc_i[:, :, None])[:, :, 0]
        up = (lp[:, None, :] @ r)[:, 0, :]  # R^T lp
        up /= np.sqrt(np.einsum("ni,ni->n", up, up))[:, None]
        return up

    # -- internals ---------------------------------------------------------

    def _rest(self, x: FloatArray, fresh: IntArray) -> tuple[BoolArray, FloatArray, FloatArray]:
        """Rest flags (n, D), the low-passed signals (n, k, D) and the acc deviation² (n, D)."""
        st = self.state
        n, k, d = x.shape
        order = st.lp_rest.shape[0]
        if fresh.size:
            zi = self._lp_rest.steady_state(x[0][:, fresh].reshape(-1))
            st.lp_rest[:, :, fresh] = zi.reshape(order, k, fresh.size)
            st.quiet_run[fresh] = 0
        lp, zf = self._lp_rest.run(x.reshape(n, k * d), st.lp_rest.reshape(order, k * d))
        st.lp_rest = zf.reshape(order, k, d)
        lp = lp.reshape(n, k, d)
        dev = x - lp
        dev *= dev
        if k == 6:
            # Squared deviations of acc and gyro, and the squared low-passed rate.
            sums = np.add.reduce(dev.reshape(n, 2, 3, d), axis=2)
            acc_dev2 = sums[:, 0]
            quiet = acc_dev2 < self._rest_acc2
            quiet &= sums[:, 1] < self._rest_gyr2
            gyr_lp = lp[:, 3:]
            quiet &= np.add.reduce(gyr_lp * gyr_lp, axis=1) < self._bias_clip2
        else:
            acc_dev2 = np.add.reduce(dev, axis=1)
            quiet = acc_dev2 < self._rest_acc2
        run = run_length(quiet, st.quiet_run)
        st.quiet_run = run[-1].copy()
        return run >= self._rest_samples, lp, acc_dev2

    def _gyro_path(
        self,
        acc_g: FloatArray,
        gyr_rps: FloatArray,
        dt_s: FloatArray,
        rest: BoolArray,
        gyr_lp: FloatArray,
        fresh: IntArray,
    ) -> FloatArray:
        st = self.state
        n = acc_g.shape[0]
        # Bias: the low-passed rate at rest, held between rest periods.
        if rest.all():
            bias = gyr_lp
        elif rest.any():
            idx = np.arange(n)[:, None]
            last = running_max(np.where(rest, idx, -1))
            held = np.take_along_axis(gyr_lp, np.maximum(last, 0)[:, None, :], axis=0)
            bias = np.where((last >= 0)[:, None, :], held, st.bias_rps)
        else:
            bias = st.bias_rps
        rate = gyr_rps - bias
        if bias is not st.bias_rps:
            st.bias_rps = np.array(bias[-1])
        prev = np.concatenate((st.gyr_prev_rps[None], rate[:-1]))
        if fresh.size:
            # The interval before a reset means nothing; keep it harmless.
            dt_s = dt_s.copy()
            dt_s[0, fresh] = 1.0 / self.params.sample_rate_hz
        dq = increments_tcd(prev, rate, dt_s, self.params.gyr_delay_s)
        if fresh.size:
            dq[0][:, fresh] = ((1.0,), (0.0,), (0.0,), (0.0,))  # nothing to integrate yet
        quat = cumulative_products(st.quat_si, dq)
        st.quat_si = quat[-1].copy()
        st.gyr_prev_rps = rate[-1].copy()
        r = matrix_tcd(quat)
        lp = self._lowpass_inertial(rotate_tcd(r, acc_g))
        # Back to sensor axes: R^T lp, then unit length.
        up = rotate_back_tcd(r, lp)
        norm = np.sqrt(np.add.reduce(up * up, axis=1))
        up /= norm[:, None]
        return up

    def _lowpass_inertial(self, acc_i: FloatArray) -> FloatArray:
        st = self.state
        n, _, d = acc_i.shape
        order = st.lp_inertial.shape[0]
        out, zf = self._lp_inertial.run(acc_i.reshape(n, 3 * d), st.lp_inertial.reshape(order, -1))
        st.lp_inertial = zf.reshape(order, 3, d)
        out = out.reshape(n, 3, d)
        first = st.count
        starting = np.flatnonzero(first < self._init_samples)
        if starting.size == 0:
            return out
        # While a device's filter starts up, its output is the running mean;
        # its filter state starts at the mean's steady state once the start-up
        # span is over, and the rest of the block is filtered from there.
        sub = acc_i[:, :, starting]
        csum = np.cumsum(sub, axis=0) + st.init_sum[:, starting]
        counts = first[starting] + np.arange(1, n + 1)[:, None]  # (n, S)
        mean = csum / counts[:, None, :]
        n_init = np.minimum(self._init_samples - first[starting], n)  # (S,)
        in_init = np.arange(n)[:, None] < n_init
        out[:, :, starting] = np.where(in_init[:, None, :], mean, out[:, :, starting])
        st.init_sum[:, starting] = csum[n_init - 1, :, np.arange(starting.size)].T
        done = first[starting] + n_init == self._init_samples
        for k in np.unique(n_init[done]).tolist():
            group = np.flatnonzero(done & (n_init == k))
            devs = starting[group]
            state = self._lp_inertial.steady_state(mean[k - 1][:, group].reshape(-1))
            if k < n:
                y, state = self._lp_inertial.run(acc_i[k:][:, :, devs].reshape(n - k, -1), state)
                out[k:, :, devs] = y.reshape(n - k, 3, devs.size)
            st.lp_inertial[:, :, devs] = state.reshape(order, 3, devs.size)
        return out

    def _acc_only_path(self, acc_g: FloatArray, fresh: IntArray) -> FloatArray:
        st = self.state
        n, _, d = acc_g.shape
        order = st.lp_acc_only.shape[0]
        if fresh.size:
            zi = self._lp_acc_only.steady_state(acc_g[0][:, fresh].reshape(-1))
            st.lp_acc_only[:, :, fresh] = zi.reshape(order, 3, fresh.size)
        lp, zf = self._lp_acc_only.run(acc_g.reshape(n, 3 * d), st.lp_acc_only.reshape(order, -1))
        st.lp_acc_only = zf.reshape(order, 3, d)
        lp = lp.reshape(n, 3, d)
        norm = np.sqrt(np.add.reduce(lp * lp, axis=1))
        lp /= np.maximum(norm, 1e-300)[:, None]
        return lp


# The state the kernels update in place (made C-contiguous first).
_STATE_FIELDS = (
    "count",
    "quat_si",
    "gyr_prev_rps",
    "init_sum",
    "quiet_run",
    "bias_rps",
    "lp_inertial",
    "lp_rest",
    "lp_acc_only",
)


def _rows(state: FloatArray, devices: int) -> FloatArray:
    """``state`` (..., D) as the (k, D) view of rows the kernels take."""
    return state.reshape(-1, devices)


@dataclass(frozen=True)
class _KernelCoefficients:
    """What the compiled kernel takes besides data and state: each biquad as
    ``(b0, b1, b2, a1, a2, zi0, zi1)`` (``zi`` its unit-step steady state),
    the rest thresholds and the sample counts (rest, start-up mean, settle)."""

    rest_sos: FloatArray
    main_sos: FloatArray
    thresholds: FloatArray
    samples: IntArray

    @staticmethod
    def of(f: GravityFilter) -> _KernelCoefficients:
        main = f._lp_inertial if f.params.has_gyro else f._lp_acc_only
        return _KernelCoefficients(
            rest_sos=_biquad_coefficients(f._lp_rest.sos),
            main_sos=_biquad_coefficients(main.sos),
            thresholds=np.array([f._rest_acc2, f._rest_gyr2, f._bias_clip2]),
            samples=np.array([f._rest_samples, f._init_samples, f._settle_samples], dtype=np.int64),
        )


def _biquad_coefficients(sos: FloatArray) -> FloatArray:
    if sos.shape != (1, 6) or sos[0, 3] != 1.0:
        raise ValueError(f"the compiled kernel runs one normalised biquad, got sos {sos!r}")
    zi = signal.sosfilt_zi(sos).reshape(-1)
    b0, b1, b2, _, a1, a2 = sos[0]
    return np.array([b0, b1, b2, a1, a2, zi[0], zi[1]])


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
    acc = np.asarray(acc_g, dtype=np.float64)[:, :, None]
    gyr = None if gyr_dps is None else np.asarray(gyr_dps, dtype=np.float64)[:, :, None]
    dt = np.full((acc.shape[0], 1), 1.0 / sample_rate_hz)
    return GravityFilter(params).process(acc, gyr, dt).up_sensor[:, :, 0]
