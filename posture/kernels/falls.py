"""The fall detector's per-block work across devices as compiled passes.

:class:`~posture.falls.stage.FallStage` (NumPy, the reference) runs stage 0
(:func:`~posture.falls.history.derive_rows`), the ring write
(:meth:`~posture.falls.history.FallState.write`), the last-trigger cursor,
the screen (:meth:`~posture.falls.screen.PeakScreen.screen` on
:meth:`~posture.falls.history.FallState.magnitudes`) and the cursor moves of
the devices it spares as some thirty block operations; here they are two
loops with the devices innermost, and a block in which no device could open
a candidate ends there:

* :func:`fall_rows`: each sample's history row (``ax, ay, az, |a|, ux, uy,
  uz, gyro_stuck``) computed in float64 in the reference's order of terms and
  rounded once to float32, so the ring holds the same bits; written straight
  into each device's ring row; the saturation check against the previous
  gyroscope sample; the last sample at the trigger. A gateway tick of the
  whole ward (every device at one ring row) runs vectorised across devices;
  other pieces device by device through their columns;
* :func:`fall_screen`: per device, read in the ring, the completed peaks of
  the piece (the screen's rule: at the trigger, strictly above the ``merge``
  samples before that exist, at least the ``merge`` samples after) and, for
  each until one passes, what the screen decides on: the impulse, the Hann
  low-passed peak, the model's probability; which devices take the
  per-device path, and the peak cursor of every other one moved on.

Stage 0 and the peaks are only comparisons and the rounding the reference
does: identical, not merely close. The screen's features are sums in
sample order where NumPy may sum pairwise; the screen compares them with
its relative margin of 1e-6, far above that rounding, and the per-device
path decides exactly, so the findings are the same.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper, kernel, select

__all__ = ["ScreenParams", "fall_rows", "fall_screen"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

ScreenParams = tuple[IntArray, FloatArray, FloatArray, IntArray, FloatArray]
"""What :func:`fall_screen` needs of one configuration: windows, limits, low-pass
taps, model feature codes, model terms (built by
:class:`posture.falls.screen.PeakScreen`; layout in :func:`fall_screen`)."""

_MAG, _CLIP = 3, 7  # history columns (posture.falls.history.COLUMNS)


@helper
def _in_step(cols: IntArray, seen: IntArray) -> bool:
    """Whether the piece is the state's first ``k`` devices, in order, all at
    one ring row (a gateway tick of the whole ward: the state may have room
    for more devices than are in use)."""
    k = cols.shape[0]
    if k == 0:
        return False  # nothing to write (and no seen[0] to read)
    for j in range(k):  # noqa: SIM110 (numba compiles no generator into all())
        if cols[j] != j or seen[j] != seen[0]:
            return False
    return True


@helper
def _rows_in_step(
    t_by_device: FloatArray,
    acc_g: FloatArray,
    up_sensor: FloatArray,
    gyr_dps: FloatArray,
    has_gyro: bool,
    gyro_clip_min_dps: float,
    trigger_g: float,
    ring: NDArray[np.float32],
    ring_t_s: FloatArray,
    seen: IntArray,
    prev_gyr_dps: FloatArray,
    last_trigger: IntArray,
    columns: tuple[int, int],
) -> None:
    """:func:`fall_rows` of a piece :func:`_in_step`, for its columns
    ``first ... first + m - 1`` (``columns``: every column of the piece, or
    one lane block of them in a pass that fuses stages): each sample's ring
    row is one for every device, so the loops over devices read and write
    consecutive columns (unsigned indices, no branches: LLVM vectorises them);
    a loop per group of ring columns keeps the run-time overlap checks few."""
    col0, m = columns
    base = np.uint64(col0)
    n = acc_g.shape[0]
    ring_rows = ring.shape[0]
    first = seen[base]
    row0 = first % ring_rows
    for i in range(n):
        r = row0 + i
        if r >= ring_rows:
            r -= ring_rows
        ru = np.uint64(r)
        at = first + i
        for lane in range(m):
            d = base + np.uint64(lane)
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            ring[ru, 0, d] = np.float32(a0)
            ring[ru, 1, d] = np.float32(a1)
            ring[ru, 2, d] = np.float32(a2)
            mag = np.float32(math.sqrt((a0 * a0 + a1 * a1) + a2 * a2))
            ring[ru, _MAG, d] = mag
            last_trigger[d] = select(float(mag) >= trigger_g, at, last_trigger[d])
        for lane in range(m):
            d = base + np.uint64(lane)
            u0 = up_sensor[i, 0, d]
            u1 = up_sensor[i, 1, d]
            u2 = up_sensor[i, 2, d]
            norm = math.sqrt((u0 * u0 + u1 * u1) + u2 * u2)
            ring[ru, 4, d] = np.float32(u0 / norm)
            ring[ru, 5, d] = np.float32(u1 / norm)
            ring[ru, 6, d] = np.float32(u2 / norm)
        if has_gyro:
            prev = prev_gyr_dps if i == 0 else gyr_dps[i - 1]
            for lane in range(m):
                d = base + np.uint64(lane)
                g0 = gyr_dps[i, 0, d]
                g1 = gyr_dps[i, 1, d]
                g2 = gyr_dps[i, 2, d]
                stuck = (
                    ((abs(g0) >= gyro_clip_min_dps) & (g0 == prev[0, d]))
                    | ((abs(g1) >= gyro_clip_min_dps) & (g1 == prev[1, d]))
                    | ((abs(g2) >= gyro_clip_min_dps) & (g2 == prev[2, d]))
                )
                ring[ru, _CLIP, d] = np.float32(select(stuck, 1.0, 0.0))
        else:
            for lane in range(m):
                ring[ru, _CLIP, base + np.uint64(lane)] = np.float32(0.0)
        # Strided loads (the times arrive device first): a loop of its own,
        # which keeps the ones above vectorised.
        for lane in range(m):
            d = base + np.uint64(lane)
            ring_t_s[ru, d] = t_by_device[d, i]
    for lane in range(m):
        seen[base + np.uint64(lane)] = first + n
    if has_gyro:
        for c in range(3):
            for lane in range(m):
                d = base + np.uint64(lane)
                prev_gyr_dps[c, d] = gyr_dps[n - 1, c, d]


@kernel
def fall_rows(
    t_by_device: FloatArray,
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

    Inputs: ``t_by_device`` (k, n) the sample times, device first (the
    engine's blocks arrive that way: no copy); ``acc_g``, ``up_sensor`` (n, 3, k); ``gyr_dps``
    (n, 3, k), read only when ``has_gyro``; ``cols`` (k,) the devices (state
    columns) of the input columns. State, updated: ``ring`` (R, 8, D)
    float32 and ``ring_t_s`` (R, D) (device ``d``'s sample ``s`` in row
    ``s % R``); ``seen`` (D,) += n; ``prev_gyr_dps`` (3, D) the last
    gyroscope sample (NaN: none); ``last_trigger`` (D,) the last sample whose
    float32 ``|a|`` is at ``trigger_g`` or above (a float32 value).

    The whole ward in step (the devices in use, in order, at one ring row:
    a gateway tick) takes a vectorised path (:func:`_rows_in_step`); any other
    piece goes sample by sample through ``cols``.
    """
    if _in_step(cols, seen):
        _rows_in_step(
            t_by_device,
            acc_g,
            up_sensor,
            gyr_dps,
            has_gyro,
            gyro_clip_min_dps,
            trigger_g,
            ring,
            ring_t_s,
            seen,
            prev_gyr_dps,
            last_trigger,
            (0, acc_g.shape[2]),
        )
        return
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
            ring_t_s[r, d] = t_by_device[j, i]
            if np.float64(mag) >= trigger_g:
                last_trigger[d] = seen[d] + i
    for j in range(k):
        d = cols[j]
        seen[d] += n
        if has_gyro:
            for c in range(3):
                prev_gyr_dps[c, d] = gyr_dps[n - 1, c, j]


