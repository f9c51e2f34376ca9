"""The engine's trunk angles of :mod:`posture.calibration` as one compiled pass.

:func:`~posture.calibration.angles_tcd` and
:func:`~posture.calibration.face_tilt_deg` (NumPy, the reference) build an
(n, 3, 3, D) temporary, reduce it, and mask the devices without a
calibration; here one loop over the samples with the devices innermost
computes each sample's flexion, lateral and inclination in registers and
writes them once. The arithmetic is the reference's in the same order (the
body components summed left to right, ``max(side, 1e-300)``, ``+ 0.0``
turning -0.0 into 0.0, degrees by one multiplication), so the results agree
to the last bits that ``atan2``/``asin`` may round differently (NumPy's own
implementations against the C library's).

What the compiler makes of it (counted the way ``lab/kernel_asm.py`` counts,
numba 0.68, AVX2 host): scalar code, as expected. ``atan2`` and ``asin`` are
calls into the C library, which LLVM's vectoriser cannot widen, so the device
loop runs one device at a time and the arithmetic around the calls is scalar
too (28 ``...sd`` instructions in :func:`angles_of_devices`, no packed ones,
no FMA). ``atan2`` is most of the time (about 20-30 ns of the 26-28 ns per
sample at 1000 devices).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels.jit import helper, kernel

__all__ = ["angles_of_device", "angles_of_devices"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_DEG = 180.0 / math.pi
_NEG_DEG = -180.0 / math.pi


@helper
def _calibrated(
    up: FloatArray,
    matrix: FloatArray,
    i: int,
    d: int,
    flexion_out: FloatArray,
    lateral_out: FloatArray,
    incl_out: FloatArray,
) -> None:
    """Sample ``i`` of device ``d`` under its calibration: flexion, lateral
    and the tilt from upright (degrees), as ``angles_tcd`` computes them."""
    u0 = up[i, 0, d]
    u1 = up[i, 1, d]
    u2 = up[i, 2, d]
    fwd = matrix[0, 0, d] * u0 + matrix[0, 1, d] * u1 + matrix[0, 2, d] * u2
    rgt = matrix[1, 0, d] * u0 + matrix[1, 1, d] * u1 + matrix[1, 2, d] * u2
    upc = matrix[2, 0, d] * u0 + matrix[2, 1, d] * u1 + matrix[2, 2, d] * u2
    side = math.sqrt(fwd * fwd + rgt * rgt)
    tilt = math.atan2(side, upc)
    # NaN side (a NaN up) gives a NaN tilt, so the floor's choice there is moot.
    scale = tilt * _NEG_DEG / (side if side > 1e-300 else 1e-300)
    flexion_out[i, d] = fwd * scale + 0.0
    lateral_out[i, d] = rgt * scale + 0.0
    incl_out[i, d] = tilt * _DEG


@kernel
def angles_of_devices(
    up: FloatArray,
    matrix: FloatArray,
    calibrated: BoolArray,
    flexion_out: FloatArray,
    lateral_out: FloatArray,
    incl_out: FloatArray,
) -> None:
    """Every device's angles of one block.

    ``up`` (n, 3, D) unit up-directions in sensor axes; ``matrix`` (3, 3, D)
    each device's calibration (rows forward, right, up); ``calibrated`` (D,).
    Fills the (n, D) outputs: flexion and lateral (degrees, NaN without a
    calibration) and the inclination (degrees: the tilt from the calibrated
    upright, or the back's tilt from vertical, ``asin(|up_z|)``, before one).
    """
    n = up.shape[0]
    d_count = up.shape[2]
    for i in range(n):
        for d in range(d_count):
            if calibrated[d]:
                _calibrated(up, matrix, i, d, flexion_out, lateral_out, incl_out)
            else:
                flexion_out[i, d] = math.nan
                lateral_out[i, d] = math.nan
                # A NaN stays NaN here as in np.minimum.
                z = abs(up[i, 2, d])
                if z > 1.0:
                    z = 1.0
                incl_out[i, d] = math.asin(z) * _DEG


@kernel
def angles_of_device(
    up: FloatArray,
    matrix: FloatArray,
    device: int,
    first: int,
    flexion_out: FloatArray,
    lateral_out: FloatArray,
    incl_out: FloatArray,
) -> None:
    """Device ``device``'s angles from sample ``first`` on, under its
    (new) calibration: rewrites rows ``first:`` of its column of the (n, D)
    outputs (shapes as in :func:`angles_of_devices`)."""
    for i in range(first, up.shape[0]):
        _calibrated(up, matrix, i, device, flexion_out, lateral_out, incl_out)
