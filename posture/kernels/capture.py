"""The calibration capture's per-sample runs as one compiled pass.

:meth:`~posture.capture.CalibrationCapture.process` (NumPy, the reference)
finds each sample's quiet test (accelerometer near its low-pass and near
1 g, gyroscope slow), the length of the quiet run and of the walking bout
of the devices still waiting, as a dozen block operations
(:func:`posture.rotation.dot_tcd`, :func:`posture.runs.run_length`);
:func:`capture_runs` does it in one loop over the samples with the devices
innermost. The squared norms are summed in the reference's order and the
runs are counts, so the results are identical. What follows (the candidates,
resolving a device's captures, the bout sums) stays in NumPy and Python: it
runs for the few devices where something may happen.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import kernel

__all__ = ["capture_runs"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


@kernel
def capture_runs(
    acc_g: FloatArray,
    gyr_dps: FloatArray,
    has_gyro: bool,
    acc_dev2_g2: FloatArray,
    walking: BoolArray,
    waiting: BoolArray,
    limits: FloatArray,
    still_run: IntArray,
    bout_run: IntArray,
    run_out: IntArray,
    bout_out: IntArray,
) -> None:
    """Quiet-run and walking-bout lengths (n, D) of one block.

    Inputs: ``acc_g``, ``gyr_dps`` (n, 3, D) (the gyroscope read only when
    ``has_gyro``); ``acc_dev2_g2`` (n, D) squared distance of the
    accelerometer from its low-pass; ``walking`` (n, D); ``waiting`` (D,)
    devices whose walking bouts count; ``limits`` (still acc², lower and
    upper bound of |a|², still gyr²); ``still_run``, ``bout_run`` (D,) the
    runs carried from the block before (not changed). Outputs, filled:
    ``run_out`` the quiet run ending at each sample, ``bout_out`` the
    walking bout (0 for devices not waiting).
    """
    n = acc_g.shape[0]
    k = acc_g.shape[2]
    still_acc2, lo2, hi2, still_gyr2 = limits[0], limits[1], limits[2], limits[3]
    for i in range(n):
        for d in range(k):
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            mag2 = (a0 * a0 + a1 * a1) + a2 * a2
            quiet = (acc_dev2_g2[i, d] < still_acc2) & (mag2 > lo2) & (mag2 < hi2)
            if has_gyro:
                g0 = gyr_dps[i, 0, d]
                g1 = gyr_dps[i, 1, d]
                g2 = gyr_dps[i, 2, d]
                quiet = quiet & (((g0 * g0 + g1 * g1) + g2 * g2) < still_gyr2)
            before = still_run[d] if i == 0 else run_out[i - 1, d]
            run_out[i, d] = before + 1 if quiet else 0
            walks = walking[i, d] & waiting[d]
            before = bout_run[d] if i == 0 else bout_out[i - 1, d]
            bout_out[i, d] = before + 1 if walks else 0