# Layout of fall_screen's ``windows`` (samples) and ``limits`` (built by
# posture.falls.screen.PeakScreen, which names them).
_W_MERGE, _W_BACK, _W_IMP, _W_IMP_SHORT, _W_BEFORE, _W_LP_LO, _W_LP_HI = range(7)
_L_TRIGGER, _L_IMPULSE, _L_SOFT_LP, _L_SOFT_IMPULSE, _L_HARD_IMPULSE, _L_P_MIN, _L_RATE = range(7)
_L_BIAS = 7
# Model feature codes (posture.falls.model.FEATURE_NAMES, in that order).
_F_LOG_IMPULSE, _F_LOG_IMPULSE_SHORT, _F_PEAK_LP, _F_MIN_BEFORE = range(4)


@helper
def _mag(ring: NDArray[np.float32], d: int, row0: int, r: int) -> float:
    """``|a|`` (float64) of row ``r`` of a device whose row 0 is ring row ``row0``."""
    at = row0 + r
    ring_rows = ring.shape[0]
    return np.float64(ring[at - ring_rows if at >= ring_rows else at, _MAG, d])


@helper
def _excess_sum(ring: NDArray[np.float32], d: int, row0: int, lo: int, hi: int) -> float:
    """Sum of ``max(|a| - 1, 0)`` over rows ``lo..hi`` (the impulse before ``/ rate``)."""
    total = 0.0
    for p in range(lo, hi + 1):
        total += max(_mag(ring, d, row0, p) - 1.0, 0.0)
    return total


