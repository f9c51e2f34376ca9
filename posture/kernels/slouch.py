"""The slouch detector of :mod:`posture.slouch` as one compiled pass over the samples.

:class:`~posture.slouch.SlouchDetector` (NumPy, the reference) computes the
per-sample conditions (beyond, clear, counting, may start) as block array
operations and then steps the dwell timer only for the devices whose state
may change; here one loop over the samples with the devices innermost does
both, with each device's own rule (:class:`~posture.slouch.SlouchParams`).

The kernel lists the transitions (device, sample, started, raw duration) in
a buffer, and returns how many (instead of marking every sample: the
transitions are rare); the caller turns them into
:class:`~posture.slouch.SlouchTransition` objects, rounding as the reference
does. The arithmetic (the sums of intervals, the comparisons) is the
reference's, in the same order, so the results are identical, not just close.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import kernel

__all__ = ["slouch_steps"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Int8Array = NDArray[np.int8]


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
    found = 0
    upright_code, moving_code, walking_code, lying_code = codes[0], codes[1], codes[2], codes[3]
    for i in range(n):
        for d in range(d_count):
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
    return found
