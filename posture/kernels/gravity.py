"""The gravity filter of :mod:`posture.orientation` as one compiled pass over the samples.

:class:`~posture.orientation.GravityFilter` (NumPy, the reference) runs each
stage over a whole block; here every stage runs per sample, one loop over
the samples with the devices innermost (the device axis is the contiguous
one in every array), so each device's recursions advance together:

* rest detector: the rest low-pass (one biquad per signal), squared
  deviations, quiet-run length, rest flag;
* gyroscope bias held from the last rest sample; rate increments over the
  interval (trapezoid, coning term, ``gyr_delay_s`` lead, the cos and sinc
  series with the exact functions for large turns); the running quaternion;
* accelerometer rotated into the inertial frame, its low-pass there (the
  start-up mean over the first ``tau_acc_s`` and the hand-over to the
  filter's steady state), rotated back and normalised;
* the accelerometer-only path: the sensor-frame low-pass, normalised;
* devices at the start of a stream (``count == 0``) reset as the reference
  resets them.

The functions take plain arrays: inputs, preallocated outputs, and the
filter's state arrays (device on the last axis), which they update in place,
so whatever object holds the state passes its arrays. Expressions follow the
reference's term by term; its block-matrix low-pass and cumulative sums
round differently, so the two agree to rounding (about 1e-15 relative), not
bitwise. No fastmath: reassociation would change results from one build to
the next.

Compiled with ``cache=True`` (on disk, reused by later processes) and
``nogil=True`` (the gateway may run the engine on a worker thread beside its
event loop); :mod:`posture.kernels.jit` says what the compiler made of the
device loops.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper, kernel

__all__ = ["gravity_acc_only", "gravity_gyro"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
# State as rows of D values: a (k, D) array (a tuple of k (D,) arrays works too).
Rows = FloatArray | tuple[FloatArray, ...]

_DEG = math.pi / 180.0
# cos(h) and sin(h)/h to h^8, h^9 (as posture.rotation): exact to rounding for
# half-angles up to 0.1 rad; beyond, the libm functions.
_C0, _C1, _C2, _C3, _C4 = (
    1.0 / 40320.0,
    -1.0 / 720.0,
    1.0 / 24.0,
    -1.0 / 2.0,
    1.0,
)
_S0, _S1, _S2, _S3, _S4 = (
    1.0 / 362880.0,
    -1.0 / 5040.0,
    1.0 / 120.0,
    -1.0 / 6.0,
    1.0,
)
_SERIES_MAX_HALF2 = 0.1 * 0.1


@helper
def _biquad(
    z0: FloatArray,
    z1: FloatArray,
    d: int,
    x: float,
    b0: float,
    b1: float,
    b2: float,
    a1: float,
    a2: float,
) -> float:
    """One sample of a biquad (transposed direct form II, as ``scipy.signal.sosfilt``)
    of device ``d``, whose two state values ``z0[d]``, ``z1[d]`` are updated."""
    y = b0 * x + z0[d]
    z0[d] = b1 * x - a1 * y + z1[d]
    z1[d] = b2 * x - a2 * y
    return y


@helper
def _sum_sq(x: float, y: float, z: float) -> float:
    """x² + y² + z², summed in the reference's order."""
    return (x * x + y * y) + z * z


