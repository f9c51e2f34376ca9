"""The gravity filter of :mod:`posture.orientation` as one compiled pass over the samples.

:class:`~posture.orientation.GravityFilter` (NumPy, the reference) runs each
stage over a whole block; here every stage runs per sample, so each device's
recursions advance together:

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

The gyroscope kernel works on lane blocks of :data:`LANES` devices: a
block's state is copied into one small ``(rows, LANES)`` workspace (every
state value at a constant offset from one pointer), the block runs all its
samples, and the state is copied back. Within a block each sample is two
loops over the lanes (no branches, no calls) that LLVM vectorises with AVX2
as well as AVX-512, reading the inputs in place and writing only the
workspace; the outputs are copied out per sample (:mod:`posture.kernels.jit`
says why each of these choices). The last block may be partial: the lane
loops run over the block's devices (a trip count LLVM does not know), so
one copy of the code serves every block. The accelerometer-only kernel is
laid out the same way.

The functions take plain arrays: inputs, preallocated outputs, and the
filter's state arrays (device on the last axis), which they update in place,
so whatever object holds the state passes its arrays. Expressions follow the
reference's term by term; its block-matrix low-pass and cumulative sums
round differently, so the two agree to rounding (about 1e-15 relative), not
bitwise. No fastmath: reassociation would change results from one build to
the next.

Compiled with ``cache=True`` (on disk, reused by later processes) and
``nogil=True`` (the gateway may run the engine on a worker thread beside its
event loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper, kernel, select
from posture.kernels.lanes import biquad_lane

__all__ = ["LANES", "gravity_acc_only", "gravity_gyro"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
# State as rows of D values: a (k, D) array (for the accelerometer-only kernel
# a tuple of k (D,) arrays works too; the gyroscope kernel's state copy loops
# over its state rows, which needs them all of one type).
Rows = FloatArray | tuple[FloatArray, ...]
# gravity_gyro's arguments grouped for its helpers: outputs; state (count,
# quiet_run, quat_si, gyr_prev_rps, init_sum, bias_rps, rest_lp, inertial_lp);
# coefficients (rest_sos, inertial_sos, thresholds, samples, lead_s, fresh_dt_s).
GyroOutputs = tuple[FloatArray, BoolArray, BoolArray, FloatArray, FloatArray]
GyroState = tuple[IntArray, IntArray, Rows, Rows, Rows, Rows, Rows, Rows]
GyroCoefficients = tuple[FloatArray, FloatArray, FloatArray, IntArray, float, float]

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
def _sum_sq(x: float, y: float, z: float) -> float:
    """x² + y² + z², summed in the reference's order."""
    return (x * x + y * y) + z * z


LANES = 32
"""Devices per lane block: 8 iterations of 4 doubles with AVX2, 4 of 8 with
AVX-512. As a literal trip count, below 16 LLVM's vectoriser leaves a loop
that needs run-time overlap checks scalar (too short to pay for them). At
1024 devices 32 lanes ran 1.3x as fast as 16 and 64 about as fast as 32;
the workspace of 32 (12 KiB) stays in the L1 cache."""

# Rows of the lane-block workspace (each LANES values): the filter state...
_QUAT = 0  # quat_si w, x, y, z
_GYR_PREV = 4  # gyr_prev_rps x, y, z
_INIT_SUM = 7  # init_sum x, y, z
_BIAS = 10  # bias_rps x, y, z
_REST_LP = 13  # rest_lp, 12 rows as in the state
_INERTIAL_LP = 25  # inertial_lp, 6 rows as in the state
_SINCE = 31  # samples since the last reset (count, then counting on)
_RUN = 32  # quiet_run
# ...what the second pass takes from the first...
_PHI = 33  # rotation vector over the interval x, y, z
_COS = 36  # cos of half its angle
_SINC = 37  # sin(half) / half
_HALF2 = 38  # half its angle, squared
# ...and one sample's outputs, copied out after the two passes.
_UP = 39  # 3
_ACC_LP = 42  # 3
_ACC_DEV2 = 45
_REST = 46
_SETTLED = 47
_ROWS = 48
# The accelerometer-only kernel's sensor-frame low-pass (6 rows) sits where
# the gyroscope kernel keeps its inertial one; the other rows are shared.
_ACC_ONLY_LP = _INERTIAL_LP


