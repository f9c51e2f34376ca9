"""The fall detector's per-sample work across devices as compiled passes.

:class:`~posture.falls.stage.FallStage` (NumPy, the reference) runs stage 0
(:func:`~posture.falls.history.derive_rows`), the ring write
(:meth:`~posture.falls.history.FallState.write`), the last-trigger cursor
and the screen's peak finding (:meth:`~posture.falls.screen.PeakScreen.peaks`
on :meth:`~posture.falls.history.FallState.magnitudes`) as a dozen block
operations; here they are two loops over the samples with the devices
innermost:

* :func:`fall_rows`: each sample's history row (``ax, ay, az, |a|, ux, uy,
  uz, gyro_stuck``) computed in float64 in the reference's order of terms and
  rounded once to float32, so the ring holds the same bits; written straight
  into each device's ring row; the saturation check against the previous
  gyroscope sample; the last sample at the trigger;
* :func:`ring_peaks`: the completed peaks of the screen's rows, read in the
  rings (the screen's rule: at the trigger, strictly above the ``merge``
  rows before that exist, at least the ``merge`` rows after), in the
  reference's order (sample, then device), and ``|a|`` (float64) of the
  screen's rows gathered for the devices with a peak only (the reference
  gathers every device with a trigger sample).

Only comparisons and the rounding the reference does: the rows and the peaks
are identical, not merely close. What follows a peak (its impulse, model
probability) and the per-device path stay in NumPy and Python.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import kernel

__all__ = ["fall_rows", "ring_peaks"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_MAG, _CLIP = 3, 7  # history columns (posture.falls.history.COLUMNS)


@kernel
def fall_rows(
    t_s: FloatArray,
    acc_g: FloatArray,
    up_sensor: FloatArray,
    gyr_dps: FloatArray,
    has_gyro: bool,
    cols: IntArray,
    gyro_clip_min_dps: float,
    trigger_g: float,
    ring: NDArray[np.float32],
    ring_t_s: FloatArray,
    seen: IntArray,
    prev_gyr_dps: FloatArray,
    last_trigger: IntArray,
) -> None:
    """Stage 0 and the ring write of one piece of ``k`` devices (``n <= R``).

    Inputs: ``t_s`` (n, k); ``acc_g``, ``up_sensor`` (n, 3, k); ``gyr_dps``
    (n, 3, k), read only when ``has_gyro``; ``cols`` (k,) the devices (state
    columns) of the input columns. State, updated: ``ring`` (R, 8, D)
    float32 and ``ring_t_s`` (R, D) (device ``d``'s sample ``s`` in row
    ``s % R``); ``seen`` (D,) += n; ``prev_gyr_dps`` (3, D) the last
    gyroscope sample (NaN: none); ``last_trigger`` (D,) the last sample whose
    float32 ``|a|`` is at ``trigger_g`` or above (a float32 value).
    """
    n = acc_g.shape[0]
    k = acc_g.shape[2]
    ring_rows = ring.shape[0]
    # Each device's ring row of the piece's first sample (one division per
    # device, not per sample).
    row0 = np.empty(k, dtype=np.int64)
    for j in range(k):
        row0[j] = seen[cols[j]] % ring_rows
    for i in range(n):
        for j in range(k):
            d = cols[j]
            r = row0[j] + i
            if r >= ring_rows:
                r -= ring_rows
            a0 = acc_g[i, 0, j]
            a1 = acc_g[i, 1, j]
            a2 = acc_g[i, 2, j]
            ring[r, 0, d] = np.float32(a0)
            ring[r, 1, d] = np.float32(a1)
            ring[r, 2, d] = np.float32(a2)
            mag = np.float32(math.sqrt((a0 * a0 + a1 * a1) + a2 * a2))
            ring[r, _MAG, d] = mag
            u0 = up_sensor[i, 0, j]
            u1 = up_sensor[i, 1, j]
            u2 = up_sensor[i, 2, j]
            norm = math.sqrt((u0 * u0 + u1 * u1) + u2 * u2)
            # NaN before an estimate, and x/0 as NumPy gives it (error_model numpy).
            ring[r, 4, d] = np.float32(u0 / norm)
            ring[r, 5, d] = np.float32(u1 / norm)
            ring[r, 6, d] = np.float32(u2 / norm)
            stuck = False
            if has_gyro:
                for c in range(3):
                    g = gyr_dps[i, c, j]
                    prev = gyr_dps[i - 1, c, j] if i > 0 else prev_gyr_dps[c, d]
                    # A saturated axis reads the same full-scale value sample after sample.
                    if abs(g) >= gyro_clip_min_dps and g == prev:
                        stuck = True
            ring[r, _CLIP, d] = np.float32(1.0) if stuck else np.float32(0.0)
            ring_t_s[r, d] = t_s[i, j]
            if np.float64(mag) >= trigger_g:
                last_trigger[d] = seen[d] + i
    for j in range(k):
        d = cols[j]
        seen[d] += n
        if has_gyro:
            for c in range(3):
                prev_gyr_dps[c, d] = gyr_dps[n - 1, c, j]


@kernel
def ring_peaks(
    ring: NDArray[np.float32],
    cols: IntArray,
    start: IntArray,
    first_row: IntArray,
    peak_row: IntArray,
    back: int,
    merge: int,
    trigger_g: float,
    mag_out: FloatArray,
    peak_at_out: IntArray,
    peak_col_out: IntArray,
) -> int:
    """The screen's rows of ``k`` devices and their completed peaks; returns how many.

    Row ``r`` is ``|a|`` (float64) of sample ``start[j] + r`` of device
    ``cols[j]`` (rows of samples not yet written, or before the stream, hold
    stale values; ``back + n + merge <= R``). Peaks are looked for at rows
    ``back .. back + n - 1`` from row ``max(first_row[j], peak_row[j])`` on:
    ``|a| >= trigger_g``, strictly larger than each of
    the ``merge`` rows before that exist (row ``>= first_row[j]``), at least
    as large as each of the ``merge`` rows after. Their (row, column) go to
    ``peak_at_out``, ``peak_col_out`` (room for n * k), by row then column;
    the columns of ``mag_out`` (back + n + merge, k) of the devices with a
    peak are filled with their rows (the others are not touched: only the
    peaks' neighbourhoods are read after).
    """
    rows, k = mag_out.shape
    ring_rows = ring.shape[0]
    row0 = np.empty(k, dtype=np.int64)  # ring row of each device's row 0 of mag
    for j in range(k):
        row0[j] = start[j] % ring_rows
    found = 0
    for r in range(back, rows - merge):
        for j in range(k):
            if r < first_row[j] or r < peak_row[j]:
                continue
            d = cols[j]
            at = row0[j] + r
            c = np.float64(ring[at - ring_rows if at >= ring_rows else at, _MAG, d])
            if not (c >= trigger_g):
                continue
            peak = True
            for p in range(max(r - merge, first_row[j]), r):
                at = row0[j] + p
                v = np.float64(ring[at - ring_rows if at >= ring_rows else at, _MAG, d])
                if not (v < c):  # NaN is no peak, as in the reference
                    peak = False
                    break
            if peak:
                for p in range(r + 1, r + merge + 1):
                    at = row0[j] + p
                    v = np.float64(ring[at - ring_rows if at >= ring_rows else at, _MAG, d])
                    if not (v <= c):
                        peak = False
                        break
            if peak:
                peak_at_out[found] = r
                peak_col_out[found] = j
                found += 1
    # The rows of the devices with a peak, for what is computed from them.
    filled = np.zeros(k, dtype=np.bool_)
    for q in range(found):
        j = peak_col_out[q]
        if filled[j]:
            continue
        filled[j] = True
        for r in range(rows):
            at = row0[j] + r
            mag_out[r, j] = np.float64(
                ring[at - ring_rows if at >= ring_rows else at, _MAG, cols[j]]
            )
    return found
