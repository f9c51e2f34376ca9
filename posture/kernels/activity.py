"""The activity classifier of :mod:`posture.activity` as compiled passes over the samples.

:class:`~posture.activity.ActivityClassifier` (NumPy, the reference) runs each
stage over a whole block: the vertical signal, the gait band-pass (block
matrix form), the dead-band crossings (a forward fill), the four envelopes,
then the run lengths (:mod:`posture.runs`). Here each stage runs per sample,
one loop over the samples with the devices innermost, so every device's
recursions advance together in one pass:

* :func:`activity_features`: vertical signal, gait band-pass (a cascade of
  biquads), crossing side and crossings, squared dynamic acceleration, tilt
  rate, their envelopes (one biquad each), the gait criteria, the walk run,
  the samples since walking, quiet and vigorous;
* :func:`activity_classify`: the still run, lying (entered after a still run
  far from upright, left near upright or walking) and the activity code.

The functions take plain arrays and update the classifier's state arrays
(device on the last axis) in place. Expressions follow the reference term by
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


@helper
def _sections(z: FloatArray, d: int, x: float, sos: FloatArray) -> float:
    """One sample of a cascade of biquads (transposed direct form II, as
    ``scipy.signal.sosfilt``) of device ``d``: ``sos`` (S, 5) rows
    ``(b0, b1, b2, a1, a2)``, state ``z`` (2S, D), rows 2s and 2s+1 for section s."""
    y = x
    for s in range(sos.shape[0]):
        b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 3], sos[s, 4]
        x = y
        y = b0 * x + z[2 * s, d]
        z[2 * s, d] = b1 * x - a1 * y + z[2 * s + 1, d]
        z[2 * s + 1, d] = b2 * x - a2 * y
    return y


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
    flags (n, D). State, updated: ``gait_lp`` (gait order, D), ``envelope_lp``
    (envelope order, 4 * D: signal-major, as the reference's (order, 4, D)),
    ``prev_up`` (3, D), ``fresh``, ``sign``, ``walk_run``, ``since_walk`` (D,).
    Coefficients: ``*_sos`` (S, 5); ``thresholds`` (walk mean square, still
    mean square, vigorous mean square, min and max crossings per sample,
    vertical share, still tilt °/s, crossing dead band g, sample rate Hz);
    ``samples`` (walk enter, walk hold).
    """
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    walk_ms, still_ms, vigorous_ms = thresholds[0], thresholds[1], thresholds[2]
    min_cross, max_cross, share = thresholds[3], thresholds[4], thresholds[5]
    still_tilt, deadband, fs = thresholds[6], thresholds[7], thresholds[8]
    walk_enter, walk_hold = samples[0], samples[1]
    if not has_gyro:
        for d in range(d_count):
            if fresh[d]:
                prev_up[0, d] = up_sensor[0, 0, d]
                prev_up[1, d] = up_sensor[0, 1, d]
                prev_up[2, d] = up_sensor[0, 2, d]
                fresh[d] = False
    for i in range(n):
        for d in range(d_count):
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            u0 = up_sensor[i, 0, d]
            u1 = up_sensor[i, 1, d]
            u2 = up_sensor[i, 2, d]
            if has_gyro:
                vertical = ((a0 * u0 + a1 * u1) + a2 * u2) - 1.0
                g0 = gyr_dps[i, 0, d]
                g1 = gyr_dps[i, 1, d]
                g2 = gyr_dps[i, 2, d]
                along = (g0 * u0 + g1 * u1) + g2 * u2
                across2 = ((g0 * g0 + g1 * g1) + g2 * g2) - along * along
                tilt = math.sqrt(max(across2, 0.0))
            else:
                vertical = math.sqrt((a0 * a0 + a1 * a1) + a2 * a2) - 1.0
                cos = (prev_up[0, d] * u0 + prev_up[1, d] * u1) + prev_up[2, d] * u2
                cos = min(max(cos, -1.0), 1.0)
                tilt = math.acos(cos) * _DEGREES_PER_RAD * fs
                prev_up[0, d] = u0
                prev_up[1, d] = u1
                prev_up[2, d] = u2
            gait = _sections(gait_lp, d, vertical, gait_sos)
            # The side of the dead band last left; a crossing is a change of side.
            side = 1 if gait > deadband else (-1 if gait < -deadband else 0)
            crossing = 0.0
            if side != 0:
                if side - sign[d] == 2 or side - sign[d] == -2:
                    crossing = 1.0
                sign[d] = side
            e0 = a0 - u0
            e1 = a1 - u1
            e2 = a2 - u2
            gait_ms = _sections(envelope_lp, d, gait * gait, envelope_sos)
            dyn_ms = _sections(
                envelope_lp, d_count + d, (e0 * e0 + e1 * e1) + e2 * e2, envelope_sos
            )
            tilt_lp = _sections(envelope_lp, 2 * d_count + d, tilt, envelope_sos)
            crossings = _sections(envelope_lp, 3 * d_count + d, crossing, envelope_sos)
            gait_now = (
                gait_ms > walk_ms
                and crossings >= min_cross
                and crossings <= max_cross
                and gait_ms >= share * dyn_ms
                and settled[i, d]
            )
            run = walk_run[d] + 1 if gait_now else 0
            walk_run[d] = run
            since = since_walk[d] + 1 if run < walk_enter else 0
            since_walk[d] = since
            walking_out[i, d] = since <= walk_hold
            gait_out[i, d] = gait_now
            quiet_out[i, d] = dyn_ms < still_ms and tilt_lp < still_tilt
            vigorous_out[i, d] = dyn_ms > vigorous_ms


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
