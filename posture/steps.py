"""What the engine checks of a block before its numerics: finiteness and time steps.

For every device of a block, :func:`block_steps` finds whether its samples
are all finite (a block with a NaN or inf is dropped for that device), the
step from each sample's time to the previous one's, and the steps that break
the stream: longer than the gap limit (lost packets), zero or backwards (the
wearable's clock restarted), or the first sample a device ever sent. The
NumPy code here is the tested reference; :mod:`posture.kernels.steps` does
the same in one compiled pass (``POSTURE_KERNEL`` picks, as for the
engine's other kernels).

Arrays are laid out as the engine's core takes them: time first, device
last (``t_s`` (n, D), ``acc_g`` (n, 3, D)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from posture.kernels import Kernel

__all__ = ["BlockSteps", "block_steps"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IndexArray = NDArray[np.intp]

_NO_GYRO = np.zeros((0, 3, 0))


@dataclass(frozen=True, slots=True)
class BlockSteps:
    """A block's entry checks, per device (column).

    ``finite`` (D,) whether every value of the device's block is finite;
    ``dt_s`` (n, D) seconds from the previous sample (inf at a device's first
    sample); ``breaks`` (n, D) the steps that break the stream (longer than
    the gap limit, zero or backwards, or a first sample); ``fresh`` (D,)
    whether sample 0 is the device's first; ``break_count`` the number of
    breaks (0 in the usual block: nothing more to look at).
    """

    finite: BoolArray
    dt_s: FloatArray
    breaks: BoolArray
    fresh: BoolArray
    break_count: int

    def columns(self, keep: IndexArray) -> BlockSteps:
        """The checks of the devices (columns) ``keep`` only, in that order."""
        breaks = self.breaks[:, keep]
        return BlockSteps(
            self.finite[keep],
            self.dt_s[:, keep],
            breaks,
            self.fresh[keep],
            int(np.count_nonzero(breaks)),
        )


def block_steps(
    t_s: FloatArray,
    acc_g: FloatArray,
    gyr_dps: FloatArray | None,
    last_t_s: FloatArray,
    max_interval_s: float,
    kernel: Kernel,
) -> BlockSteps:
    """The checks of one block of ``n`` samples of ``D`` devices.

    Args:
        t_s: (n, D) sample times in seconds, each device on its own clock.
        acc_g: (n, 3, D) accelerometer in g.
        gyr_dps: (n, 3, D) gyroscope in °/s, or None.
        last_t_s: (D,) each device's previous sample time (NaN before any).
        max_interval_s: the longest step that is no gap.
        kernel: NumPy (the reference) or the compiled pass.

    Shapes are the caller's to check (the compiled pass does not).
    """
    n, d = t_s.shape
    if kernel is Kernel.COMPILED:
        from posture.kernels import steps as kernels

        finite: BoolArray = np.empty(d, dtype=bool)
        dt = np.empty((n, d))
        breaks = np.empty((n, d), dtype=bool)
        fresh = np.empty(d, dtype=bool)
        count = kernels.block_steps(
            np.ascontiguousarray(t_s),
            np.ascontiguousarray(acc_g),
            _NO_GYRO if gyr_dps is None else np.ascontiguousarray(gyr_dps),
            np.ascontiguousarray(last_t_s),
            max_interval_s,
            finite,
            dt,
            breaks,
            fresh,
        )
        return BlockSteps(finite, dt, breaks, fresh, int(count))
    finite = np.asarray(
        np.isfinite(t_s).all(axis=0) & np.isfinite(acc_g).all(axis=(0, 1)), dtype=bool
    )
    if gyr_dps is not None:
        finite &= np.isfinite(gyr_dps).all(axis=(0, 1))
    dt = np.empty((n, d))
    if n == 0:
        return BlockSteps(finite, dt, np.zeros((0, d), bool), np.zeros(d, bool), 0)
    np.subtract(t_s[0], last_t_s, out=dt[0])
    np.subtract(t_s[1:], t_s[:-1], out=dt[1:])
    breaks = dt > max_interval_s
    breaks |= dt <= 0.0
    fresh = np.isnan(dt[0])
    if np.count_nonzero(fresh):
        dt[0, fresh] = math.inf
        breaks[0, fresh] = True
    return BlockSteps(finite, dt, breaks, fresh, int(np.count_nonzero(breaks)))
