"""Window statistics for the fall detector, computed the same way in any block.

The detector keeps a short history of per-sample signals and, for each
block, looks at windows that reach back into it. Every function here copies
the windows it needs into fresh contiguous rows and reduces each row on its
own, so a window's result depends only on its samples, not on where the
block boundaries fell (no cumulative sums across blocks, no BLAS kernels
that may round differently for different lengths). That is what makes the
detector's findings identical for any split of the stream.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

__all__ = [
    "column_means",
    "dot3",
    "first_recovery",
    "hann_taps",
    "impulse_gs",
    "smoothed_peak",
    "window_means",
    "window_sds",
    "windows",
]

FloatArray = NDArray[np.float64]
IndexArray = NDArray[np.intp]


def windows(x: FloatArray, width: int, starts: IndexArray | None = None) -> FloatArray:
    """(k, width) contiguous copies of the windows ``x[s : s + width]``.

    Args:
        x: (n,) samples.
        width: window length in samples (1 <= width <= n).
        starts: window start indices (all ``n - width + 1`` windows if None).
    """
    view = sliding_window_view(x, width)
    return np.array(view if starts is None else view[starts], dtype=np.float64)


def window_means(x: FloatArray, width: int, starts: IndexArray | None = None) -> FloatArray:
    """(k,) means of the windows of ``x`` (see :func:`windows`)."""
    return windows(x, width, starts).sum(axis=1) / width


def column_means(rows: FloatArray) -> FloatArray:
    """(3,) means of the first three columns of ``rows`` (m, >= 3), m >= 1.

    Each column is copied into its own contiguous row and summed, exactly as
    :func:`window_means` sums one window of all ``m`` samples, in one call
    instead of three.
    """
    return np.asarray(np.ascontiguousarray(rows[:, :3].T).sum(axis=1) / rows.shape[0])


def window_sds(x: FloatArray, width: int, starts: IndexArray | None = None) -> FloatArray:
    """(k,) population standard deviations of the windows of ``x``."""
    win = windows(x, width, starts)
    dev = win - (win.sum(axis=1) / width)[:, None]
    return np.asarray(np.sqrt((dev * dev).sum(axis=1) / width))


def dot3(v: FloatArray, u: FloatArray) -> FloatArray:
    """Row-wise dot products of (..., 3) vectors with one (3,) vector.

    Element-wise on purpose: ``v @ u`` goes to BLAS, whose kernels may round
    differently for different numbers of rows.
    """
    return np.asarray(v[..., 0] * u[0] + v[..., 1] * u[1] + v[..., 2] * u[2])


def hann_taps(duration_s: float, sample_rate_hz: float) -> FloatArray:
    """Unit-gain Hann low-pass taps spanning ``duration_s`` (no zero end taps).

    A Hann window of length L has its -6 dB point near 1/L, so 0.2 s makes a
    5 Hz low-pass at any sample rate (at least one tap).
    """
    n = max(1, round(duration_s * sample_rate_hz))
    taps = np.hanning(n + 2)[1:-1]
    return np.asarray(taps / taps.sum())


def smoothed_peak(x: FloatArray, taps: FloatArray) -> float:
    """Largest value of ``x`` filtered causally by ``taps`` over its fully covered part.

    Args:
        x: (m,) samples, ``m >= len(taps)``.
        taps: (k,) FIR coefficients.
    """
    k = taps.shape[0]
    out_len = x.shape[0] - k + 1
    acc = np.zeros(out_len)
    # Shift-and-add in a fixed order: the same result wherever x came from.
    for j in range(k):
        acc += taps[k - 1 - j] * x[j : j + out_len]
    return float(acc.max())


def impulse_gs(mag_g: FloatArray, sample_rate_hz: float) -> float:
    """``∫ max(|a| - 1 g, 0) dt`` in g·s over the samples given (rectangle rule)."""
    excess = np.maximum(np.asarray(mag_g, dtype=np.float64) - 1.0, 0.0)
    return float(excess.sum()) / sample_rate_hz


def first_recovery(
    is_up: NDArray[np.bool_], mag_g: FloatArray, run: int, window_ends: int, motion_sd_g: float
) -> tuple[str, int] | None:
    """After a detection, the first sample that ends an upright run of ``run`` samples.

    Args:
        is_up: (m,) upright flags; the first ``run - 1`` samples only lead in.
        mag_g: (m,) ``|a|`` on the same samples.
        run: samples the patient must be upright (>= 1).
        window_ends: runs ending at offsets ``< window_ends`` (of the ends
            array, i.e. sample ``run - 1 + j``) fall in the cancel window.
        motion_sd_g: standard deviation of ``|a|`` over the run that counts as
            moving (walking), for a cancellation.

    Returns:
        ``("cancelled", j)`` for the first run inside the window with motion,
        else ``("rearmed", j)`` for the first run after the window, with ``j``
        the offset of the run's last sample minus ``run - 1``; or None.
    """
    ends = np.flatnonzero(sliding_window_view(is_up, run).all(axis=-1))
    if not ends.size:
        return None
    inside = ends[ends < window_ends]
    if inside.size:
        moving = np.flatnonzero(window_sds(mag_g, run, inside) >= motion_sd_g)
        if moving.size:
            return "cancelled", int(inside[moving[0]])
    after = ends[ends >= window_ends]
    return ("rearmed", int(after[0])) if after.size else None
