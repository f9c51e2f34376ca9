"""The activity classifier of :mod:`posture.activity` as compiled passes over the samples.

:class:`~posture.activity.ActivityClassifier` (NumPy, the reference) runs each
stage over a whole block: the vertical signal, the gait band-pass (block
matrix form), the dead-band crossings (a forward fill), the four envelopes,
then the run lengths (:mod:`posture.runs`). Here the recursions run per
sample, every stage of a sample before the next sample:

* :func:`activity_features`: vertical signal, gait band-pass (a cascade of
  biquads), crossing side and crossings, squared dynamic acceleration, tilt
  rate, their envelopes (one biquad each), the gait criteria, the walk run,
  the samples since walking, quiet and vigorous;
* :func:`activity_classify`: the still run, lying (entered after a still run
  far from upright, left near upright or walking) and the activity code,
  in lane blocks as well.

The functions take plain arrays and update the classifier's state arrays
(device on the last axis) in place. :func:`activity_features` computes the
signals first (they carry nothing from one sample to the next), then runs
the recursions in lane blocks of :data:`LANES` devices whose loops LLVM
vectorises, as the gravity kernel does (its docstring says how and why).
Expressions follow the reference term by term; its block-matrix filters
round differently, so filtered values agree to rounding (about 1e-15
relative), and the flags derived from them are the same unless a value sits
on a threshold to within that rounding. The order of operations is that of
the kernel before the lane blocks (per device, each recursion), so its
results are the same to the bit. No fastmath (:mod:`posture.kernels.jit`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper, kernel, select
from posture.kernels.lanes import biquad_lane

__all__ = ["LANES", "activity_classify", "activity_features"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
Int8Array = NDArray[np.int8]

# np.degrees multiplies by 180/pi.
_DEGREES_PER_RAD = 180.0 / math.pi

LANES = 32
"""Devices per lane block of :func:`activity_features` and
:func:`activity_classify`, as the gravity kernel's
(:data:`posture.kernels.gravity.LANES`): 8 iterations of 4 doubles with
AVX2, 4 of 8 with AVX-512; the features' workspace, 19 x 32 doubles, stays
in L1.
64 and 128 lanes measured within the noise of 32 at 1000 devices."""

# Rows of the lane-block workspace (each LANES values): the state...
_GAIT_LP = 0  # the gait band-pass: two biquads, two values each (gait_lp's rows)
_ENV = 4  # the four envelopes (gait, dynamic, tilt, crossings), two values each
_SIGN = 12  # the side of the dead band last left, -1.0, 0.0 or 1.0
_RUN = 13  # walk_run
_SINCE = 14  # since_walk
# ...and one sample's flags (1.0 or 0.0), copied out after the lane loop.
_WALKING = 15
_GAIT = 16
_QUIET = 17
_VIGOROUS = 18
_ROWS = 19

# The signals' scratch is (blocks, n, 3, LANES): sample i's signals of lane
# block k at [k, i]; these, its rows.
_VERTICAL = 0
_TILT = 1  # tilt rate °/s (accelerometer-only: the cosine first)
_DYN2 = 2  # squared dynamic acceleration

# activity_features' arguments grouped for its helpers: outputs (walking,
# gait, quiet, vigorous); state (gait_lp, envelope_lp, sign, walk_run,
# since_walk); coefficients (gait_sos, envelope_sos, thresholds, samples).
Outputs = tuple[BoolArray, BoolArray, BoolArray, BoolArray]
State = tuple[FloatArray, FloatArray, IntArray, IntArray, IntArray]
Coefficients = tuple[FloatArray, FloatArray, FloatArray, IntArray]


@helper
def _gyro_signals(
    acc_g: FloatArray, gyr_dps: FloatArray, up_sensor: FloatArray, signals: FloatArray
) -> None:
    """The signals of every sample and device with a gyroscope, into
    ``signals`` (blocks, n, 3, LANES): vertical ``acc·up - 1``, tilt rate
    (the rate across the up axis), squared dynamic acceleration
    ``|acc - up|²``."""
    d_count = acc_g.shape[2]
    for i in range(acc_g.shape[0]):
        for first in range(0, d_count, LANES):
            block = first // LANES
            base = np.uint64(first)
            for lane in range(min(LANES, d_count - first)):
                d = base + np.uint64(lane)
                a0, a1, a2 = acc_g[i, 0, d], acc_g[i, 1, d], acc_g[i, 2, d]
                u0, u1, u2 = up_sensor[i, 0, d], up_sensor[i, 1, d], up_sensor[i, 2, d]
                g0, g1, g2 = gyr_dps[i, 0, d], gyr_dps[i, 1, d], gyr_dps[i, 2, d]
                along = (g0 * u0 + g1 * u1) + g2 * u2
                across2 = ((g0 * g0 + g1 * g1) + g2 * g2) - along * along
                signals[block, i, _VERTICAL, lane] = ((a0 * u0 + a1 * u1) + a2 * u2) - 1.0
                signals[block, i, _TILT, lane] = math.sqrt(max(across2, 0.0))
                e0, e1, e2 = a0 - u0, a1 - u1, a2 - u2
                signals[block, i, _DYN2, lane] = (e0 * e0 + e1 * e1) + e2 * e2


@helper
def _acc_only_signals(
    acc_g: FloatArray,
    up_sensor: FloatArray,
    prev_up: FloatArray,
    fresh: BoolArray,
    fs: float,
    signals: FloatArray,
) -> None:
    """The signals without a gyroscope, into ``signals`` as
    :func:`_gyro_signals`: vertical ``|acc| - 1``, tilt rate (the angle
    between consecutive up-directions, times the rate), squared dynamic
    acceleration; ``prev_up`` and ``fresh`` updated. The up-direction before
    sample ``i`` is sample ``i - 1``'s (``prev_up`` before the first), so no
    loop carries a value from one sample to the next; the arc cosines (libm
    calls, which keep a loop from vectorising) go in a loop of their own."""
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    if n == 0:
        return
    for k in range(d_count):
        if fresh[k]:
            # No up-direction before the first: the first stands in (tilt rate 0).
            prev_up[0, k] = up_sensor[0, 0, k]
            prev_up[1, k] = up_sensor[0, 1, k]
            prev_up[2, k] = up_sensor[0, 2, k]
            fresh[k] = False
    for i in range(n):
        # The previous up-direction's array and sample: prev_up's one row of
        # (3, D) as (1, 3, D) before the first sample, else up_sensor's.
        prev = prev_up.reshape((1, 3, d_count)) if i == 0 else up_sensor
        j = 0 if i == 0 else i - 1
        for first in range(0, d_count, LANES):
            block = first // LANES
            base = np.uint64(first)
            for lane in range(min(LANES, d_count - first)):
                d = base + np.uint64(lane)
                a0, a1, a2 = acc_g[i, 0, d], acc_g[i, 1, d], acc_g[i, 2, d]
                u0, u1, u2 = up_sensor[i, 0, d], up_sensor[i, 1, d], up_sensor[i, 2, d]
                cos = (prev[j, 0, d] * u0 + prev[j, 1, d] * u1) + prev[j, 2, d] * u2
                signals[block, i, _TILT, lane] = min(max(cos, -1.0), 1.0)
                signals[block, i, _VERTICAL, lane] = math.sqrt((a0 * a0 + a1 * a1) + a2 * a2) - 1.0
                e0, e1, e2 = a0 - u0, a1 - u1, a2 - u2
                signals[block, i, _DYN2, lane] = (e0 * e0 + e1 * e1) + e2 * e2
            for lane in range(min(LANES, d_count - first)):
                tilt = math.acos(signals[block, i, _TILT, lane]) * _DEGREES_PER_RAD * fs
                signals[block, i, _TILT, lane] = tilt
    for c in range(3):
        for k in range(d_count):
            prev_up[c, k] = up_sensor[n - 1, c, k]


@helper
def _copy_state(
    w: FloatArray, state: State, first: int, m: int, d_count: int, into_lanes: bool
) -> None:
    """The state of devices ``first ... first + m - 1`` (:func:`activity_features`'
    arrays, as a tuple) into the workspace's lanes (``into_lanes``), or back.
    The run lengths and the side travel as doubles (exact below 2**53): the
    lanes then hold doubles only."""
    gait_lp, envelope_lp, sign, walk_run, since_walk = state
    # Few loops over the lanes, many state rows in each body: a loop per row
    # and block cost ~2 ns per sample and device (1000 devices, 10-sample
    # blocks) in entries and overlap checks. envelope_lp is (2, 4 * D),
    # signal-major (signal s's values at s * D + d); its rows go back a loop
    # each, since LLVM cannot tell that the four places written in one row
    # are D apart, at least the m lanes (it leaves such a loop scalar).
    stride = np.uint64(d_count)
    base = np.uint64(first)
    if into_lanes:
        for lane in range(m):
            d = base + np.uint64(lane)
            w[_GAIT_LP + 0, lane] = gait_lp[0, d]
            w[_GAIT_LP + 1, lane] = gait_lp[1, d]
            w[_GAIT_LP + 2, lane] = gait_lp[2, d]
            w[_GAIT_LP + 3, lane] = gait_lp[3, d]
            w[_ENV + 0, lane] = envelope_lp[0, d]
            w[_ENV + 1, lane] = envelope_lp[1, d]
            w[_ENV + 2, lane] = envelope_lp[0, stride + d]
            w[_ENV + 3, lane] = envelope_lp[1, stride + d]
            w[_ENV + 4, lane] = envelope_lp[0, 2 * stride + d]
            w[_ENV + 5, lane] = envelope_lp[1, 2 * stride + d]
            w[_ENV + 6, lane] = envelope_lp[0, 3 * stride + d]
            w[_ENV + 7, lane] = envelope_lp[1, 3 * stride + d]
            w[_SIGN, lane] = sign[d]
            w[_RUN, lane] = walk_run[d]
            w[_SINCE, lane] = since_walk[d]
    else:
        for lane in range(m):
            d = base + np.uint64(lane)
            gait_lp[0, d] = w[_GAIT_LP + 0, lane]
            gait_lp[1, d] = w[_GAIT_LP + 1, lane]
            gait_lp[2, d] = w[_GAIT_LP + 2, lane]
            gait_lp[3, d] = w[_GAIT_LP + 3, lane]
            sign[d] = int(w[_SIGN, lane])
            walk_run[d] = int(w[_RUN, lane])
            since_walk[d] = int(w[_SINCE, lane])
        # A run-time count of rows: LLVM does not unroll the loop into eight.
        for r in range(envelope_lp.shape[1] // d_count * envelope_lp.shape[0]):
            row = envelope_lp[r % 2]
            offset = np.uint64(r // 2) * stride + base
            for lane in range(m):
                row[offset + np.uint64(lane)] = w[_ENV + r, lane]


@helper
def _block_samples(
    signals: FloatArray,
    settled: BoolArray,
    outputs: Outputs,
    coefficients: Coefficients,
    w: FloatArray,
    first: int,
    m: int,
) -> None:
    """Every sample of the lane block whose state is in ``w``, devices
    ``first ... first + m - 1`` (their signals block ``first // LANES`` of
    ``signals``): the filters, the crossings and the runs. Choices by
    :func:`~posture.kernels.jit.select`, counts as doubles: the lane loop has
    no branches. Its trip count ``m`` is a run-time value, so the last,
    partial block runs through the same code."""
    walking_out, gait_out, quiet_out, vigorous_out = outputs
    gait_sos, envelope_sos, thresholds, samples = coefficients
    walk_ms, still_ms, vigorous_ms = thresholds[0], thresholds[1], thresholds[2]
    min_cross, max_cross, share = thresholds[3], thresholds[4], thresholds[5]
    still_tilt, deadband = thresholds[6], thresholds[7]
    walk_enter = float(samples[0])
    walk_hold = float(samples[1])
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
    # Column indices unsigned: no negative-index wrap-around (posture.kernels.jit).
    base = np.uint64(first)
    block = first // LANES
    for i in range(signals.shape[1]):
        for lane in range(m):
            d = base + np.uint64(lane)
            vertical = signals[block, i, _VERTICAL, lane]
            band = biquad_lane(
                w, _GAIT_LP + 0, _GAIT_LP + 1, lane, vertical, pb0, pb1, pb2, pa1, pa2
            )
            gait = biquad_lane(w, _GAIT_LP + 2, _GAIT_LP + 3, lane, band, qb0, qb1, qb2, qa1, qa2)
            # The side of the dead band last left; a crossing is a change of
            # side (+1 to -1 or back: the product of the two sides is -1).
            side = select(gait > deadband, 1.0, select(gait < -deadband, -1.0, 0.0))
            last_side = w[_SIGN, lane]
            crossing = select(side * last_side < 0.0, 1.0, 0.0)
            # "+ 0.0" (exact: the side is -1.0, 0.0 or 1.0) keeps LLVM from
            # making this a masked store (posture.kernels.jit).
            w[_SIGN, lane] = select(side != 0.0, side, last_side + 0.0)
            gait_ms = biquad_lane(w, _ENV + 0, _ENV + 1, lane, gait * gait, eb0, eb1, eb2, ea1, ea2)
            dyn2 = signals[block, i, _DYN2, lane]
            dyn_ms = biquad_lane(w, _ENV + 2, _ENV + 3, lane, dyn2, eb0, eb1, eb2, ea1, ea2)
            tilt = signals[block, i, _TILT, lane]
            tilt_lp = biquad_lane(w, _ENV + 4, _ENV + 5, lane, tilt, eb0, eb1, eb2, ea1, ea2)
            crossings = biquad_lane(w, _ENV + 6, _ENV + 7, lane, crossing, eb0, eb1, eb2, ea1, ea2)
            gait_now = (
                (gait_ms > walk_ms)
                & (crossings >= min_cross)
                & (crossings <= max_cross)
                & (gait_ms >= share * dyn_ms)
                & settled[i, d]
            )
            run = select(gait_now, w[_RUN, lane] + 1.0, 0.0)
            w[_RUN, lane] = run
            since = select(run < walk_enter, w[_SINCE, lane] + 1.0, 0.0)
            w[_SINCE, lane] = since
            w[_WALKING, lane] = select(since <= walk_hold, 1.0, 0.0)
            w[_GAIT, lane] = select(gait_now, 1.0, 0.0)
            w[_QUIET, lane] = select((dyn_ms < still_ms) & (tilt_lp < still_tilt), 1.0, 0.0)
            w[_VIGOROUS, lane] = select(dyn_ms > vigorous_ms, 1.0, 0.0)
        # The flags out, two to a loop (posture.kernels.jit: outputs written
        # from the lane loop would add overlap checks past LLVM's limit; so
        # would four in one loop, which need checks between each two of them).
        for lane in range(m):
            walking_out[i, base + np.uint64(lane)] = w[_WALKING, lane] != 0.0
            gait_out[i, base + np.uint64(lane)] = w[_GAIT, lane] != 0.0
        for lane in range(m):
            quiet_out[i, base + np.uint64(lane)] = w[_QUIET, lane] != 0.0
            vigorous_out[i, base + np.uint64(lane)] = w[_VIGOROUS, lane] != 0.0


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

    Two passes. The signals (vertical, tilt rate, squared dynamic
    acceleration) carry nothing from one sample to the next: they are
    computed first, sample by sample across all devices (each input row
    read in order, which the hardware prefetches), into a scratch laid out
    (blocks, n, 3, LANES) so that each lane block's signals are contiguous
    and its three rows a constant distance apart. Then the recursions run
    in lane blocks, laid out as the gravity kernel's
    (:mod:`posture.kernels.jit` says why): a block's state is copied into
    one small workspace allocated here (a constant shape), the block runs
    all its samples in a loop over its lanes that LLVM vectorises, and the
    state is copied back.

    Measured in the batched engine (1000 devices, 10-sample blocks, its
    calls alternating with the kernel before the lane blocks, thread CPU
    time): 1.9x-2.3x as fast with a gyroscope (7-9 ns per sample and device
    against 15-17), 1.75x without (the arc cosines, libm calls, stay
    scalar). The inputs arrive mostly from the L3 cache (the gravity
    kernel, just before, touches more than L2 holds): reading them block by
    block instead (90 rows of 256 bytes per block of 10 samples) ran at
    1.2x. Signals in a (3, n, D) scratch, three rows a run-time distance
    apart, needed overlap checks past LLVM's limit and left the lane loop
    scalar.
    """
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    signals = np.empty(((d_count + LANES - 1) // LANES, n, 3, LANES))
    if has_gyro:
        _gyro_signals(acc_g, gyr_dps, up_sensor, signals)
    else:
        _acc_only_signals(acc_g, up_sensor, prev_up, fresh, thresholds[8], signals)
    outputs = (walking_out, gait_out, quiet_out, vigorous_out)
    state = (gait_lp, envelope_lp, sign, walk_run, since_walk)
    coefficients = (gait_sos, envelope_sos, thresholds, samples)
    # Allocated here, so LLVM sees its shape as a constant.
    w = np.empty((_ROWS, LANES))
    for first in range(0, d_count, LANES):
        m = min(LANES, d_count - first)
        _copy_state(w, state, first, m, d_count, True)
        _block_samples(signals, settled, outputs, coefficients, w, first, m)
        _copy_state(w, state, first, m, d_count, False)


# Rows of activity_classify's lane-block workspace (each LANES values).
_STILL_RUN = 0
_LYING = 1
_CODE = 2  # one sample's activity code, copied out after the lane loop
_CLASSIFY_ROWS = 3


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
    samples; ``codes``: the Activity values UNKNOWN, UPRIGHT, MOVING, WALKING, LYING.

    In lane blocks of :data:`LANES` devices as :func:`activity_features`:
    the state and the codes as doubles (exact), the choices by
    :func:`~posture.kernels.jit.select`, so the lane loop vectorises. In the
    batched engine (1000 devices, 10-sample blocks, its calls alternating
    with the per-device loop before it, thread CPU time): 1.26-1.30x
    (3.1-3.2 ns per sample and device against 4.1). Most of what is left is
    reading the inputs; the whole state kept in a (blocks, rows, LANES)
    workspace so that each input row is read in order, sample by sample
    across all blocks, measured the same.
    """
    n = walking.shape[0]
    d_count = walking.shape[1]
    enter_deg, exit_deg = angles_deg[0], angles_deg[1]
    enter_run = float(lying_enter)
    unknown, upright_code, moving, walking_code, lying_code = (
        float(codes[0]),
        float(codes[1]),
        float(codes[2]),
        float(codes[3]),
        float(codes[4]),
    )
    # Allocated here, so LLVM sees its shape as a constant.
    w = np.empty((_CLASSIFY_ROWS, LANES))
    for first in range(0, d_count, LANES):
        m = min(LANES, d_count - first)
        # Column indices unsigned: no negative-index wrap-around (posture.kernels.jit).
        base = np.uint64(first)
        for lane in range(m):
            w[_STILL_RUN, lane] = still_run[base + np.uint64(lane)]
            w[_LYING, lane] = lying[base + np.uint64(lane)]
        for i in range(n):
            for lane in range(m):
                d = base + np.uint64(lane)
                incl = inclination_deg[i, d]
                upright = incl < enter_deg
                walks = walking[i, d] & upright
                still = quiet[i, d] & (not walks)
                run = select(still, w[_STILL_RUN, lane] + 1.0, 0.0)
                w[_STILL_RUN, lane] = run
                # Lying is entered after a still run far from upright, left
                # near upright or walking, and held in between.
                enter = (run >= enter_run) & (incl > enter_deg)
                leave = (incl < exit_deg) | walks
                lies = select(enter, 1.0, select(leave, 0.0, w[_LYING, lane]))
                w[_LYING, lane] = lies
                code = select(still & upright, upright_code, moving)
                code = select(lies != 0.0, lying_code, code)
                code = select(walks, walking_code, code)
                w[_CODE, lane] = select(settled[i, d], code, unknown)
            # Staged and copied out by a loop of its own (posture.kernels.jit).
            for lane in range(m):
                activity_out[i, base + np.uint64(lane)] = np.int8(w[_CODE, lane])
        for lane in range(m):
            still_run[base + np.uint64(lane)] = int(w[_STILL_RUN, lane])
            lying[base + np.uint64(lane)] = int(w[_LYING, lane])
