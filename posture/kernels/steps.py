"""A block's entry checks (:mod:`posture.steps`) as one compiled pass over the samples.

:func:`posture.steps.block_steps` (NumPy, the reference) makes one array
operation per check: which devices' samples are all finite, the time steps,
which steps break the stream (a gap, a clock going back, a device's first
sample) and how many. Here one loop over the samples, with the devices
innermost (the arrays' last axis), computes all of them at once. The
arithmetic is the reference's (the same subtraction, the same comparisons),
so the results are identical, not just close.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import kernel

__all__ = ["block_steps"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@kernel
def block_steps(
    t_s: FloatArray,
    acc_g: FloatArray,
    gyr_dps: FloatArray,
    last_t_s: FloatArray,
    max_interval_s: float,
    finite_out: BoolArray,
    dt_out: FloatArray,
    breaks_out: BoolArray,
    fresh_out: BoolArray,
) -> int:
    """``posture.steps.block_steps`` for one block; returns the number of breaks.

    Inputs: ``t_s`` (n, D) seconds; ``acc_g`` (n, 3, D); ``gyr_dps`` (n, 3, D),
    or (0, 3, D) without a gyroscope; ``last_t_s`` (D,) each device's previous
    sample time (NaN before its first). Outputs, filled: ``finite_out`` (D,)
    whether all of the device's values are finite; ``dt_out`` (n, D) the time
    steps (inf at a device's first sample); ``breaks_out`` (n, D) the steps
    that break the stream (> ``max_interval_s``, <= 0, or a first sample);
    ``fresh_out`` (D,) whether sample 0 is the device's first.
    """
    n = t_s.shape[0]
    d_count = t_s.shape[1]
    with_gyro = gyr_dps.shape[0] == n
    # x * 0.0 is 0 for every finite x and NaN for NaN or inf, and a sum of
    # zeros cannot overflow: `poison` stays 0 exactly while all is finite,
    # with no branch in the loop (the device loop vectorises).
    poison = np.zeros(d_count)
    breaks = 0
    for i in range(n):
        for d in range(d_count):
            t = t_s[i, d]
            p = t * 0.0 + acc_g[i, 0, d] * 0.0 + acc_g[i, 1, d] * 0.0 + acc_g[i, 2, d] * 0.0
            poison[d] += p
        if with_gyro:
            for d in range(d_count):
                poison[d] += (
                    gyr_dps[i, 0, d] * 0.0 + gyr_dps[i, 1, d] * 0.0 + gyr_dps[i, 2, d] * 0.0
                )
        if i == 0:
            for d in range(d_count):
                step = t_s[0, d] - last_t_s[d]
                fresh = math.isnan(step)
                fresh_out[d] = fresh
                if fresh:
                    step = math.inf
                broken = fresh or step > max_interval_s or step <= 0.0
                dt_out[0, d] = step
                breaks_out[0, d] = broken
                breaks += broken
        else:
            for d in range(d_count):
                step = t_s[i, d] - t_s[i - 1, d]
                broken = (step > max_interval_s) | (step <= 0.0)
                dt_out[i, d] = step
                breaks_out[i, d] = broken
                breaks += broken
    for d in range(d_count):
        finite_out[d] = poison[d] == 0.0
    if n == 0:
        fresh_out[:] = False
    return breaks
