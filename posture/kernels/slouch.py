"""The slouch detector of :mod:`posture.slouch` as compiled passes over the samples.

:class:`~posture.slouch.SlouchDetector` (NumPy, the reference) computes the
per-sample conditions (beyond, clear, counting, may start) as block array
operations and then steps the dwell timer only for the devices whose state
may change; the kernel does the same in two passes, with each device's own
rule (:class:`~posture.slouch.SlouchParams`):

* a screen over all devices (vectorised: two comparisons per sample) finds
  the devices whose state may change in the block: slouching, timing or
  with a count already, or beyond the threshold at some sample. Every
  other device is clear or in the hysteresis band, not counting, all
  through the block: it only moves its last time on;
* one loop over the samples with those devices innermost steps the dwell
  timer as the reference's per-device loop does.

The kernel lists the transitions (device, sample, started, raw duration) in
a buffer, and returns how many (instead of marking every sample: the
transitions are rare); the caller turns them into
:class:`~posture.slouch.SlouchTransition` objects, rounding as the reference
does. The arithmetic (the sums of intervals, the comparisons) is the
reference's, in the same order, so the results are identical, not just close.

Measured in the batched engine (``bench engine``'s wearables, 1000 devices,
10-sample blocks, about one device in nine busy; its calls alternating with
the single pass over every device before it, thread CPU time): 1.4x-1.6x
(5.6-7.0 ns per sample and device against 8.0-10.9). The busy devices'
loop is most of what is left: its reads are scattered across the rows. A
branch-free single pass in lane blocks of 32 devices (the gravity kernel's
layout, every decision a select) vectorised but ran at 0.94x the single
pass it replaced: every device then pays for every decision (about 30
instructions per device and sample, many of them widening and narrowing
the comparison masks), where the scalar loop's early exits are cheap and
well predicted. The screen's busy devices run the same scalar body, with
or without selects alike.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper, kernel

__all__ = ["slouch_steps"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Int8Array = NDArray[np.int8]
IntArray = NDArray[np.intp]


@helper
def _busy_devices(
    flexion_deg: FloatArray,
    lateral_deg: FloatArray,
    slouching: BoolArray,
    count_s: FloatArray,
    timing: BoolArray,
    threshold_deg: FloatArray,
    lateral_threshold_deg: FloatArray,
) -> IntArray:
    """The devices whose state may change in the block, in ascending order:
    slouching, timing or with a count at the start, or beyond at any sample.

    Any other device never counts (counting needs beyond), so each of its
    samples either is clear, which resets a count and timing that are zero
    and off already, or pauses: its state stays as it is but for the last
    time. (A count is 0.0 or a sum of positive intervals, never -0.0.)"""
    d_count = flexion_deg.shape[1]
    busy = np.empty(d_count, dtype=np.bool_)
    for d in range(d_count):
        busy[d] = slouching[d] | timing[d] | (count_s[d] != 0.0)
    for i in range(flexion_deg.shape[0]):
        for d in range(d_count):
            beyond = (flexion_deg[i, d] > threshold_deg[d]) | (
                abs(lateral_deg[i, d]) > lateral_threshold_deg[d]
            )
            busy[d] = busy[d] | beyond
    return np.flatnonzero(busy)


@kernel
def slouch_steps(
    t_s: FloatArray,
    flexion_deg: FloatArray,
    lateral_deg: FloatArray,
    activity: Int8Array,
    vigorous: BoolArray,
    slouching_out: BoolArray,
    transitions_out: FloatArray,
    slouching: BoolArray,
    count_s: FloatArray,
    timing: BoolArray,
    started_t_s: FloatArray,
    last_t_s: FloatArray,
    threshold_deg: FloatArray,
    hysteresis_deg: FloatArray,
    dwell_s: FloatArray,
    lateral_threshold_deg: FloatArray,
    while_walking: BoolArray,
    max_interval_s: float,
    codes: Int8Array,
) -> int:
    """``SlouchDetector.process`` for one block; returns the number of transitions.

    Inputs (n, D): times, angles (NaN while uncalibrated), activity codes,
    vigorous. Outputs: ``slouching_out`` (n, D), filled; ``transitions_out``
    (>= n * D, 4), its first rows (as many as returned) the transitions in
    time order: device, sample, 1.0 started or 0.0 ended, and the dwell count
    at a start or the seconds since the start at an end. State (D,),
    updated: ``slouching``, ``count_s``, ``timing``, ``started_t_s``,
    ``last_t_s``. Rule (D,): the :class:`~posture.slouch.SlouchParams`
    fields. ``codes``: the Activity values UPRIGHT, MOVING, WALKING, LYING.

    (Each device's samples in registers, the device loop outermost, measured
    slower: the (n, D) inputs are then read across rows.)
    """
    n = flexion_deg.shape[0]
    d_count = flexion_deg.shape[1]
    # Not slouching, unless a busy device's step below says so.
    for i in range(n):
        for d in range(d_count):
            slouching_out[i, d] = False
    busy = _busy_devices(
        flexion_deg, lateral_deg, slouching, count_s, timing, threshold_deg, lateral_threshold_deg
    )
    found = 0
    upright_code, moving_code, walking_code, lying_code = codes[0], codes[1], codes[2], codes[3]
    for i in range(n):
        for d in busy:
            t = t_s[i, d]
            interval = t - last_t_s[d]
            last_t_s[d] = t
            flexion = flexion_deg[i, d]
            lateral_abs = abs(lateral_deg[i, d])
            code = activity[i, d]
            walking = code == walking_code
            resetting = code == lying_code or (walking and not while_walking[d])
            clear = (
                (
                    flexion < threshold_deg[d] - hysteresis_deg[d]
                    and lateral_abs < lateral_threshold_deg[d] - hysteresis_deg[d]
                )
                or math.isnan(flexion)
                or resetting
            )
            if slouching[d]:
                if clear:
                    slouching[d] = False
                    timing[d] = False
                    count_s[d] = 0.0
                    transitions_out[found, 0] = d
                    transitions_out[found, 1] = i
                    transitions_out[found, 2] = 0.0
                    transitions_out[found, 3] = t - started_t_s[d]
                    found += 1
                slouching_out[i, d] = slouching[d]
                continue
            slouching_out[i, d] = False
            if clear:
                timing[d] = False
                count_s[d] = 0.0
                continue
            beyond = flexion > threshold_deg[d] or lateral_abs > lateral_threshold_deg[d]
            # Gait is vigorous by nature: where walking counts, it does not pause the count.
            walk_counts = walking and while_walking[d]
            upright = code == upright_code or walk_counts
            paused = vigorous[i, d] and not walk_counts
            counting = beyond and not resetting and not paused and (upright or code == moving_code)
            if not counting:
                continue  # paused
            if not timing[d]:
                # The first sample beyond starts the clock at zero.
                timing[d] = True
                count_s[d] = 0.0
            elif 0.0 < interval <= max_interval_s:
                count_s[d] += interval
            if upright and count_s[d] >= dwell_s[d] - 1e-9:
                slouching[d] = True
                started_t_s[d] = t
                transitions_out[found, 0] = d
                transitions_out[found, 1] = i
                transitions_out[found, 2] = 1.0
                transitions_out[found, 3] = count_s[d]
                found += 1
                slouching_out[i, d] = True
    # Every device's last time (the busy ones' too, which the loop left there).
    if n:
        for d in range(d_count):
            last_t_s[d] = t_s[n - 1, d]
    return found
