"""The activity classifier of :mod:`posture.activity` as compiled passes over the samples.

:class:`~posture.activity.ActivityClassifier` (NumPy, the reference) runs each
stage over a whole block: the vertical signal, the gait band-pass (block
matrix form), the dead-band crossings (a forward fill), the four envelopes,
then the run lengths (:mod:`posture.runs`). Here each stage runs per sample,
every stage of a sample before the next sample, in one pass:

* :func:`activity_features`: vertical signal, gait band-pass (a cascade of
  biquads), crossing side and crossings, squared dynamic acceleration, tilt
  rate, their envelopes (one biquad each), the gait criteria, the walk run,
  the samples since walking, quiet and vigorous;
* :func:`activity_classify`: the still run, lying (entered after a still run
  far from upright, left near upright or walking) and the activity code.

The functions take plain arrays and update the classifier's state arrays
(device on the last axis) in place; :func:`activity_features` runs a chunk
of devices at a time, each device's recursions over its samples with the
state in registers (its docstring says why). Expressions follow the reference term by
term; its block-matrix filters round differently, so filtered values agree to
rounding (about 1e-15 relative), and the flags derived from them are the same
unless a value sits on a threshold to within that rounding. No fastmath
(:mod:`posture.kernels.jit`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper, kernel

__all__ = ["activity_classify", "activity_features"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
Int8Array = NDArray[np.int8]

# np.degrees multiplies by 180/pi.
_DEGREES_PER_RAD = 180.0 / math.pi
# Devices per chunk of activity_features: 64 doubles are a 512-byte run of
# each input row; the chunk's signals, 64 x 3 x n doubles, stay in L1 for a
# tick's n (32 and 128 measured the same, 16 slower).
_CHUNK = 64


@helper
def _biquad(
    x: float, z0: float, z1: float, b0: float, b1: float, b2: float, a1: float, a2: float
) -> tuple[float, float, float]:
    """One sample of a biquad (transposed direct form II, as ``scipy.signal.sosfilt``):
    ``(y, z0, z1)``, the output and the new state."""
    y = b0 * x + z0
    return y, b1 * x - a1 * y + z1, b2 * x - a2 * y


@kernel
def activity_features(
    acc_g: FloatArray,
    gyr_dps: FloatArray,
    up_sensor: FloatArray,
    settled: BoolArray,
    has_gyro: bool,
    walking_out: BoolArray,
    gait_out: BoolArray,
    quiet_out: BoolArray,
    vigorous_out: BoolArray,
    gait_lp: FloatArray,
    envelope_lp: FloatArray,
    prev_up: FloatArray,
    fresh: BoolArray,
    sign: IntArray,
    walk_run: IntArray,
    since_walk: IntArray,
    gait_sos: FloatArray,
    envelope_sos: FloatArray,
    thresholds: FloatArray,
    samples: IntArray,
) -> None:
    """``ActivityClassifier.features`` for one gap-free block.

    Inputs: ``acc_g``, ``up_sensor`` (n, 3, D); ``gyr_dps`` (n, 3, D), read
    only when ``has_gyro``; ``settled`` (n, D). Outputs, filled: the four
    flags (n, D). State, updated: ``gait_lp`` (4, D), ``envelope_lp``
    (2, 4 * D: signal-major, as the reference's (2, 4, D)), ``prev_up``
    (3, D), ``fresh``, ``sign``, ``walk_run``, ``since_walk`` (D,).
    Coefficients: ``gait_sos`` (2, 5) and ``envelope_sos`` (1, 5) rows
    ``(b0, b1, b2, a1, a2)`` (the orders the classifier designs; the caller
    checks them); ``thresholds`` (walk mean square, still mean square,
    vigorous mean square, min and max crossings per sample, vertical share,
    still tilt °/s, crossing dead band g, sample rate Hz); ``samples`` (walk
    enter, walk hold).

    Devices go in chunks of :data:`_CHUNK`. For a chunk, the per-sample
    signals (vertical, tilt rate, squared dynamic acceleration) are computed
    first, devices innermost, reading the inputs row by row (whole cache
    lines, a few pages), into a scratch of (3, n, chunk) that stays in L1;
    then each device of the chunk runs its filters and runs over its samples
    with its state in registers, loaded and stored once per block. With the
    devices innermost throughout (as before) every recursion loaded and
    stored its state and reloaded its coefficients at every sample (the
    arrays may alias), and the acos call of the accelerometer-only path
    spilled the loop's registers; with each device's samples read straight
    from the (n, 3, D) inputs, every read was on another page and line.
    In-engine, 1000 devices x 10 samples: 29 ns per sample against 44.
    """
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    walk_ms, still_ms, vigorous_ms = thresholds[0], thresholds[1], thresholds[2]
    min_cross, max_cross, share = thresholds[3], thresholds[4], thresholds[5]
    still_tilt, deadband, fs = thresholds[6], thresholds[7], thresholds[8]
    walk_enter, walk_hold = samples[0], samples[1]
    pb0, pb1, pb2, pa1, pa2 = (
        gait_sos[0, 0],
        gait_sos[0, 1],
        gait_sos[0, 2],
        gait_sos[0, 3],
        gait_sos[0, 4],
    )
    qb0, qb1, qb2, qa1, qa2 = (
        gait_sos[1, 0],
        gait_sos[1, 1],
        gait_sos[1, 2],
        gait_sos[1, 3],
        gait_sos[1, 4],
    )
    eb0, eb1, eb2, ea1, ea2 = (
        envelope_sos[0, 0],
        envelope_sos[0, 1],
        envelope_sos[0, 2],
        envelope_sos[0, 3],
        envelope_sos[0, 4],
    )
    signals = np.empty((3, n, min(_CHUNK, d_count)))
    for first in range(0, d_count, _CHUNK):
        width = min(_CHUNK, d_count - first)
        if has_gyro:
            for i in range(n):
                for k in range(width):
                    d = first + k
                    a0, a1, a2 = acc_g[i, 0, d], acc_g[i, 1, d], acc_g[i, 2, d]
                    u0, u1, u2 = up_sensor[i, 0, d], up_sensor[i, 1, d], up_sensor[i, 2, d]
                    g0, g1, g2 = gyr_dps[i, 0, d], gyr_dps[i, 1, d], gyr_dps[i, 2, d]
                    along = (g0 * u0 + g1 * u1) + g2 * u2
                    across2 = ((g0 * g0 + g1 * g1) + g2 * g2) - along * along
                    signals[0, i, k] = ((a0 * u0 + a1 * u1) + a2 * u2) - 1.0
                    signals[1, i, k] = math.sqrt(max(across2, 0.0))
                    e0, e1, e2 = a0 - u0, a1 - u1, a2 - u2
                    signals[2, i, k] = (e0 * e0 + e1 * e1) + e2 * e2
        elif n > 0:
            for k in range(width):
                d = first + k
                if fresh[d]:
                    prev_up[0, d] = up_sensor[0, 0, d]
                    prev_up[1, d] = up_sensor[0, 1, d]
                    prev_up[2, d] = up_sensor[0, 2, d]
                    fresh[d] = False
            for i in range(n):
                for k in range(width):
                    d = first + k
                    a0, a1, a2 = acc_g[i, 0, d], acc_g[i, 1, d], acc_g[i, 2, d]
                    u0, u1, u2 = up_sensor[i, 0, d], up_sensor[i, 1, d], up_sensor[i, 2, d]
                    cos = (prev_up[0, d] * u0 + prev_up[1, d] * u1) + prev_up[2, d] * u2
                    cos = min(max(cos, -1.0), 1.0)
                    prev_up[0, d] = u0
                    prev_up[1, d] = u1
                    prev_up[2, d] = u2
                    signals[0, i, k] = math.sqrt((a0 * a0 + a1 * a1) + a2 * a2) - 1.0
                    signals[1, i, k] = math.acos(cos) * _DEGREES_PER_RAD * fs
                    e0, e1, e2 = a0 - u0, a1 - u1, a2 - u2
                    signals[2, i, k] = (e0 * e0 + e1 * e1) + e2 * e2
        for k in range(width):
            d = first + k
            p0, p1, q0, q1 = gait_lp[0, d], gait_lp[1, d], gait_lp[2, d], gait_lp[3, d]
            gm0, gm1 = envelope_lp[0, d], envelope_lp[1, d]
            dm0, dm1 = envelope_lp[0, d_count + d], envelope_lp[1, d_count + d]
            tm0, tm1 = envelope_lp[0, 2 * d_count + d], envelope_lp[1, 2 * d_count + d]
            cm0, cm1 = envelope_lp[0, 3 * d_count + d], envelope_lp[1, 3 * d_count + d]
            last_side = sign[d]
            run = walk_run[d]
            since = since_walk[d]
            for i in range(n):
                band, p0, p1 = _biquad(signals[0, i, k], p0, p1, pb0, pb1, pb2, pa1, pa2)
                gait, q0, q1 = _biquad(band, q0, q1, qb0, qb1, qb2, qa1, qa2)
                # The side of the dead band last left; a crossing is a change of side.
                side = 1 if gait > deadband else (-1 if gait < -deadband else 0)
                crossing = 0.0
                if side != 0:
                    if side - last_side == 2 or side - last_side == -2:
                        crossing = 1.0
                    last_side = side
                gait_ms, gm0, gm1 = _biquad(gait * gait, gm0, gm1, eb0, eb1, eb2, ea1, ea2)
                dyn_ms, dm0, dm1 = _biquad(signals[2, i, k], dm0, dm1, eb0, eb1, eb2, ea1, ea2)
                tilt_lp, tm0, tm1 = _biquad(signals[1, i, k], tm0, tm1, eb0, eb1, eb2, ea1, ea2)
                crossings, cm0, cm1 = _biquad(crossing, cm0, cm1, eb0, eb1, eb2, ea1, ea2)
                gait_now = (
                    gait_ms > walk_ms
                    and crossings >= min_cross
                    and crossings <= max_cross
                    and gait_ms >= share * dyn_ms
                    and settled[i, d]
                )
                run = run + 1 if gait_now else 0
                since = since + 1 if run < walk_enter else 0
                walking_out[i, d] = since <= walk_hold
                gait_out[i, d] = gait_now
                quiet_out[i, d] = dyn_ms < still_ms and tilt_lp < still_tilt
                vigorous_out[i, d] = dyn_ms > vigorous_ms
            gait_lp[0, d], gait_lp[1, d], gait_lp[2, d], gait_lp[3, d] = p0, p1, q0, q1
            envelope_lp[0, d], envelope_lp[1, d] = gm0, gm1
            envelope_lp[0, d_count + d], envelope_lp[1, d_count + d] = dm0, dm1
            envelope_lp[0, 2 * d_count + d], envelope_lp[1, 2 * d_count + d] = tm0, tm1
            envelope_lp[0, 3 * d_count + d], envelope_lp[1, 3 * d_count + d] = cm0, cm1
            sign[d] = last_side
            walk_run[d] = run
            since_walk[d] = since


@kernel
def activity_classify(
    walking: BoolArray,
    quiet: BoolArray,
    settled: BoolArray,
    inclination_deg: FloatArray,
    activity_out: Int8Array,
    still_run: IntArray,
    lying: IntArray,
    angles_deg: FloatArray,
    lying_enter: int,
    codes: Int8Array,
) -> None:
    """``ActivityClassifier.classify`` for one block: flags and ``inclination_deg``
    (n, D) in, ``activity_out`` (n, D) filled; ``still_run``, ``lying`` (D,)
    updated. ``angles_deg``: (lying enter, lying exit); ``lying_enter`` in
    samples; ``codes``: the Activity values UNKNOWN, UPRIGHT, MOVING, WALKING, LYING."""
    n = walking.shape[0]
    d_count = walking.shape[1]
    enter_deg, exit_deg = angles_deg[0], angles_deg[1]
    unknown, upright_code, moving, walking_code, lying_code = (
        codes[0],
        codes[1],
        codes[2],
        codes[3],
        codes[4],
    )
    for i in range(n):
        for d in range(d_count):
            incl = inclination_deg[i, d]
            upright = incl < enter_deg
            walks = walking[i, d] and upright
            still = quiet[i, d] and not walks
            run = still_run[d] + 1 if still else 0
            still_run[d] = run
            enter = run >= lying_enter and incl > enter_deg
            if enter:
                lying[d] = 1
            elif incl < exit_deg or walks:
                lying[d] = 0
            code = moving
            if still and upright:
                code = upright_code
            if lying[d] != 0:
                code = lying_code
            if walks:
                code = walking_code
            if not settled[i, d]:
                code = unknown
            activity_out[i, d] = code
