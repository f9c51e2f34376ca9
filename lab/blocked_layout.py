"""A ward's arrays in lane blocks, and the gravity filter's kernel run on them.

The engine keeps every array device last (``(..., D)``), and its lane-block
kernels (:mod:`posture.kernels.gravity`) work through a block of
:data:`~posture.kernels.gravity.LANES` devices at a time: each of a block's
samples is then a short run in every one of some fifty rows, 8 KB apart at
1000 devices. Laid out in lane blocks, ``(blocks, ..., LANES)``, a block's
samples and state are one run of memory instead. :func:`to_blocks` and
:func:`from_blocks` convert; :func:`gravity_by_lane_block` runs the
engine's own gravity kernel block by block on such arrays (the same
arithmetic, so the same bits), which ``python -m lab.kernel_split
--gravity-alone`` times against the kernel on the device-last arrays.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

from posture.kernels.gravity import LANES, gravity_gyro

__all__ = [
    "from_blocks",
    "gravity_by_lane_block",
    "gravity_of_block",
    "gravity_outputs",
    "to_blocks",
]

AnyArray = NDArray[Any]
_A = TypeVar("_A", bound=NDArray[Any])


def to_blocks(a: _A, lanes: int = LANES) -> _A:
    """``a`` (..., D) as (ceil(D / lanes), ..., lanes), C-contiguous; the last
    block padded with zeros."""
    devices = a.shape[-1]
    blocks = math.ceil(devices / lanes)
    padded = np.zeros((*a.shape[:-1], blocks * lanes), dtype=a.dtype)
    padded[..., :devices] = a
    split = padded.reshape(*a.shape[:-1], blocks, lanes)
    return cast(_A, np.ascontiguousarray(np.moveaxis(split, -2, 0)))


def from_blocks(b: _A, devices: int) -> _A:
    """The inverse of :func:`to_blocks`: (blocks, ..., lanes) as (..., devices)."""
    joined = np.moveaxis(b, 0, -2)
    return cast(_A, joined.reshape(*joined.shape[:-2], -1)[..., :devices])


def gravity_outputs(acc: AnyArray) -> tuple[AnyArray, ...]:
    """Empty outputs of :func:`gravity_by_lane_block` for the blocked
    accelerometer block ``acc`` (blocks, n, 3, lanes): up, settled, rest,
    low-passed accelerometer, its squared deviation."""
    blocks, n, _, lanes = acc.shape
    return (
        np.empty(acc.shape),
        np.empty((blocks, n, lanes), dtype=bool),
        np.empty((blocks, n, lanes), dtype=bool),
        np.empty(acc.shape),
        np.empty((blocks, n, lanes)),
    )


@numba.njit(nogil=True, error_model="numpy")
def gravity_by_lane_block(
    data: tuple[AnyArray, AnyArray, AnyArray],
    outputs: tuple[AnyArray, ...],
    state: tuple[AnyArray, ...],
    coefficients: tuple[object, ...],
) -> None:
    """:func:`~posture.kernels.gravity.gravity_gyro` on each lane block of
    arrays from :func:`to_blocks` (its arguments, grouped, each with the
    block axis first): every block's slice is a C-contiguous array of
    ``LANES`` devices, so the kernel reads and writes one run per block."""
    for b in range(data[0].shape[0]):
        gravity_of_block(b, data, outputs, state, coefficients)


@numba.njit(nogil=True, error_model="numpy")
def gravity_of_block(
    b: int,
    data: tuple[AnyArray, AnyArray, AnyArray],
    outputs: tuple[AnyArray, ...],
    state: tuple[AnyArray, ...],
    coefficients: tuple[object, ...],
) -> None:
    """:func:`~posture.kernels.gravity.gravity_gyro` on lane block ``b`` of
    arrays from :func:`to_blocks` (as :func:`gravity_by_lane_block`)."""
    acc, gyr, dt = data
    up, settled, rest, acc_lp, acc_dev2 = outputs
    count, quiet_run, quat, gyr_prev, init_sum, bias, rest_lp, inertial_lp = state
    rest_sos, inertial_sos, thresholds, samples, lead_s, fresh_dt_s = coefficients
    gravity_gyro(
        acc[b], gyr[b], dt[b],
        up[b], settled[b], rest[b], acc_lp[b], acc_dev2[b],
        count[b], quiet_run[b], quat[b], gyr_prev[b], init_sum[b], bias[b],
        rest_lp[b], inertial_lp[b],
        rest_sos, inertial_sos, thresholds, samples, lead_s, fresh_dt_s,
    )  # fmt: skip