@kernel
def gravity_gyro(
    acc_g: FloatArray,
    gyr_dps: FloatArray,
    dt_s: FloatArray,
    up_out: FloatArray,
    settled_out: BoolArray,
    rest_out: BoolArray,
    acc_lp_out: FloatArray,
    acc_dev2_out: FloatArray,
    count: IntArray,
    quiet_run: IntArray,
    quat_si: Rows,
    gyr_prev_rps: Rows,
    init_sum: Rows,
    bias_rps: Rows,
    rest_lp: Rows,
    inertial_lp: Rows,
    scratch: Rows,
    rest_sos: FloatArray,
    inertial_sos: FloatArray,
    thresholds: FloatArray,
    samples: IntArray,
    lead_s: float,
    fresh_dt_s: float,
) -> None:
    """The gyroscope path of ``GravityFilter.process`` for one gap-free block.

    Inputs: ``acc_g``, ``gyr_dps`` (n, 3, D); ``dt_s`` (n, D). Outputs, filled:
    ``up_out``, ``acc_lp_out`` (n, 3, D); ``settled_out``, ``rest_out``,
    ``acc_dev2_out`` (n, D). State, updated: ``count``, ``quiet_run`` (D,);
    and as rows of D values (a (k, D) array):
    ``quat_si`` (4), ``gyr_prev_rps``, ``init_sum``, ``bias_rps`` (3),
    ``rest_lp`` (12: the two state values of acc x, y, z, gyr x, y, z),
    ``inertial_lp`` (6), and ``scratch`` (5) for the kernel's own use.
    Coefficients: ``*_sos`` ``(b0, b1, b2, a1, a2, zi0, zi1)`` of one biquad
    (``zi`` its unit-step steady state); ``thresholds`` (rest acc², rest
    gyr², bias clip²); ``samples`` (rest, start-up mean, settle) in samples.
    """
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    rb0, rb1, rb2, ra1, ra2 = rest_sos[0], rest_sos[1], rest_sos[2], rest_sos[3], rest_sos[4]
    rz0, rz1 = rest_sos[5], rest_sos[6]
    ib0, ib1, ib2, ia1, ia2 = (
        inertial_sos[0],
        inertial_sos[1],
        inertial_sos[2],
        inertial_sos[3],
        inertial_sos[4],
    )
    iz0, iz1 = inertial_sos[5], inertial_sos[6]
    rest_acc2, rest_gyr2, bias_clip2 = thresholds[0], thresholds[1], thresholds[2]
    rest_samples, init_samples, settle_samples = samples[0], samples[1], samples[2]
    # Fresh devices: the rest low-pass starts at the steady state of the first sample.
    for d in range(d_count):
        if count[d] == 0:
            quiet_run[d] = 0
            for c in range(3):
                rest_lp[c][d] = rz0 * acc_g[0, c, d]
                rest_lp[6 + c][d] = rz1 * acc_g[0, c, d]
                g = gyr_dps[0, c, d] * _DEG
                rest_lp[3 + c][d] = rz0 * g
                rest_lp[9 + c][d] = rz1 * g
    phi_x, phi_y, phi_z, cos_row, sinc_row = (
        scratch[0],
        scratch[1],
        scratch[2],
        scratch[3],
        scratch[4],
    )
    for i in range(n):
        # Pass 1, written without branches or calls (a vectoriser's form; LLVM
        # keeps it scalar: posture.kernels.jit): rest detector, bias, rate,
        # rotation vector and its cos / sinc series.
        large = False
        for d in range(d_count):
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            g0 = gyr_dps[i, 0, d] * _DEG
            g1 = gyr_dps[i, 1, d] * _DEG
            g2 = gyr_dps[i, 2, d] * _DEG
            f0 = _biquad(rest_lp[0], rest_lp[6], d, a0, rb0, rb1, rb2, ra1, ra2)
            f1 = _biquad(rest_lp[1], rest_lp[7], d, a1, rb0, rb1, rb2, ra1, ra2)
            f2 = _biquad(rest_lp[2], rest_lp[8], d, a2, rb0, rb1, rb2, ra1, ra2)
            h0 = _biquad(rest_lp[3], rest_lp[9], d, g0, rb0, rb1, rb2, ra1, ra2)
            h1 = _biquad(rest_lp[4], rest_lp[10], d, g1, rb0, rb1, rb2, ra1, ra2)
            h2 = _biquad(rest_lp[5], rest_lp[11], d, g2, rb0, rb1, rb2, ra1, ra2)
            acc_lp_out[i, 0, d] = f0
            acc_lp_out[i, 1, d] = f1
            acc_lp_out[i, 2, d] = f2
            acc_dev2 = _sum_sq(a0 - f0, a1 - f1, a2 - f2)
            acc_dev2_out[i, d] = acc_dev2
            quiet = (
                (acc_dev2 < rest_acc2)
                & (_sum_sq(g0 - h0, g1 - h1, g2 - h2) < rest_gyr2)
                & (_sum_sq(h0, h1, h2) < bias_clip2)
            )
            run = quiet_run[d] + 1 if quiet else 0
            quiet_run[d] = run
            resting = run >= rest_samples
            rest_out[i, d] = resting
            # The bias: the low-passed rate at rest, held between rest periods.
            b0 = h0 if resting else bias_rps[0][d]
            b1 = h1 if resting else bias_rps[1][d]
            b2 = h2 if resting else bias_rps[2][d]
            bias_rps[0][d] = b0
            bias_rps[1][d] = b1
            bias_rps[2][d] = b2
            r0 = g0 - b0
            r1 = g1 - b1
            r2 = g2 - b2
            p0 = gyr_prev_rps[0][d]
            p1 = gyr_prev_rps[1][d]
            p2 = gyr_prev_rps[2][d]
            gyr_prev_rps[0][d] = r0
            gyr_prev_rps[1][d] = r1
            gyr_prev_rps[2][d] = r2
            # The interval before a reset means nothing; keep it harmless.
            dt = fresh_dt_s if count[d] + i == 0 else dt_s[i, d]
            # Rotation vector over the interval (posture.rotation.increments_tcd):
            # the rate line shifted by lead_s (an exact no-op at 0), trapezoid, coning.
            k = lead_s / dt
            s0 = (r0 - p0) * k
            s1 = (r1 - p1) * k
            s2 = (r2 - p2) * k
            p0 += s0
            p1 += s1
            p2 += s2
            r0 += s0
            r1 += s1
            r2 += s2
            half_dt = 0.5 * dt
            cone = (dt * dt) * (1.0 / 12.0)
            q0 = p0 * cone
            q1 = p1 * cone
            q2 = p2 * cone
            v0 = (p0 + r0) * half_dt + (q1 * r2 - q2 * r1)
            v1 = (p1 + r1) * half_dt + (q2 * r0 - q0 * r2)
            v2 = (p2 + r2) * half_dt + (q0 * r1 - q1 * r0)
            phi_x[d] = v0
            phi_y[d] = v1
            phi_z[d] = v2
            half2 = _sum_sq(v0, v1, v2) * 0.25
            cos_row[d] = (((half2 * _C0 + _C1) * half2 + _C2) * half2 + _C3) * half2 + _C4
            sinc_row[d] = (((half2 * _S0 + _S1) * half2 + _S2) * half2 + _S3) * half2 + _S4
            large |= half2 > _SERIES_MAX_HALF2
        if large:  # turns over 11° in one sample: the exact functions (rare)
            for d in range(d_count):
                half2 = _sum_sq(phi_x[d], phi_y[d], phi_z[d]) * 0.25
                if half2 > _SERIES_MAX_HALF2:
                    half = math.sqrt(half2)
                    cos_row[d] = math.cos(half)
                    sinc_row[d] = math.sin(half) / half
        # Pass 2, likewise: the running quaternion, the inertial low-pass,
        # the up direction.
        for d in range(d_count):
            since_reset = count[d] + i
            first = since_reset == 0
            half_sinc = sinc_row[d] * 0.5
            bw = 1.0 if first else cos_row[d]  # nothing to integrate yet
            bx = 0.0 if first else phi_x[d] * half_sinc
            by = 0.0 if first else phi_y[d] * half_sinc
            bz = 0.0 if first else phi_z[d] * half_sinc
            # (posture.rotation.cumulative_products)
            w = quat_si[0][d]
            x = quat_si[1][d]
            y = quat_si[2][d]
            z = quat_si[3][d]
            nw = ((w * bw - x * bx) - y * by) - z * bz
            nx = ((w * bx + x * bw) + y * bz) - z * by
            ny = ((w * by - x * bz) + y * bw) + z * bx
            nz = ((w * bz + x * by) - y * bx) + z * bw
            inv = 1.0 / math.sqrt(((nw * nw + nx * nx) + ny * ny) + nz * nz)
            w = nw * inv
            x = nx * inv
            y = ny * inv
            z = nz * inv
            quat_si[0][d] = w
            quat_si[1][d] = x
            quat_si[2][d] = y
            quat_si[3][d] = z
            # Rotation matrix (posture.rotation.matrix_tcd).
            x2 = x + x
            y2 = y + y
            z2 = z + z
            xx = x * x2
            yy = y * y2
            zz = z * z2
            xy = x * y2
            xz = x * z2
            yz = y * z2
            wx = w * x2
            wy = w * y2
            wz = w * z2
            m00 = (1.0 - yy) - zz
            m01 = xy - wz
            m02 = xz + wy
            m10 = xy + wz
            m11 = (1.0 - xx) - zz
            m12 = yz - wx
            m20 = xz - wy
            m21 = yz + wx
            m22 = (1.0 - xx) - yy
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            e0 = (m00 * a0 + m01 * a1) + m02 * a2
            e1 = (m10 * a0 + m11 * a1) + m12 * a2
            e2 = (m20 * a0 + m21 * a1) + m22 * a2
            # Inertial low-pass: the running mean while it starts up (its
            # state then handed over as the mean's steady state), the
            # biquad after. Both are computed and the result selected.
            starting = since_reset < init_samples
            handover = since_reset + 1 == init_samples
            seen = float(since_reset + 1)
            m0 = (0.0 if first else init_sum[0][d]) + e0
            m1 = (0.0 if first else init_sum[1][d]) + e1
            m2 = (0.0 if first else init_sum[2][d]) + e2
            init_sum[0][d] = m0 if starting else init_sum[0][d]
            init_sum[1][d] = m1 if starting else init_sum[1][d]
            init_sum[2][d] = m2 if starting else init_sum[2][d]
            m0 /= seen
            m1 /= seen
            m2 /= seen
            l0 = _lowpass_or_mean(
                inertial_lp[0],
                inertial_lp[3],
                d,
                e0,
                m0,
                starting,
                handover,
                ib0,
                ib1,
                ib2,
                ia1,
                ia2,
                iz0,
                iz1,
            )
            l1 = _lowpass_or_mean(
                inertial_lp[1],
                inertial_lp[4],
                d,
                e1,
                m1,
                starting,
                handover,
                ib0,
                ib1,
                ib2,
                ia1,
                ia2,
                iz0,
                iz1,
            )
            l2 = _lowpass_or_mean(
                inertial_lp[2],
                inertial_lp[5],
                d,
                e2,
                m2,
                starting,
                handover,
                ib0,
                ib1,
                ib2,
                ia1,
                ia2,
                iz0,
                iz1,
            )
            # Back to sensor axes (R^T l), unit length.
            u0 = (m00 * l0 + m10 * l1) + m20 * l2
            u1 = (m01 * l0 + m11 * l1) + m21 * l2
            u2 = (m02 * l0 + m12 * l1) + m22 * l2
            norm = math.sqrt(_sum_sq(u0, u1, u2))
            up_out[i, 0, d] = u0 / norm
            up_out[i, 1, d] = u1 / norm
            up_out[i, 2, d] = u2 / norm
            settled_out[i, d] = since_reset >= settle_samples
    for d in range(d_count):
        count[d] += n