@helper
def _peak_could_open(
    ring: NDArray[np.float32],
    d: int,
    row0: int,
    r: int,
    screen: ScreenParams,
    scratch: FloatArray,
) -> bool:
    """PeakScreen.judge for one peak at row ``r`` of a device old enough for
    its look-back; ``scratch`` at least ``2 * outputs + taps - 1`` values
    (the low-pass's segment and outputs)."""
    windows, limits, taps, model_features, model_terms = screen
    rate = limits[_L_RATE]
    impulse = _excess_sum(ring, d, row0, r - windows[_W_IMP], r + windows[_W_IMP]) / rate
    # Most walking steps end here, on their impulse.
    if not (impulse >= limits[_L_IMPULSE]):
        return False
    # The Hann low-passed peak: each output a sum in the reference's order
    # of taps (the same bits as PeakScreen._smoothed_peaks). The segment is
    # copied out of the ring first; then each tap is one loop across the
    # outputs, consecutive and unsigned, which LLVM vectorises (the outputs'
    # sums stay apart: no reassociation).
    t = taps.shape[0]
    outputs = windows[_W_LP_LO] + windows[_W_LP_HI] + 1
    seg0 = r - windows[_W_LP_LO] - t + 1
    acc = scratch[:outputs]
    seg = scratch[outputs : 2 * outputs + t - 1]
    for p in range(outputs + t - 1):
        seg[np.uint64(p)] = _mag(ring, d, row0, seg0 + p)
    for q in range(outputs):
        acc[np.uint64(q)] = 0.0
    for j in range(t):
        tap = taps[np.uint64(t - 1 - j)]
        for q in range(outputs):
            acc[np.uint64(q)] += tap * seg[np.uint64(j + q)]
    lp = -math.inf
    for q in range(outputs):
        lp = max(lp, acc[np.uint64(q)])
    if lp >= limits[_L_SOFT_LP] and impulse >= limits[_L_SOFT_IMPULSE]:
        return True  # could be a soft impact
    if impulse >= limits[_L_HARD_IMPULSE]:
        return True  # a hard one
    z = limits[_L_BIAS]
    for f in range(model_features.shape[0]):
        code = model_features[f]
        if code == _F_LOG_IMPULSE:
            x = math.log(max(impulse, 1e-300))
        elif code == _F_LOG_IMPULSE_SHORT:
            short = _excess_sum(ring, d, row0, r - windows[_W_IMP_SHORT], r + windows[_W_IMP_SHORT])
            x = math.log(max(short / rate, 1e-3))
        elif code == _F_PEAK_LP:
            x = lp
        else:
            x = math.inf
            for p in range(r - windows[_W_BEFORE], r):
                x = min(x, _mag(ring, d, row0, p))
        z += (x - model_terms[0, f]) / model_terms[1, f] * model_terms[2, f]
    return 0.5 * (1.0 + math.tanh(0.5 * z)) >= limits[_L_P_MIN]  # fall-grade


