"""Resample recorded IMU data to the rate a wearable would have sampled it at.

Datasets are recorded at 200-286 Hz; our wearables stream at 25-200 Hz. To
evaluate the engine as a wearable would feed it, the signals are low-pass
filtered and resampled, as the sensor's own digital low-pass filter and output
data rate would have done. Naive decimation (taking every k-th sample) would
alias impact energy and vibration into the band and overstate fall peaks.

Method: :func:`scipy.signal.resample_poly` (polyphase up-by-``p``,
down-by-``q`` with the rate ratio ``p/q`` as an exact small fraction) with our
own linear-phase FIR designed by the Kaiser window method:

* passband flat (ripple <= 0.1 %) up to ``passband_fraction`` (default 0.8) of
  the *output* Nyquist frequency, e.g. 0-20 Hz at 50 Hz;
* stopband attenuated >= 60 dB from the output Nyquist frequency on, so
  nothing above it folds back into the band (no aliasing).

``resample_poly`` compensates the filter's delay (zero phase, offline use),
and the signal is extended beyond its ends by a straight line (``padtype=
"line"``) so that the 1 g of gravity does not taper toward zero at the edges.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
import scipy.signal
from numpy.typing import ArrayLike, NDArray

__all__ = ["anti_alias_taps", "rate_ratio", "resample_imu", "resampled_times"]

_STOPBAND_ATTENUATION_DB = 60.0
_MAX_DENOMINATOR = 1000
_RATIO_TOLERANCE = 1e-6


def rate_ratio(from_hz: float, to_hz: float) -> tuple[int, int]:
    """``(up, down)`` with ``up / down == to_hz / from_hz`` as a small exact fraction.

    Raises:
        ValueError: a rate is not positive and finite, or the ratio is not a
            fraction with a denominator <= 1000 (within 1e-6 relative).
    """
    for label, rate in (("from_hz", from_hz), ("to_hz", to_hz)):
        if not (np.isfinite(rate) and rate > 0):
            raise ValueError(f"{label} must be a positive finite rate in Hz, got {rate!r}")
    exact = to_hz / from_hz
    frac = Fraction(exact).limit_denominator(_MAX_DENOMINATOR)
    if abs(float(frac) - exact) > _RATIO_TOLERANCE * exact:
        raise ValueError(
            f"cannot resample {from_hz} Hz -> {to_hz} Hz: ratio {exact!r} is not a "
            f"fraction with denominator <= {_MAX_DENOMINATOR}"
        )
    return frac.numerator, frac.denominator


@lru_cache(maxsize=32)
def anti_alias_taps(up: int, down: int, passband_fraction: float = 0.8) -> NDArray[np.float64]:
    """Kaiser-window low-pass FIR for ``resample_poly(x, up, down, window=taps)``.

    The filter runs at ``up`` times the input rate. Its passband ends at
    ``passband_fraction`` of the output (or input, if lower) Nyquist frequency and its
    stopband (>= 60 dB) starts at that Nyquist frequency. Unit DC gain:
    ``resample_poly`` itself multiplies the taps by ``up``.

    Returns:
        (numtaps,) float64 filter coefficients, odd length (linear phase, type I).

    Raises:
        ValueError: ``passband_fraction`` not in (0, 1), or up/down < 1.
    """
    if not 0.0 < passband_fraction < 1.0:
        raise ValueError(f"passband_fraction must be in (0, 1), got {passband_fraction!r}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got {up}, {down}")
    # Frequencies normalised to the Nyquist frequency of the upsampled signal.
    stop = 1.0 / max(up, down)
    passband = passband_fraction * stop
    numtaps, beta = scipy.signal.kaiserord(_STOPBAND_ATTENUATION_DB, stop - passband)
    numtaps |= 1  # odd: symmetric type I filter, integer group delay
    taps = scipy.signal.firwin(numtaps, (passband + stop) / 2.0, window=("kaiser", beta))
    return np.asarray(taps, dtype=np.float64)


def resample_imu(
    data: ArrayLike,
    from_hz: float,
    to_hz: float,
    *,
    passband_fraction: float = 0.8,
) -> NDArray[np.float64]:
    """Anti-alias filter and resample IMU signals from ``from_hz`` to ``to_hz``.

    Args:
        data: (n,) or (n, k) samples at ``from_hz`` (any unit; axis 0 is time).
        from_hz: native sampling rate in Hz.
        to_hz: wanted sampling rate in Hz.
        passband_fraction: passband edge as a fraction of the output Nyquist frequency.

    Returns:
        (m,) or (m, k) float64 samples at ``to_hz``, ``m = ceil(n * to_hz / from_hz)``;
        output sample ``j`` is at time ``t0 + j / to_hz`` (see :func:`resampled_times`).
        Same rate in and out returns a copy unfiltered.

    Raises:
        ValueError: data not 1-D/2-D, empty or not finite; bad rates (see :func:`rate_ratio`).
    """
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise ValueError(f"data must be (n,) or (n, k) with n >= 1, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("data contains NaN or inf; fill or split gaps before resampling")
    up, down = rate_ratio(from_hz, to_hz)
    if up == down:
        return arr.copy()
    taps = anti_alias_taps(up, down, passband_fraction)
    out = scipy.signal.resample_poly(arr, up, down, axis=0, window=taps, padtype="line")
    return np.asarray(out, dtype=np.float64)


def resampled_times(n_out: int, to_hz: float, t0_s: float = 0.0) -> NDArray[np.float64]:
    """(n_out,) sample times in seconds of :func:`resample_imu` output starting at ``t0_s``."""
    if n_out < 0:
        raise ValueError(f"n_out must be >= 0, got {n_out}")
    return t0_s + np.arange(n_out, dtype=np.float64) / float(to_hz)