@helper
def _acc_rest_lane(
    w: FloatArray, lane: int, signals: int, a0: float, a1: float, a2: float, sos: FloatArray
) -> float:
    """The rest detector's accelerometer part for ``lane``: its low-pass (state
    rows ``_REST_LP + c`` and ``+ signals``, for ``signals`` low-passed side
    by side) staged as an output with the squared deviation, which it returns."""
    b0, b1, b2, a_1, a_2 = sos[0], sos[1], sos[2], sos[3], sos[4]
    f0 = biquad_lane(w, _REST_LP + 0, _REST_LP + signals, lane, a0, b0, b1, b2, a_1, a_2)
    f1 = biquad_lane(w, _REST_LP + 1, _REST_LP + signals + 1, lane, a1, b0, b1, b2, a_1, a_2)
    f2 = biquad_lane(w, _REST_LP + 2, _REST_LP + signals + 2, lane, a2, b0, b1, b2, a_1, a_2)
    w[_ACC_LP + 0, lane] = f0
    w[_ACC_LP + 1, lane] = f1
    w[_ACC_LP + 2, lane] = f2
    acc_dev2 = _sum_sq(a0 - f0, a1 - f1, a2 - f2)
    w[_ACC_DEV2, lane] = acc_dev2
    return acc_dev2


