"""What the lane-block kernels share (:mod:`posture.kernels.gravity`,
:mod:`posture.kernels.activity`; :mod:`posture.kernels.jit` says what a lane
block is and why)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper

__all__ = ["biquad_lane"]


@helper
def biquad_lane(
    w: NDArray[np.float64],
    r0: int,
    r1: int,
    lane: int,
    x: float,
    b0: float,
    b1: float,
    b2: float,
    a1: float,
    a2: float,
) -> float:
    """One sample of a biquad (transposed direct form II, as ``scipy.signal.sosfilt``)
    whose two state values are workspace rows ``r0``, ``r1`` of ``lane``."""
    y = b0 * x + w[r0, lane]
    w[r0, lane] = b1 * x - a1 * y + w[r1, lane]
    w[r1, lane] = b2 * x - a2 * y
    return y
