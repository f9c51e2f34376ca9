"""The engine's trunk angles of :mod:`posture.calibration` as one compiled pass.

:func:`~posture.calibration.angles_tcd` and
:func:`~posture.calibration.face_tilt_deg` (NumPy, the reference) build an
(n, 3, 3, D) temporary, reduce it, and mask the devices without a
calibration; here one loop over the samples with the devices innermost
computes each sample's flexion, lateral and inclination in registers and
writes them once. The arithmetic is the reference's in the same order (the
body components summed left to right, ``max(side, 1e-300)``, ``+ 0.0``
turning -0.0 into 0.0, degrees by one multiplication); ``atan2`` and ``asin``
are :mod:`posture.kernels.trig`'s (at most 1.6 and 2.4 ulp from exact, where
NumPy's C library functions are within 0.5), so the results agree with the
reference to a few ulp of the angle: 1.5e-14 degrees at most on
``bench engine``'s wearables.

The C library's ``atan2``/``asin`` were calls that LLVM's vectoriser cannot
widen: the device loop ran one device at a time (28 scalar instructions, 26
to 40 ns per sample at 1000 devices, most of it in ``atan2``). With
:mod:`~posture.kernels.trig`'s branch-free ones, and one ``atan2`` per sample
whether the device is calibrated or not (its arguments selected), the device
loop of :func:`angles_of_devices` vectorises: 64 packed ``ymm`` instructions
(four devices at a time) and the loop's scalar remainder, counted the way
``lab/kernel_asm.py`` counts (numba 0.68, LLVM 20) for this machine's AVX2
CPU and for ``NUMBA_CPU_NAME=haswell`` alike, no FMA (no fastmath). At
1000 devices that is 11-13 ns per sample against 27-41 ns with the C
library (2.5-3.2x in five runs, both kernels in one process, block by block
in turn, CPU time), and the whole batched engine 1.04-1.08x faster.
The square root is shared the same way (the side's, or ``cos_of_sin``'s
for ``asin``: one ``sqrt`` of a selected argument in the source): 1.08-1.10x
in the engine at 1000 devices (10.0-11.1 ns per sample against 10.7-12.2,
two runs, the calls alternating), the results unchanged to the bit. LLVM
still emits two square roots (it moves the select back through the
``sqrt``); what it saves is elsewhere in the loop (the matrix's up row
loaded for calibrated lanes only, one blend fewer); the outputs'
conditional expressions made selects alone ran as before.
:func:`angles_of_device` (one device's column after a capture) walks the
samples of one device and stays scalar; it runs once per capture.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from posture.kernels import trig
from posture.kernels.jit import helper, kernel, select

__all__ = ["angles_of_device", "angles_of_devices"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_DEG = 180.0 / math.pi
_NEG_DEG = -180.0 / math.pi


@helper
def _angles(
    up: FloatArray, matrix: FloatArray, calibrated: bool, i: int, d: int
) -> tuple[float, float, float]:
    """Sample ``i`` of device ``d``: flexion, lateral and inclination
    (degrees), under its calibration as ``angles_tcd`` computes them, or
    without one as ``face_tilt_deg`` (flexion and lateral NaN)."""
    u0 = up[i, 0, d]
    u1 = up[i, 1, d]
    u2 = up[i, 2, d]
    fwd = matrix[0, 0, d] * u0 + matrix[0, 1, d] * u1 + matrix[0, 2, d] * u2
    rgt = matrix[1, 0, d] * u0 + matrix[1, 1, d] * u1 + matrix[1, 2, d] * u2
    upc = matrix[2, 0, d] * u0 + matrix[2, 1, d] * u1 + matrix[2, 2, d] * u2
    # Without a calibration, asin(z) the way trig.asin computes it,
    # atan2(z, cos_of_sin(z)): both cases then share one atan2 and one
    # square root (the side's, or cos_of_sin's), the choices are selects,
    # and the device loop vectorises. An uncalibrated device's matrix may
    # hold anything; its numbers are discarded. A NaN z stays NaN here as in
    # np.minimum.
    z = select(abs(u2) > 1.0, 1.0, abs(u2))
    root = math.sqrt(select(calibrated, fwd * fwd + rgt * rgt, trig.cos2_of_sin(z)))
    tilt = trig.atan2(select(calibrated, root, z), select(calibrated, upc, root))
    # NaN side (a NaN up) gives a NaN tilt, so the floor's choice there is moot.
    scale = tilt * _NEG_DEG / select(root > 1e-300, root, 1e-300)
    flexion = select(calibrated, fwd * scale + 0.0, math.nan)
    lateral = select(calibrated, rgt * scale + 0.0, math.nan)
    return flexion, lateral, tilt * _DEG


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
    for i in range(up.shape[0]):
        for d in range(up.shape[2]):
            flexion, lateral, incl = _angles(up, matrix, calibrated[d], i, d)
            flexion_out[i, d] = flexion
            lateral_out[i, d] = lateral
            incl_out[i, d] = incl


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
        flexion, lateral, incl = _angles(up, matrix, True, i, device)
        flexion_out[i, device] = flexion
        lateral_out[i, device] = lateral
        incl_out[i, device] = incl