@helper
def _lowpass_or_mean(
    w: FloatArray,
    r0: int,
    r1: int,
    lane: int,
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
    """The inertial low-pass of one component: ``mean`` while ``starting``,
    else one biquad step on ``x``. The state steps in either case (as the
    reference's, which filters the whole block) and is set to the mean's
    steady state at the ``handover`` sample, the last of the start-up."""
    y = b0 * x + w[r0, lane]
    n0 = b1 * x - a1 * y + w[r1, lane]
    n1 = b2 * x - a2 * y
    w[r0, lane] = select(handover, zi0 * mean, n0)
    w[r1, lane] = select(handover, zi1 * mean, n1)
    return select(starting, mean, y)


@helper
def _copy_row(
    w: FloatArray, r: int, row: FloatArray | IntArray, first: int, m: int, into_lanes: bool
) -> None:
    """Workspace row ``r`` from ``row[first : first + m]`` (``into_lanes``), or back."""
    if into_lanes:
        for lane in range(m):
            w[r, lane] = row[first + lane]
    else:
        for lane in range(m):
            row[first + lane] = w[r, lane]


@helper
def _copy_outputs(outputs: GyroOutputs, w: FloatArray, i: int, base: np.uint64, m: int) -> None:
    """Sample ``i``'s outputs from the workspace to the output arrays (their
    columns ``base ...``): a loop each, one array and the workspace. Over the
    ``m`` real lanes: a trip count LLVM does not know, so it vectorises these
    loops rather than unrolling them into scalar copies."""
    up_out, settled_out, rest_out, acc_lp_out, acc_dev2_out = outputs
    for c in range(3):
        for lane in range(m):
            up_out[i, c, base + np.uint64(lane)] = w[_UP + c, lane]
    for c in range(3):
        for lane in range(m):
            acc_lp_out[i, c, base + np.uint64(lane)] = w[_ACC_LP + c, lane]
    for lane in range(m):
        acc_dev2_out[i, base + np.uint64(lane)] = w[_ACC_DEV2, lane]
    for lane in range(m):
        rest_out[i, base + np.uint64(lane)] = w[_REST, lane] != 0.0
    for lane in range(m):
        settled_out[i, base + np.uint64(lane)] = w[_SETTLED, lane] != 0.0


@helper
def _gyro_samples(
    data: tuple[FloatArray, FloatArray, FloatArray],
    outputs: GyroOutputs,
    coefficients: GyroCoefficients,
    w: FloatArray,
    first: int,
    m: int,
) -> None:
    """Every sample of the lane block whose state is in ``w`` and whose
    devices are columns ``first ... first + m - 1`` of the data arrays
    (``m`` at most :data:`LANES`). The other arguments are
    :func:`gravity_gyro`'s, grouped in tuples.

    The lane loops run ``m`` times, a trip count LLVM does not know: it
    vectorises them all the same (with a remainder loop), and the last,
    partial block runs through this same code. With :data:`LANES` as a
    literal trip count the partial block needed a second copy of the body
    (run with one lane), and numba's front end and LLVM then did all their
    work twice: the first compile took ~23 s of CPU, ~6.5 s now; the kernel
    at 1000 devices is ~5% slower than with the literal count."""
    acc_g, gyr_dps, dt_s = data
    rest_sos, inertial_sos, thresholds, samples, lead_s, fresh_dt_s = coefficients
    n = acc_g.shape[0]
    rb0, rb1, rb2, ra1, ra2 = rest_sos[0], rest_sos[1], rest_sos[2], rest_sos[3], rest_sos[4]
    ib0, ib1, ib2, ia1, ia2 = (
        inertial_sos[0],
        inertial_sos[1],
        inertial_sos[2],
        inertial_sos[3],
        inertial_sos[4],
    )
    iz0, iz1 = inertial_sos[5], inertial_sos[6]
    rest_acc2, rest_gyr2, bias_clip2 = thresholds[0], thresholds[1], thresholds[2]
    # Every constant in the workspace's precision: double in the engine
    # (the same values as the literals they stand for, so the same code),
    # single in lab.single_precision, where a Python float literal would
    # promote the arithmetic to double. Counts as floats too (exact below
    # 2**53 in double): the lanes then hold one type only.
    real: Callable[[float], float] = w.dtype.type
    zero, one, one_half, quarter = real(0.0), real(1.0), real(0.5), real(0.25)
    deg, twelfth, series_max_half2 = real(_DEG), real(1.0 / 12.0), real(_SERIES_MAX_HALF2)
    cos0, cos1, cos2, cos3, cos4 = real(_C0), real(_C1), real(_C2), real(_C3), real(_C4)
    sinc0, sinc1, sinc2, sinc3 = real(_S0), real(_S1), real(_S2), real(_S3)
    sinc4 = real(_S4)
    rest_samples = real(samples[0])
    init_samples = real(samples[1])
    settle_samples = real(samples[2])
    # Column indices unsigned: numba then adds no negative-index wrap-around,
    # which would hide from LLVM that the lanes are consecutive.
    base = np.uint64(first)
    for i in range(n):
        # Pass 1: rest detector, bias, rate, rotation vector and its cos /
        # sinc series. Every load and store unconditional, choices by select.
        for lane in range(m):
            d = base + np.uint64(lane)
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            g0 = gyr_dps[i, 0, d] * deg
            g1 = gyr_dps[i, 1, d] * deg
            g2 = gyr_dps[i, 2, d] * deg
            dt_in = dt_s[i, d]
            acc_dev2 = _acc_rest_lane(w, lane, 6, a0, a1, a2, rest_sos)
            h0 = biquad_lane(w, _REST_LP + 3, _REST_LP + 9, lane, g0, rb0, rb1, rb2, ra1, ra2)
            h1 = biquad_lane(w, _REST_LP + 4, _REST_LP + 10, lane, g1, rb0, rb1, rb2, ra1, ra2)
            h2 = biquad_lane(w, _REST_LP + 5, _REST_LP + 11, lane, g2, rb0, rb1, rb2, ra1, ra2)
            quiet = (
                (acc_dev2 < rest_acc2)
                & (_sum_sq(g0 - h0, g1 - h1, g2 - h2) < rest_gyr2)
                & (_sum_sq(h0, h1, h2) < bias_clip2)
            )
            run = select(quiet, w[_RUN, lane] + one, zero)
            w[_RUN, lane] = run
            resting = run >= rest_samples
            w[_REST, lane] = select(resting, one, zero)
            # The bias: the low-passed rate at rest, held between rest periods.
            # "+ 0.0" (not foldable without fast-math: it turns a held -0.0
            # into 0.0, a bias of exactly zero either way) keeps LLVM from
            # making the store of the held value a masked store
            # (posture.kernels.jit).
            b0 = select(resting, h0, w[_BIAS + 0, lane] + zero)
            b1 = select(resting, h1, w[_BIAS + 1, lane] + zero)
            b2 = select(resting, h2, w[_BIAS + 2, lane] + zero)
            w[_BIAS + 0, lane] = b0
            w[_BIAS + 1, lane] = b1
            w[_BIAS + 2, lane] = b2
            r0 = g0 - b0
            r1 = g1 - b1
            r2 = g2 - b2
            p0 = w[_GYR_PREV + 0, lane]
            p1 = w[_GYR_PREV + 1, lane]
            p2 = w[_GYR_PREV + 2, lane]
            w[_GYR_PREV + 0, lane] = r0
            w[_GYR_PREV + 1, lane] = r1
            w[_GYR_PREV + 2, lane] = r2
            # The interval before a reset means nothing; keep it harmless.
            fresh = w[_SINCE, lane] == zero
            dt = select(fresh, fresh_dt_s, dt_in)
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
            half_dt = one_half * dt
            cone = (dt * dt) * twelfth
            q0 = p0 * cone
            q1 = p1 * cone
            q2 = p2 * cone
            v0 = (p0 + r0) * half_dt + (q1 * r2 - q2 * r1)
            v1 = (p1 + r1) * half_dt + (q2 * r0 - q0 * r2)
            v2 = (p2 + r2) * half_dt + (q0 * r1 - q1 * r0)
            # Nothing to integrate yet: a zero rotation vector makes the
            # increment exactly (1, 0, 0, 0), the reference's.
            v0 = select(fresh, zero, v0)
            v1 = select(fresh, zero, v1)
            v2 = select(fresh, zero, v2)
            w[_PHI + 0, lane] = v0
            w[_PHI + 1, lane] = v1
            w[_PHI + 2, lane] = v2
            half2 = _sum_sq(v0, v1, v2) * quarter
            w[_HALF2, lane] = half2
            w[_COS, lane] = (((half2 * cos0 + cos1) * half2 + cos2) * half2 + cos3) * half2 + cos4
            w[_SINC, lane] = (
                ((half2 * sinc0 + sinc1) * half2 + sinc2) * half2 + sinc3
            ) * half2 + sinc4
        for lane in range(m):  # turns over 11° in one sample: the exact functions (rare)
            half2 = w[_HALF2, lane]
            if half2 > series_max_half2:
                half = math.sqrt(half2)
                w[_COS, lane] = math.cos(half)
                w[_SINC, lane] = math.sin(half) / half
        # Pass 2, likewise: the running quaternion, the inertial low-pass,
        # the up direction.
        for lane in range(m):
            d = base + np.uint64(lane)
            since_reset = w[_SINCE, lane]
            half_sinc = w[_SINC, lane] * one_half
            bw = w[_COS, lane]
            bx = w[_PHI + 0, lane] * half_sinc
            by = w[_PHI + 1, lane] * half_sinc
            bz = w[_PHI + 2, lane] * half_sinc
            # (posture.rotation.cumulative_products)
            qw = w[_QUAT + 0, lane]
            x = w[_QUAT + 1, lane]
            y = w[_QUAT + 2, lane]
            z = w[_QUAT + 3, lane]
            nw = ((qw * bw - x * bx) - y * by) - z * bz
            nx = ((qw * bx + x * bw) + y * bz) - z * by
            ny = ((qw * by - x * bz) + y * bw) + z * bx
            nz = ((qw * bz + x * by) - y * bx) + z * bw
            inv = one / math.sqrt(((nw * nw + nx * nx) + ny * ny) + nz * nz)
            qw = nw * inv
            x = nx * inv
            y = ny * inv
            z = nz * inv
            w[_QUAT + 0, lane] = qw
            w[_QUAT + 1, lane] = x
            w[_QUAT + 2, lane] = y
            w[_QUAT + 3, lane] = z
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
            wx = qw * x2
            wy = qw * y2
            wz = qw * z2
            m00 = (one - yy) - zz
            m01 = xy - wz
            m02 = xz + wy
            m10 = xy + wz
            m11 = (one - xx) - zz
            m12 = yz - wx
            m20 = xz - wy
            m21 = yz + wx
            m22 = (one - xx) - yy
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            e0 = (m00 * a0 + m01 * a1) + m02 * a2
            e1 = (m10 * a0 + m11 * a1) + m12 * a2
            e2 = (m20 * a0 + m21 * a1) + m22 * a2
            # Inertial low-pass: the running mean while it starts up (the sum
            # starts from the zero a reset leaves), the biquad after.
            starting = since_reset < init_samples
            handover = since_reset + one == init_samples
            seen = since_reset + one
            t0 = w[_INIT_SUM + 0, lane]
            t1 = w[_INIT_SUM + 1, lane]
            t2 = w[_INIT_SUM + 2, lane]
            w[_INIT_SUM + 0, lane] = t0 + select(starting, e0, zero)
            w[_INIT_SUM + 1, lane] = t1 + select(starting, e1, zero)
            w[_INIT_SUM + 2, lane] = t2 + select(starting, e2, zero)
            m0 = (t0 + e0) / seen
            m1 = (t1 + e1) / seen
            m2 = (t2 + e2) / seen
            l0 = _lowpass_or_mean(
                w, _INERTIAL_LP + 0, _INERTIAL_LP + 3, lane, e0, m0, starting, handover,
                ib0, ib1, ib2, ia1, ia2, iz0, iz1,
            )  # fmt: skip
            l1 = _lowpass_or_mean(
                w, _INERTIAL_LP + 1, _INERTIAL_LP + 4, lane, e1, m1, starting, handover,
                ib0, ib1, ib2, ia1, ia2, iz0, iz1,
            )  # fmt: skip
            l2 = _lowpass_or_mean(
                w, _INERTIAL_LP + 2, _INERTIAL_LP + 5, lane, e2, m2, starting, handover,
                ib0, ib1, ib2, ia1, ia2, iz0, iz1,
            )  # fmt: skip
            # Back to sensor axes (R^T l), unit length.
            u0 = (m00 * l0 + m10 * l1) + m20 * l2
            u1 = (m01 * l0 + m11 * l1) + m21 * l2
            u2 = (m02 * l0 + m12 * l1) + m22 * l2
            norm = math.sqrt(_sum_sq(u0, u1, u2))
            w[_UP + 0, lane] = u0 / norm
            w[_UP + 1, lane] = u1 / norm
            w[_UP + 2, lane] = u2 / norm
            w[_SETTLED, lane] = select(since_reset >= settle_samples, one, zero)
            w[_SINCE, lane] = seen
        _copy_outputs(outputs, w, i, base, m)


@helper
def _copy_state(w: FloatArray, state: GyroState, first: int, m: int, into_lanes: bool) -> None:
    """The state of devices ``first ... first + m - 1`` (:func:`gravity_gyro`'s,
    as a tuple) into the workspace's lanes (``into_lanes``), or back (``count``
    then advances after the whole block).

    The float rows go through one loop over them: numba's front end copies
    an inlined function's IR into every call site, and a call of
    :func:`_copy_row` per state array cost it ~1 s. (Compiled on its own
    rather than inlined it compiled no faster, numba specialising it on the
    literal ``into_lanes``, and the kernel at 1000 devices ran ~8% slower.)"""
    count, quiet_run, quat_si, gyr_prev_rps, init_sum, bias_rps, rest_lp, inertial_lp = state
    # The float state's rows sit in the workspace in this order from _QUAT on.
    r = _QUAT
    for rows in (quat_si, gyr_prev_rps, init_sum, bias_rps, rest_lp, inertial_lp):
        for j in range(len(rows)):
            _copy_row(w, r + j, rows[j], first, m, into_lanes)
        r += len(rows)
    if into_lanes:
        _copy_row(w, _SINCE, count, first, m, True)
        _copy_row(w, _RUN, quiet_run, first, m, True)
    else:
        for lane in range(m):
            quiet_run[first + lane] = int(w[_RUN, lane])


@helper
def _start_fresh(
    acc_g: FloatArray,
    gyr_dps: FloatArray,
    count: IntArray,
    quiet_run: IntArray,
    rest_lp: Rows,
    rest_sos: FloatArray,
) -> None:
    """Fresh devices (``count == 0``) of a gyroscope block: the rest low-pass
    starts at the steady state of the block's first sample."""
    rz0, rz1 = rest_sos[5], rest_sos[6]
    for d in range(acc_g.shape[2]):
        if count[d] == 0:
            quiet_run[d] = 0
            for c in range(3):
                rest_lp[c][d] = rz0 * acc_g[0, c, d]
                rest_lp[6 + c][d] = rz1 * acc_g[0, c, d]
                g = gyr_dps[0, c, d] * _DEG
                rest_lp[3 + c][d] = rz0 * g
                rest_lp[9 + c][d] = rz1 * g


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
    ``inertial_lp`` (6). Coefficients: ``*_sos`` ``(b0, b1, b2, a1, a2, zi0,
    zi1)`` of one biquad (``zi`` its unit-step steady state); ``thresholds``
    (rest acc², rest gyr², bias clip²); ``samples`` (rest, start-up mean,
    settle) in samples.
    """
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    _start_fresh(acc_g, gyr_dps, count, quiet_run, rest_lp, rest_sos)
    data = (acc_g, gyr_dps, dt_s)
    outputs = (up_out, settled_out, rest_out, acc_lp_out, acc_dev2_out)
    state = (count, quiet_run, quat_si, gyr_prev_rps, init_sum, bias_rps, rest_lp, inertial_lp)
    coefficients = (rest_sos, inertial_sos, thresholds, samples, lead_s, fresh_dt_s)
    # Allocated here, so LLVM sees its shape as a constant.
    w = np.empty((_ROWS, LANES))
    for first in range(0, d_count, LANES):
        # One call site of the (inlined) body for whole and partial blocks.
        m = min(LANES, d_count - first)
        _copy_state(w, state, first, m, True)
        _gyro_samples(data, outputs, coefficients, w, first, m)
        _copy_state(w, state, first, m, False)
    for d in range(d_count):
        count[d] += n


@helper
def _acc_only_block(
    acc_g: FloatArray,
    outputs: GyroOutputs,
    state: tuple[IntArray, IntArray, Rows, Rows],
    coefficients: tuple[FloatArray, FloatArray, FloatArray, IntArray],
    w: FloatArray,
    first: int,
    lanes: int,
    m: int,
) -> None:
    """The accelerometer-only path of devices ``first ... first + lanes - 1``,
    every sample, their state copied into the workspace ``w`` and back.

    ``lanes`` is a constant at each call (:data:`LANES`, or 1 for the
    devices left over), the trip count of the lane loop; ``m`` the same
    number as a run-time value, the trip count of the copies. (Two copies of
    this small body cost under a second to compile; the gyroscope kernel's
    cost ~8 s, so it runs its partial block through the same code instead.)"""
    count, quiet_run, rest_lp, acc_lp = state
    rest_sos, acc_sos, thresholds, samples = coefficients
    ab0, ab1, ab2, aa1, aa2 = acc_sos[0], acc_sos[1], acc_sos[2], acc_sos[3], acc_sos[4]
    rest_acc2 = thresholds[0]
    rest_samples = float(samples[0])
    settle_samples = float(samples[2])
    for j in range(6):
        _copy_row(w, _REST_LP + j, rest_lp[j], first, m, True)
        _copy_row(w, _ACC_ONLY_LP + j, acc_lp[j], first, m, True)
    _copy_row(w, _SINCE, count, first, m, True)
    _copy_row(w, _RUN, quiet_run, first, m, True)
    base = np.uint64(first)
    for i in range(acc_g.shape[0]):
        for lane in range(m):
            d = base + np.uint64(lane)
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            acc_dev2 = _acc_rest_lane(w, lane, 3, a0, a1, a2, rest_sos)
            run = select(acc_dev2 < rest_acc2, w[_RUN, lane] + 1.0, 0.0)
            w[_RUN, lane] = run
            w[_REST, lane] = select(run >= rest_samples, 1.0, 0.0)
            u0 = biquad_lane(
                w, _ACC_ONLY_LP + 0, _ACC_ONLY_LP + 3, lane, a0, ab0, ab1, ab2, aa1, aa2
            )
            u1 = biquad_lane(
                w, _ACC_ONLY_LP + 1, _ACC_ONLY_LP + 4, lane, a1, ab0, ab1, ab2, aa1, aa2
            )
            u2 = biquad_lane(
                w, _ACC_ONLY_LP + 2, _ACC_ONLY_LP + 5, lane, a2, ab0, ab1, ab2, aa1, aa2
            )
            # max(norm, 1e-300) as Python's max (and NumPy's maximum) takes it.
            norm = math.sqrt(_sum_sq(u0, u1, u2))
            norm = select(norm < 1e-300, 1e-300, norm)
            w[_UP + 0, lane] = u0 / norm
            w[_UP + 1, lane] = u1 / norm
            w[_UP + 2, lane] = u2 / norm
            since_reset = w[_SINCE, lane]
            w[_SETTLED, lane] = select(since_reset >= settle_samples, 1.0, 0.0)
            w[_SINCE, lane] = since_reset + 1.0
        _copy_outputs(outputs, w, i, base, m)
    for j in range(6):
        _copy_row(w, _REST_LP + j, rest_lp[j], first, m, False)
        _copy_row(w, _ACC_ONLY_LP + j, acc_lp[j], first, m, False)
    for lane in range(m):
        quiet_run[first + lane] = int(w[_RUN, lane])


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
    low-pass, are 6 rows each: the two state values of x, y, z), in lane
    blocks as the gyroscope kernel."""
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    rz0, rz1 = rest_sos[5], rest_sos[6]
    az0, az1 = acc_sos[5], acc_sos[6]
    for d in range(d_count):
        if count[d] == 0:
            quiet_run[d] = 0
            for c in range(3):
                rest_lp[c][d] = rz0 * acc_g[0, c, d]
                rest_lp[3 + c][d] = rz1 * acc_g[0, c, d]
                acc_lp[c][d] = az0 * acc_g[0, c, d]
                acc_lp[3 + c][d] = az1 * acc_g[0, c, d]
    outputs = (up_out, settled_out, rest_out, acc_lp_out, acc_dev2_out)
    state = (count, quiet_run, rest_lp, acc_lp)
    coefficients = (rest_sos, acc_sos, thresholds, samples)
    w = np.empty((_ROWS, LANES))  # as gravity_gyro's
    full = d_count - d_count % LANES
    for first in range(0, full, LANES):
        _acc_only_block(
            acc_g, outputs, state, coefficients, w, first, LANES, min(LANES, d_count - first)
        )
    for d in range(full, d_count):
        _acc_only_block(acc_g, outputs, state, coefficients, w, d, 1, 1)
    for d in range(d_count):
        count[d] += n
