"""The calibration capture's block as one compiled pass for the devices where
nothing can happen.

:meth:`~posture.capture.CalibrationCapture.process` (NumPy, the reference)
finds each sample's quiet test (accelerometer near its low-pass and near
1 g, gyroscope slow), the quiet run and the walking bout of the devices
still waiting, the still samples and their pose, which devices might capture
a calibration in the block (the candidates), resolves those one by one, and
carries the walking bout and the last still upright pose to the next block,
as a few dozen block operations. :func:`capture_block` does all of it for
every device that is no candidate, in one loop per device over its samples,
and only marks the candidates: their state is left as it was, and the
caller runs the reference on their columns (a capture is rare: a device
captures a few times in its life).

Each step computes what the reference computes, in its order: the squared
norms and dot products summed as :func:`posture.rotation.dot_tcd` sums, the
pose divided by the root of its squared norm, the walking bout's sum as the
difference of running sums (``np.cumsum``); runs are counts. So the
candidates are the reference's and the carried state is identical, not just
close.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper, kernel

__all__ = ["capture_block"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
Int8Array = NDArray[np.int8]

# posture.capture.Stage values.
_WAITING = 0
_PROVISIONAL = 1
# Devices per chunk of capture_block (as posture.kernels.activity).
_CHUNK = 64


@helper
def _device(
    d: int,
    quiet: BoolArray,
    t_s: FloatArray,
    acc_g: FloatArray,
    acc_lp_g: FloatArray,
    walking: BoolArray,
    gait: BoolArray,
    stage: int,
    asked: bool,
    provisional_up: FloatArray,
    nominal_up: FloatArray,
    limits: FloatArray,
    still_samples: int,
    gait_samples: int,
    any_waiting: bool,
    still_run: IntArray,
    bout_run: IntArray,
    bout_sum: FloatArray,
    bout_start_t: FloatArray,
    last_still_t: FloatArray,
    last_still_up: FloatArray,
) -> bool:
    """Device ``d``'s block, from its samples' quiet test ``quiet`` (n,):
    whether it is a candidate (then nothing is changed), else its state
    carried. The pose (the low-passed accelerometer's direction) is looked at
    only where the device is still, as the reference does."""
    n = quiet.shape[0]
    sin_face, cos_auto, cos_refine = limits[4], limits[5], limits[6]
    n0, n1, n2 = nominal_up[0], nominal_up[1], nominal_up[2]
    waiting = stage == _WAITING
    provisional = stage == _PROVISIONAL
    run = still_run[d]
    bout = bout_run[d]
    # Running sums of the accelerometer over walking samples (np.cumsum's
    # order), and their value at the last sample that was not walking.
    c0 = c1 = c2 = 0.0
    b0 = b1 = b2 = 0.0
    broke = False
    last = -1
    # Still poses matter to a device that may capture, and to every device
    # when one waits (the reference then carries the last still pose of all).
    look = asked or waiting or provisional or any_waiting
    r0, r1, r2 = provisional_up[0, d], provisional_up[1, d], provisional_up[2, d]
    for i in range(n):
        run = run + 1 if quiet[i] else 0
        if waiting:
            walks = walking[i, d]
            bout = bout + 1 if walks else 0
            w = 1.0 if walks else 0.0
            a0, a1, a2 = acc_g[i, 0, d], acc_g[i, 1, d], acc_g[i, 2, d]
            if i == 0:
                c0, c1, c2 = a0 * w, a1 * w, a2 * w
            else:
                c0, c1, c2 = c0 + a0 * w, c1 + a1 * w, c2 + a2 * w
            if not walks:
                b0, b1, b2 = c0, c1, c2
                broke = True
            # A walking bout's mean is looked at when it reaches the
            # interval and every interval after.
            if bout >= gait_samples and bout % gait_samples == 0 and gait[i, d]:
                return True
        else:
            bout = 0
        if run >= still_samples and look:
            if asked:
                return True
            # The reference's pose, p = l / |l|, only as far as needed: its z
            # at every still sample, the rest where compared or carried.
            l0, l1, l2 = acc_lp_g[i, 0, d], acc_lp_g[i, 1, d], acc_lp_g[i, 2, d]
            root = math.sqrt((l0 * l0 + l1 * l1) + l2 * l2)
            p2 = l2 / root
            if abs(p2) <= sin_face:
                last = i
                if waiting or provisional:
                    p0, p1 = l0 / root, l1 / root
                    if waiting and (p0 * n0 + p1 * n1) + p2 * n2 >= cos_auto:
                        return True
                    if provisional and (p0 * r0 + p1 * r1) + p2 * r2 >= cos_refine:
                        return True
    still_run[d] = run
    if not any_waiting:
        return False  # the reference carries nothing then
    if waiting and bout > 0:
        if broke:
            c0, c1, c2 = c0 - b0, c1 - b1, c2 - b2
        # The bout began in an earlier block (not at this block's first
        # sample, where bout == n): add what it summed there.
        if bout > n:
            c0, c1, c2 = c0 + bout_sum[0, d], c1 + bout_sum[1, d], c2 + bout_sum[2, d]
        bout_sum[0, d], bout_sum[1, d], bout_sum[2, d] = c0, c1, c2
        if bout <= n:
            bout_start_t[d] = t_s[n - bout, d]
    bout_run[d] = bout if waiting else 0
    if last >= 0:
        last_still_t[d] = t_s[last, d]
        l0, l1, l2 = acc_lp_g[last, 0, d], acc_lp_g[last, 1, d], acc_lp_g[last, 2, d]
        root = math.sqrt((l0 * l0 + l1 * l1) + l2 * l2)
        last_still_up[0, d] = l0 / root
        last_still_up[1, d] = l1 / root
        last_still_up[2, d] = l2 / root
    return False


@kernel
def capture_block(
    t_s: FloatArray,
    acc_g: FloatArray,
    gyr_dps: FloatArray,
    has_gyro: bool,
    acc_lp_g: FloatArray,
    acc_dev2_g2: FloatArray,
    walking: BoolArray,
    gait: BoolArray,
    stage: Int8Array,
    requested: BoolArray,
    provisional_up: FloatArray,
    nominal_up: FloatArray,
    limits: FloatArray,
    counts: IntArray,
    still_run: IntArray,
    bout_run: IntArray,
    bout_sum: FloatArray,
    bout_start_t: FloatArray,
    last_still_t: FloatArray,
    last_still_up: FloatArray,
    candidate_out: BoolArray,
) -> int:
    """One gap-free block of ``CalibrationCapture.process`` for the devices
    that cannot capture in it; returns how many can (the candidates, marked
    in ``candidate_out`` (D,) and left untouched), or -1 when no device is
    pending (nothing is changed then, as in the reference).

    Inputs: ``t_s`` (n, D) sample times, read only when a device is waiting
    (only then is anything carried); ``acc_g``,
    ``acc_lp_g`` (n, 3, D) accelerometer and its rest low-pass; ``gyr_dps``
    (n, 3, D), read only when ``has_gyro``; ``acc_dev2_g2``, ``walking``,
    ``gait`` (n, D). Per device (D,): ``stage`` (:class:`~posture.capture.Stage`),
    ``requested``, ``provisional_up`` (3, D); ``nominal_up`` (3,).
    ``limits``: still acc², lower and upper bound of |a|², still gyr², sine
    of the largest face tilt, cosines of the largest tilt from nominal (automatic)
    and from the provisional up (refinement). ``counts``: samples of a still
    period, of a walking bout's check interval. State (D,) and (3, D),
    updated for the devices that are no candidates:
    :class:`~posture.capture.CaptureState`'s runs, bout and last still pose.
    """
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    still_acc2, lo2, hi2, still_gyr2 = limits[0], limits[1], limits[2], limits[3]
    still_samples, gait_samples = counts[0], counts[1]
    any_pending = False
    any_waiting = False
    for d in range(d_count):
        any_pending |= requested[d] or stage[d] <= _PROVISIONAL
        any_waiting |= stage[d] == _WAITING
    if not any_pending:
        return -1
    candidates = 0
    # Devices in chunks (as posture.kernels.activity): the quiet test first,
    # devices innermost, reading the inputs row by row, into a scratch; then
    # each device of the chunk runs over its samples.
    quiet = np.empty((n, min(_CHUNK, d_count)), dtype=np.bool_)
    for first in range(0, d_count, _CHUNK):
        width = min(_CHUNK, d_count - first)
        for i in range(n):
            if has_gyro:
                for k in range(width):
                    d = first + k
                    a0, a1, a2 = acc_g[i, 0, d], acc_g[i, 1, d], acc_g[i, 2, d]
                    g0, g1, g2 = gyr_dps[i, 0, d], gyr_dps[i, 1, d], gyr_dps[i, 2, d]
                    mag2 = (a0 * a0 + a1 * a1) + a2 * a2
                    quiet[i, k] = (
                        (acc_dev2_g2[i, d] < still_acc2)
                        & (mag2 > lo2)
                        & (mag2 < hi2)
                        & (((g0 * g0 + g1 * g1) + g2 * g2) < still_gyr2)
                    )
            else:
                for k in range(width):
                    d = first + k
                    a0, a1, a2 = acc_g[i, 0, d], acc_g[i, 1, d], acc_g[i, 2, d]
                    mag2 = (a0 * a0 + a1 * a1) + a2 * a2
                    quiet[i, k] = (acc_dev2_g2[i, d] < still_acc2) & (mag2 > lo2) & (mag2 < hi2)
        for k in range(width):
            d = first + k
            if _device(
                d,
                quiet[:, k],
                t_s,
                acc_g,
                acc_lp_g,
                walking,
                gait,
                stage[d],
                requested[d],
                provisional_up,
                nominal_up,
                limits,
                still_samples,
                gait_samples,
                any_waiting,
                still_run,
                bout_run,
                bout_sum,
                bout_start_t,
                last_still_t,
                last_still_up,
            ):
                candidate_out[d] = True
                candidates += 1
            else:
                candidate_out[d] = False
    return candidates
