"""The calibration capture's block as one compiled pass.

:meth:`~posture.capture.CalibrationCapture.process` (NumPy, the reference)
finds each sample's quiet test (accelerometer near its low-pass and near
1 g, gyroscope slow), the quiet run and the walking bout of the devices
still waiting, the still samples and their pose, which devices might capture
a calibration in the block (the candidates), resolves those one by one, and
carries the walking bout and the last still upright pose to the next block,
as a few dozen block operations. :func:`capture_block` does all of it in one
loop per device over its samples (:func:`_device`), which stops at the first
sample where a capture may happen; such a device (a candidate: in the
benchmark's ward about one in every block, and each one captures) then runs
its block again in :func:`_resolve_device`, capture by capture, as the
reference's ``_resolve``. The caller gets a record of each capture and
builds the :class:`~posture.capture.Capture` objects.

Each step computes what the reference computes, in its order: the squared
norms and dot products summed as :func:`posture.rotation.dot_tcd` sums, the
pose divided by the root of its squared norm, the walking bout's sum as the
difference of running sums (``np.cumsum``), a calibration's up normalised as
:meth:`~posture.calibration.Calibration.from_up` does; runs are counts. So
the captures and the carried state are identical, not just close.

The device loop is not laid out in lane blocks as
:mod:`posture.kernels.gravity` is: a version that was (every sample one
branch-free loop over 32 lanes, vectorised with AVX-512 here, candidates
then resolved as below) ran no faster at 1000 devices in the benchmark's
ward (~95 µs a 10-sample block either way, 2026-12). A likely reason, not
pinned down: the vector loop computes the pose (a square root and three
divisions) at every sample of every lane, this loop only at still samples,
and it still needs a scalar pass per device to hand the state back.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper, kernel

__all__ = ["RECORD_FIELDS", "capture_block"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
Int8Array = NDArray[np.int8]

# posture.capture.Stage values.
_WAITING = 0
_PROVISIONAL = 1
_CONFIRMED = 2
# posture.capture's capture kinds (the value breaks ties at one sample).
_REQUESTED = 0
_STILL = 1
_GAIT = 2
_REFINED = 3
# Columns of a capture record (capture_block's ``record_int``).
RECORD_FIELDS = ("device", "index", "kind", "bout", "retro")

# Devices per chunk of capture_block (as posture.kernels.activity).
_CHUNK = 64


@helper
def _carry(
    d: int,
    n: int,
    waiting: bool,
    bout: int,
    broke: bool,
    c0: float,
    c1: float,
    c2: float,
    b0: float,
    b1: float,
    b2: float,
    last: int,
    t_s: FloatArray,
    acc_lp_g: FloatArray,
    bout_run: IntArray,
    bout_sum: FloatArray,
    bout_start_t: FloatArray,
    last_still_t: FloatArray,
    last_still_up: FloatArray,
) -> None:
    """The reference's ``_carry`` for device ``d`` at the end of its block of
    ``n``: a waiting device's walking bout (``bout`` samples; ``c`` the running
    sum of its walking samples, ``b`` that sum at the last sample that was
    not walking, if ``broke``) and its last still upright pose (sample
    ``last``, or none if < 0); the bout run of the others is 0."""
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
    if waiting and last >= 0:
        last_still_t[d] = t_s[last, d]
        l0, l1, l2 = acc_lp_g[last, 0, d], acc_lp_g[last, 1, d], acc_lp_g[last, 2, d]
        root = math.sqrt((l0 * l0 + l1 * l1) + l2 * l2)
        last_still_up[0, d] = l0 / root
        last_still_up[1, d] = l1 / root
        last_still_up[2, d] = l2 / root


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
    # Still poses matter only to a device that may capture (a waiting one
    # also carries its last still upright pose to the next block).
    look = asked or waiting or provisional
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
    if any_waiting:  # else the reference carries nothing
        _carry(
            d,
            n,
            waiting,
            bout,
            broke,
            c0,
            c1,
            c2,
            b0,
            b1,
            b2,
            last,
            t_s,
            acc_lp_g,
            bout_run,
            bout_sum,
            bout_start_t,
            last_still_t,
            last_still_up,
        )
    return False


@kernel
def _resolve_device(
    d: int,
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
    still_samples: int,
    gait_samples: int,
    any_waiting: bool,
    still_run: IntArray,
    bout_run: IntArray,
    bout_sum: FloatArray,
    bout_start_t: FloatArray,
    last_still_t: FloatArray,
    last_still_up: FloatArray,
    record_int: IntArray,
    record_up: FloatArray,
    count: int,
) -> int:
    """Device ``d``'s block with its captures (a candidate, its state as the
    block found it): the reference's ``_resolve`` and
    ``_carry`` for one device. Each capture goes into row ``count``, ``count
    + 1``... of ``record_int`` (:data:`RECORD_FIELDS`) and ``record_up`` (the
    up handed to ``Calibration.from_up``); returns the next free row.

    Compiled on its own, not inlined: it runs for a few devices a block, and
    inlined it would add to :func:`capture_block`'s compile time.
    """
    n = acc_g.shape[0]
    still_acc2, lo2, hi2, still_gyr2 = limits[0], limits[1], limits[2], limits[3]
    sin_face, cos_auto, cos_refine = limits[4], limits[5], limits[6]
    pre_walk_gap_s, max_forward_z = limits[7], limits[8]
    n0, n1, n2 = nominal_up[0], nominal_up[1], nominal_up[2]
    now = stage[d]
    asked = requested[d]
    # Walking bouts are followed for the devices waiting when the block
    # began (the reference's runs and carry), whatever they capture in it.
    waiting = now == _WAITING
    r0, r1, r2 = provisional_up[0, d], provisional_up[1, d], provisional_up[2, d]
    run = still_run[d]
    bout = bout_run[d]
    c0 = c1 = c2 = 0.0
    b0 = b1 = b2 = 0.0
    broke = False
    last = -1
    upright = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        a0, a1, a2 = acc_g[i, 0, d], acc_g[i, 1, d], acc_g[i, 2, d]
        mag2 = (a0 * a0 + a1 * a1) + a2 * a2
        quiet = (acc_dev2_g2[i, d] < still_acc2) and lo2 < mag2 < hi2
        if has_gyro:
            g0, g1, g2 = gyr_dps[i, 0, d], gyr_dps[i, 1, d], gyr_dps[i, 2, d]
            quiet = quiet and ((g0 * g0 + g1 * g1) + g2 * g2) < still_gyr2
        run = run + 1 if quiet else 0
        checked = False
        if waiting:
            walks = walking[i, d]
            bout = bout + 1 if walks else 0
            w = 1.0 if walks else 0.0
            if i == 0:
                c0, c1, c2 = a0 * w, a1 * w, a2 * w
            else:
                c0, c1, c2 = c0 + a0 * w, c1 + a1 * w, c2 + a2 * w
            if not walks:
                b0, b1, b2 = c0, c1, c2
                broke = True
            checked = bout >= gait_samples and bout % gait_samples == 0 and gait[i, d]
        else:
            bout = 0
        still = run >= still_samples
        p0 = p1 = p2 = 0.0
        if still:
            l0, l1, l2 = acc_lp_g[i, 0, d], acc_lp_g[i, 1, d], acc_lp_g[i, 2, d]
            root = math.sqrt((l0 * l0 + l1 * l1) + l2 * l2)
            p0, p1, p2 = l0 / root, l1 / root, l2 / root
            if abs(p2) <= sin_face:
                upright[i] = True
                last = i
        # The options at this sample, lowest kind first (the reference's
        # ties); one capture per sample, the next sample sees its stage.
        kind = -1
        u0 = u1 = u2 = 0.0
        retro = False
        if asked and still and abs(p2) < max_forward_z:
            kind = _REQUESTED
        elif now == _WAITING:
            if upright[i] and (p0 * n0 + p1 * n1) + p2 * n2 >= cos_auto:
                kind = _STILL
            elif checked:
                # The bout's sum: the reference's difference of running sums.
                m0, m1, m2 = c0, c1, c2
                if broke:
                    m0, m1, m2 = m0 - b0, m1 - b1, m2 - b2
                if bout > i + 1:
                    m0, m1, m2 = m0 + bout_sum[0, d], m1 + bout_sum[1, d], m2 + bout_sum[2, d]
                norm = math.sqrt((m0 * m0 + m1 * m1) + m2 * m2)
                if abs(m2) <= sin_face * norm:
                    kind = _GAIT
                    u0, u1, u2 = m0, m1, m2
                    # A still upright pose that ended just before the bout began.
                    start = i - bout + 1
                    start_t = t_s[start, d] if start >= 0 else bout_start_t[d]
                    k = min(start, i + 1) - 1
                    while k >= 0 and not upright[k]:
                        k -= 1
                    if k >= 0:
                        still_t = t_s[k, d]
                        l0, l1, l2 = acc_lp_g[k, 0, d], acc_lp_g[k, 1, d], acc_lp_g[k, 2, d]
                        root = math.sqrt((l0 * l0 + l1 * l1) + l2 * l2)
                        s0, s1, s2 = l0 / root, l1 / root, l2 / root
                    else:
                        still_t = last_still_t[d]
                        s0, s1, s2 = last_still_up[0, d], last_still_up[1, d], last_still_up[2, d]
                    if math.isfinite(still_t) and 0.0 <= start_t - still_t <= pre_walk_gap_s:
                        cos = ((s0 * m0 + s1 * m1) + s2 * m2) / max(norm, 1e-12)
                        if cos >= cos_refine:
                            u0, u1, u2 = s0, s1, s2
                            retro = True
        elif now == _PROVISIONAL and upright[i] and (p0 * r0 + p1 * r1) + p2 * r2 >= cos_refine:
            kind = _REFINED
        if kind < 0:
            continue
        if kind != _GAIT:
            u0, u1, u2 = p0, p1, p2
        # The calibration's up, as Calibration.from_up normalises it.
        norm = math.sqrt((u0 * u0 + u1 * u1) + u2 * u2)
        r0, r1, r2 = u0 / norm, u1 / norm, u2 / norm
        provisional_up[0, d], provisional_up[1, d], provisional_up[2, d] = r0, r1, r2
        now = _PROVISIONAL if kind == _GAIT and not retro else _CONFIRMED
        if kind == _REQUESTED:
            asked = False
        if count < record_int.shape[0]:
            record_int[count, 0] = d
            record_int[count, 1] = i
            record_int[count, 2] = kind
            record_int[count, 3] = bout if kind == _GAIT else 0
            record_int[count, 4] = 1 if retro else 0
            record_up[count, 0], record_up[count, 1], record_up[count, 2] = u0, u1, u2
        count += 1
    stage[d] = now
    requested[d] = asked
    still_run[d] = run
    if any_waiting:  # else the reference carries nothing
        _carry(
            d,
            n,
            waiting,
            bout,
            broke,
            c0,
            c1,
            c2,
            b0,
            b1,
            b2,
            last,
            t_s,
            acc_lp_g,
            bout_run,
            bout_sum,
            bout_start_t,
            last_still_t,
            last_still_up,
        )
    return count


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
    record_int: IntArray,
    record_up: FloatArray,
) -> int:
    """One gap-free block of ``CalibrationCapture.process``: returns how many
    calibrations were captured (records in rows 0, 1... of ``record_int``
    (k, 5), :data:`RECORD_FIELDS`, and ``record_up`` (k, 3), the up to
    build each calibration from, by device then time; a count above k means
    the rows ran out, which three rows per device cannot), or -1 when no
    device is pending (nothing is changed then, as in the reference).

    Inputs: ``t_s`` (n, D) sample times, read only when a device is waiting
    (only then is anything carried); ``acc_g``,
    ``acc_lp_g`` (n, 3, D) accelerometer and its rest low-pass; ``gyr_dps``
    (n, 3, D), read only when ``has_gyro``; ``acc_dev2_g2``, ``walking``,
    ``gait`` (n, D). Per device (D,): ``stage`` (:class:`~posture.capture.Stage`),
    ``requested``, ``provisional_up`` (3, D); ``nominal_up`` (3,).
    ``limits``: still acc², lower and upper bound of |a|², still gyr², sine
    of the largest face tilt, cosines of the largest tilt from nominal (automatic)
    and from the provisional up (refinement), the longest gap from a still
    pose to the walk it confirms (s), the largest |up·z| of a requested
    capture. ``counts``: samples of a still period, of a walking bout's check
    interval. State (D,) and (3, D), updated:
    :class:`~posture.capture.CaptureState`.

    A device that asks nothing and is confirmed, or provisional without a
    still period in the block (its refinement needs one), can capture
    nothing: it takes only the quiet run, vectorised across devices. The
    others run :func:`_device`, which marks those where a capture may
    happen (the candidates: a superset, with the same arithmetic as the
    captures) and leaves their state as it was; :func:`_resolve_device`
    then runs their block again, capture by capture.
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
    count = 0
    # Devices in chunks (as posture.kernels.activity): the quiet test first,
    # devices innermost, reading the inputs row by row, into a scratch; then
    # each device of the chunk runs over its samples.
    quiet = np.empty((n, min(_CHUNK, d_count)), dtype=np.bool_)
    # The quiet run of each device of a chunk, for those that can capture
    # nothing (confirmed, nothing asked: most of a ward): their whole block;
    # and whether it reached a still period (a provisional device that asks
    # nothing can capture only at such a sample: its refinement).
    runs = np.empty(min(_CHUNK, d_count), dtype=np.int64)
    stilled = np.empty(min(_CHUNK, d_count), dtype=np.bool_)
    for first in range(0, d_count, _CHUNK):
        width = min(_CHUNK, d_count - first)
        # Unsigned indices: numba's wrap-around of negative ones would keep
        # LLVM from seeing consecutive columns (posture.kernels.jit).
        base = np.uint64(first)
        for k in range(width):
            runs[np.uint64(k)] = still_run[base + np.uint64(k)]
            stilled[np.uint64(k)] = False
        for i in range(n):
            if has_gyro:
                for k in range(width):
                    lane = np.uint64(k)
                    col = base + lane
                    a0, a1, a2 = acc_g[i, 0, col], acc_g[i, 1, col], acc_g[i, 2, col]
                    g0, g1, g2 = gyr_dps[i, 0, col], gyr_dps[i, 1, col], gyr_dps[i, 2, col]
                    mag2 = (a0 * a0 + a1 * a1) + a2 * a2
                    q = (
                        (acc_dev2_g2[i, col] < still_acc2)
                        & (mag2 > lo2)
                        & (mag2 < hi2)
                        & (((g0 * g0 + g1 * g1) + g2 * g2) < still_gyr2)
                    )
                    quiet[i, lane] = q
                    runs[lane] = (runs[lane] + 1) * q  # run + 1 if quiet else 0, branch-free
                    stilled[lane] |= runs[lane] >= still_samples
            else:
                for k in range(width):
                    lane = np.uint64(k)
                    col = base + lane
                    a0, a1, a2 = acc_g[i, 0, col], acc_g[i, 1, col], acc_g[i, 2, col]
                    mag2 = (a0 * a0 + a1 * a1) + a2 * a2
                    q = (acc_dev2_g2[i, col] < still_acc2) & (mag2 > lo2) & (mag2 < hi2)
                    quiet[i, lane] = q
                    runs[lane] = (runs[lane] + 1) * q
                    stilled[lane] |= runs[lane] >= still_samples
        for k in range(width):
            d = first + k
            quiet_only = not requested[d] and (
                stage[d] == _CONFIRMED or (stage[d] == _PROVISIONAL and not stilled[k])
            )
            if quiet_only:
                # _device's outcome for such a device, without its loop.
                still_run[d] = runs[k]
                if any_waiting:
                    bout_run[d] = 0
                continue
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
                count = _resolve_device(
                    d,
                    t_s,
                    acc_g,
                    gyr_dps,
                    has_gyro,
                    acc_lp_g,
                    acc_dev2_g2,
                    walking,
                    gait,
                    stage,
                    requested,
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
                    record_int,
                    record_up,
                    count,
                )
    return count