@helper
def _lowpass_or_mean(
    z0: FloatArray,
    z1: FloatArray,
    d: int,
    x: float,
    mean: float,
    starting: bool,
    handover: bool,
    b0: float,
    b1: float,
    b2: float,
    a1: float,
    a2: float,
    zi0: float,
    zi1: float,
) -> float:
    """The inertial low-pass of one component: ``mean`` while ``starting`` (the
    state set to the mean's steady state at the ``handover`` sample, left alone
    before it), else one biquad step on ``x``; written as selects, no branches."""
    y = b0 * x + z0[d]
    n0 = b1 * x - a1 * y + z1[d]
    n1 = b2 * x - a2 * y
    keep0 = zi0 * mean if handover else z0[d]
    keep1 = zi1 * mean if handover else z1[d]
    z0[d] = keep0 if starting else n0
    z1[d] = keep1 if starting else n1
    return mean if starting else y


@kernel
def gravity_acc_only(
    acc_g: FloatArray,
    up_out: FloatArray,
    settled_out: BoolArray,
    rest_out: BoolArray,
    acc_lp_out: FloatArray,
    acc_dev2_out: FloatArray,
    count: IntArray,
    quiet_run: IntArray,
    rest_lp: Rows,
    acc_lp: Rows,
    rest_sos: FloatArray,
    acc_sos: FloatArray,
    thresholds: FloatArray,
    samples: IntArray,
) -> None:
    """The accelerometer-only path of ``GravityFilter.process`` (arrays as
    :func:`gravity_gyro`; ``rest_lp`` and ``acc_lp``, the sensor-frame
    low-pass, are 6 rows each: the two state values of x, y, z)."""
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    rb0, rb1, rb2, ra1, ra2 = rest_sos[0], rest_sos[1], rest_sos[2], rest_sos[3], rest_sos[4]
    rz0, rz1 = rest_sos[5], rest_sos[6]
    ab0, ab1, ab2, aa1, aa2 = acc_sos[0], acc_sos[1], acc_sos[2], acc_sos[3], acc_sos[4]
    az0, az1 = acc_sos[5], acc_sos[6]
    rest_acc2 = thresholds[0]
    rest_samples, settle_samples = samples[0], samples[2]
    for d in range(d_count):
        if count[d] == 0:
            quiet_run[d] = 0
            for c in range(3):
                rest_lp[c][d] = rz0 * acc_g[0, c, d]
                rest_lp[3 + c][d] = rz1 * acc_g[0, c, d]
                acc_lp[c][d] = az0 * acc_g[0, c, d]
                acc_lp[3 + c][d] = az1 * acc_g[0, c, d]
    for i in range(n):
        for d in range(d_count):
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            f0 = _biquad(rest_lp[0], rest_lp[3], d, a0, rb0, rb1, rb2, ra1, ra2)
            f1 = _biquad(rest_lp[1], rest_lp[4], d, a1, rb0, rb1, rb2, ra1, ra2)
            f2 = _biquad(rest_lp[2], rest_lp[5], d, a2, rb0, rb1, rb2, ra1, ra2)
            acc_lp_out[i, 0, d] = f0
            acc_lp_out[i, 1, d] = f1
            acc_lp_out[i, 2, d] = f2
            acc_dev2 = _sum_sq(a0 - f0, a1 - f1, a2 - f2)
            acc_dev2_out[i, d] = acc_dev2
            run = quiet_run[d] + 1 if acc_dev2 < rest_acc2 else 0
            quiet_run[d] = run
            rest_out[i, d] = run >= rest_samples
            u0 = _biquad(acc_lp[0], acc_lp[3], d, a0, ab0, ab1, ab2, aa1, aa2)
            u1 = _biquad(acc_lp[1], acc_lp[4], d, a1, ab0, ab1, ab2, aa1, aa2)
            u2 = _biquad(acc_lp[2], acc_lp[5], d, a2, ab0, ab1, ab2, aa1, aa2)
            norm = max(math.sqrt(_sum_sq(u0, u1, u2)), 1e-300)
            up_out[i, 0, d] = u0 / norm
            up_out[i, 1, d] = u1 / norm
            up_out[i, 2, d] = u2 / norm
            settled_out[i, d] = count[d] + i >= settle_samples
    for d in range(d_count):
        count[d] += n