@helper
def _device_could_open(
    ring: NDArray[np.float32],
    d: int,
    first: int,
    peak_next: int,
    n: int,
    screen: ScreenParams,
    scratch: FloatArray,
) -> bool:
    """Whether one of device ``d``'s peaks completed by this piece (samples
    ``first .. first + n - 1``) could open a candidate (PeakScreen.screen)."""
    windows, limits = screen[0], screen[1]
    merge, back = windows[_W_MERGE], windows[_W_BACK]
    # Row r is sample start + r: the look-back of the earliest possible peak
    # (merge before the piece) up to the piece's last sample.
    start = first - merge - back
    row0 = start % ring.shape[0]
    first_row = max(-start, 0)  # rows before the stream are no neighbours
    trigger = limits[_L_TRIGGER]
    for r in range(max(back, first_row, peak_next - start), back + n):
        c = _mag(ring, d, row0, r)
        if not (c >= trigger):
            continue
        # Strictly above the merge rows before (that exist), at least the
        # merge after. The nearest two first: most trigger-level rows are on
        # a peak's flanks and fail there, not after a whole window (the same
        # comparisons, in another order).
        lo = max(r - merge, first_row)
        if lo < r and not (_mag(ring, d, row0, r - 1) < c):
            continue
        if not (_mag(ring, d, row0, r + 1) <= c):
            continue
        peak = True
        for p in range(lo, r - 1):
            if not (_mag(ring, d, row0, p) < c):
                peak = False
                break
        if peak:
            for p in range(r + 2, r + merge + 1):
                if not (_mag(ring, d, row0, p) <= c):
                    peak = False
                    break
        if not peak:
            continue
        if first_row > 0:
            return True  # a stream younger than the look-back passes on any peak
        if _peak_could_open(ring, d, row0, r, screen, scratch):
            return True
    return False


@kernel
def fall_screen(
    ring: NDArray[np.float32],
    cols: IntArray,
    seen: IntArray,
    peak_next: IntArray,
    last_trigger: IntArray,
    busy: NDArray[np.bool_],
    n: int,
    screen: ScreenParams,
    need: NDArray[np.bool_],
) -> int:
    """Which of ``k`` devices take the per-device path after a piece of ``n``
    samples (already in the rings); every other device's peak cursor moved on.
    Returns how many need the path.

    Device ``cols[j]`` needs it when ``need[j]`` is already set (every
    device does: an observer, or no screen), when it is ``busy`` (a pending candidate or an
    active fall), or when it has a trigger sample since its cursor
    (``last_trigger >= peak_next``) and one of its completed peaks could open
    a candidate (:meth:`posture.falls.screen.PeakScreen.screen`: the same
    peaks, features and margins; a stream younger than the look-back passes
    on any peak). ``need`` (k,) is set for those. Any other device's
    ``peak_next`` moves past its last sample whose ``merge`` samples after
    are in, as if the per-device path had dropped its peaks.

    ``ring`` (R, 8, D) float32, ``seen`` (D,) (after the piece),
    ``peak_next``, ``last_trigger`` (D,) and ``busy`` (D,): the state;
    ``screen`` (:data:`ScreenParams`): ``windows`` (7,) samples (merge,
    look-back, impulse half-window, short impulse half-window, free-fall
    look-back, low-pass span before and after), ``limits`` (8,) (trigger,
    impulse, soft low-passed peak, soft impulse, hard impulse, probability,
    all lowered by the screen's margin; the sample rate in Hz; the model's
    bias), ``taps`` the Hann low-pass,
    ``model_features`` (F,) feature codes and ``model_terms`` (3, F) their
    mean, scale and weight.
    """
    windows = screen[0]
    merge = windows[_W_MERGE]
    outputs = windows[_W_LP_LO] + windows[_W_LP_HI] + 1
    scratch = np.empty(2 * outputs + screen[2].shape[0] - 1)
    count = 0
    for j in range(cols.shape[0]):
        d = cols[j]
        if not need[j] and not busy[d]:
            first = seen[d] - n
            if last_trigger[d] >= peak_next[d] and _device_could_open(
                ring, d, first, peak_next[d], n, screen, scratch
            ):
                need[j] = True
            elif seen[d] - 1 - merge >= peak_next[d]:
                # What the per-device path would have done: no peak opened anything.
                peak_next[d] = seen[d] - merge
        if need[j] or busy[d]:
            need[j] = True
            count += 1
    return count
