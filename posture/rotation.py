"""Quaternion and rotation helpers of the posture engine.

Quaternions are ``(w, x, y, z)`` with the scalar first, as in VQF and the
BROAD dataset. A quaternion ``q`` that maps sensor coordinates to an outer
frame rotates a sensor-frame vector ``v`` to ``q ⊗ v ⊗ q*``.

Two layouts:

* row layout, ``(..., 4)`` and ``(..., 3)`` (the public helpers below, used
  by tests and evaluations);
* the engine's *time, component, device* layout: vectors ``(n, 3, D)``,
  quaternions ``(n, 4, D)`` and per-sample scalars ``(n, D)``, so that one
  array operation serves every wearable of a batch (``D`` devices; ``D = 1``
  for a single engine) and each component is a contiguous ``(n, D)`` plane.

The running product of rotation increments is sequential. It runs as a
plain-float loop per device for a few devices and as one array operation per
sample step across devices for many; both evaluate the same expressions in
the same order, so they give bitwise the same numbers (IEEE arithmetic, no
fused operations in either).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "cross_rows",
    "cumulative_product",
    "cumulative_products",
    "gyro_increments",
    "increments_tcd",
    "matrix_tcd",
    "normalize",
    "quat_to_matrix",
]

FloatArray = NDArray[np.float64]

# Up to this many devices the running product loops over plain floats per
# device (about 0.8 µs a sample); beyond, over array steps (about 10 µs a step).
_SCALAR_LOOP_MAX_DEVICES = 8

# cos(h) and sin(h)/h as polynomials in h² (Taylor, to h^12 and h^13): exact
# to rounding for |h| <= 0.25 rad, i.e. a turn of up to 0.5 rad (29°) per
# sample; larger turns use np.cos/np.sin. Much cheaper than the libm calls
# (7 ns an element here) when thousands of samples go through at once.
_SERIES_MAX_HALF_RAD = 0.25
_SERIES = np.array(
    [
        [(-1) ** k / math.factorial(2 * k) for k in range(6, -1, -1)],
        [(-1) ** k / math.factorial(2 * k + 1) for k in range(6, -1, -1)],
    ]
)[:, :, None, None]  # (2, 7, 1, 1): highest power first, for Horner


def normalize(v: FloatArray) -> FloatArray:
    """Unit vectors along the last axis; zero vectors stay zero (no NaN)."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0.0)


def quat_to_matrix(q: FloatArray) -> FloatArray:
    """Rotation matrices ``(..., 3, 3)`` of unit quaternions ``(..., 4)``.

    ``quat_to_matrix(q) @ v`` equals ``q ⊗ v ⊗ q*``.
    """
    planes = matrix_tcd(np.moveaxis(q, -1, 0)[None])  # (1, 9, ...)
    return np.moveaxis(planes[0], 0, -1).reshape(*q.shape[:-1], 3, 3)


def matrix_tcd(q: FloatArray) -> FloatArray:
    """Rotation matrices ``(n, 9, D)`` (row-major entries) of quaternions ``(n, 4, D)``.

    Uses ``w² + x² + y² + z² = 1`` for the diagonal.
    """
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    x2, y2, z2 = x + x, y + y, z + z
    xx, yy, zz = x * x2, y * y2, z * z2
    xy, xz, yz = x * y2, x * z2, y * z2
    wx, wy, wz = w * x2, w * y2, w * z2
    out = np.empty((q.shape[0], 9, *q.shape[2:]))
    out[:, 0] = 1.0 - (yy + zz)
    out[:, 1] = xy - wz
    out[:, 2] = xz + wy
    out[:, 3] = xy + wz
    out[:, 4] = 1.0 - (xx + zz)
    out[:, 5] = yz - wx
    out[:, 6] = xz - wy
    out[:, 7] = yz + wx
    out[:, 8] = 1.0 - (xx + yy)
    return out


_NEXT = np.array([1, 2, 0])
_PREV = np.array([2, 0, 1])


def cross_rows(a: FloatArray, b: FloatArray) -> FloatArray:
    """Row-wise cross product of (n, 3) arrays (np.cross is slow on short ones)."""
    a1, a2 = a.take(_NEXT, axis=1), a.take(_PREV, axis=1)
    return np.asarray(a1 * b.take(_PREV, axis=1) - a2 * b.take(_NEXT, axis=1))


def gyro_increments(
    gyr_prev_rps: FloatArray, gyr_rps: FloatArray, dt_s: FloatArray, lead_s: float = 0.0
) -> FloatArray:
    """Rotation quaternions ``(n, 4)`` for the intervals between rate samples.

    Row-layout front end of :func:`increments_tcd`: rates ``(n, 3)`` in
    rad/s, ``dt_s`` ``(n,)``.
    """
    dq = increments_tcd(gyr_prev_rps[:, :, None], gyr_rps[:, :, None], dt_s[:, None], lead_s)
    return dq[:, :, 0]


def increments_tcd(
    gyr_prev_rps: FloatArray, gyr_rps: FloatArray, dt_s: FloatArray, lead_s: float = 0.0
) -> FloatArray:
    """Rotation quaternions ``(n, 4, D)`` for the intervals between rate samples.

    Interval ``k`` runs from sample ``k-1`` (``gyr_prev_rps[k]``) to sample
    ``k`` (``gyr_rps[k]``), both ``(n, 3, D)`` in rad/s; ``dt_s`` is
    ``(n, D)``. The rate is taken as linear between the samples: the rotation
    vector is the trapezoid plus the two-sample coning term
    ``cross(ω_prev, ω) dt² / 12``. A band-limited rate signal sampled at 50 Hz
    then integrates without the half-sample lag that holding one sample over
    the interval gives (about 2° of tilt at 200 °/s).

    ``lead_s`` shifts the rate line earlier by that many seconds (linear
    extrapolation), to undo a known delay of the gyroscope's samples.
    """
    dt = dt_s[:, None, :]
    if lead_s:
        shift = (gyr_rps - gyr_prev_rps) * (lead_s / dt)
        gyr_prev_rps = gyr_prev_rps + shift
        gyr_rps = gyr_rps + shift
    phi = (gyr_prev_rps + gyr_rps) * (0.5 * dt)
    p0, p1, p2 = gyr_prev_rps[:, 0], gyr_prev_rps[:, 1], gyr_prev_rps[:, 2]
    r0, r1, r2 = gyr_rps[:, 0], gyr_rps[:, 1], gyr_rps[:, 2]
    coning = (dt_s * dt_s) * (1.0 / 12.0)
    phi[:, 0] += (p1 * r2 - p2 * r1) * coning
    phi[:, 1] += (p2 * r0 - p0 * r2) * coning
    phi[:, 2] += (p0 * r1 - p1 * r0) * coning
    f0, f1, f2 = phi[:, 0], phi[:, 1], phi[:, 2]
    angle2 = f0 * f0 + f1 * f1 + f2 * f2
    half2 = 0.25 * angle2
    # Horner on both series at once: rows cos(h), sin(h)/h.
    poly = _SERIES[:, 0] * half2
    for k in range(1, 7):
        poly += _SERIES[:, k]
        if k < 6:
            poly *= half2
    cos_half, sinc_half = poly[0], poly[1]
    big = half2 > _SERIES_MAX_HALF_RAD**2
    if big.any():
        half = np.sqrt(half2[big])
        cos_half[big] = np.cos(half)
        sinc_half[big] = np.sin(half) / half
    out = np.empty((phi.shape[0], 4, *phi.shape[2:]))
    out[:, 0] = cos_half
    # sin(a/2)/a = sinc(a/2)/2.
    out[:, 1:] = phi * (0.5 * sinc_half)[:, None]
    return out


def cumulative_product(q0: FloatArray, dq: FloatArray) -> FloatArray:
    """Running products ``q0 ⊗ dq[0] ⊗ ... ⊗ dq[k]`` for every ``k``: ``(n, 4)``.

    Row-layout front end of :func:`cumulative_products` for one sequence.
    """
    out = cumulative_products(np.asarray(q0, dtype=np.float64)[:, None], dq[:, :, None])
    return out[:, :, 0]


def cumulative_products(q0: FloatArray, dq: FloatArray) -> FloatArray:
    """Running products per device: ``q0`` (4, D), ``dq`` (n, 4, D) -> (n, 4, D).

    Each product is renormalised. The result is bitwise the same however a
    stream is cut into blocks and whichever loop runs (module docstring).
    """
    n, _, d = dq.shape
    out = np.empty((n, 4, d))
    if n == 0:
        return out
    if d <= _SCALAR_LOOP_MAX_DEVICES:
        for j in range(d):
            out[:, :, j] = _product_loop(q0[:, j].tolist(), dq[:, :, j].tolist())
        return out
    w, x, y, z = (q0[i].copy() for i in range(4))
    sqrt = np.sqrt
    for k in range(n):
        bw, bx, by, bz = dq[k]
        # Same expressions, same order as _product_loop.
        nw = w * bw - x * bx - y * by - z * bz
        nx = w * bx + x * bw + y * bz - z * by
        ny = w * by - x * bz + y * bw + z * bx
        nz = w * bz + x * by - y * bx + z * bw
        inv = 1.0 / sqrt(nw * nw + nx * nx + ny * ny + nz * nz)
        w, x, y, z = nw * inv, nx * inv, ny * inv, nz * inv
        row = out[k]
        row[0], row[1], row[2], row[3] = w, x, y, z
    return out


def _product_loop(q0: list[float], dq: list[list[float]]) -> list[tuple[float, float, float, float]]:
    w, x, y, z = q0
    rows: list[tuple[float, float, float, float]] = []
    append = rows.append
    sqrt = math.sqrt
    for bw, bx, by, bz in dq:
        nw = w * bw - x * bx - y * by - z * bz
        nx = w * bx + x * bw + y * bz - z * by
        ny = w * by - x * bz + y * bw + z * bx
        nz = w * bz + x * by - y * bx + z * bw
        inv = 1.0 / sqrt(nw * nw + nx * nx + ny * ny + nz * nz)
        w, x, y, z = nw * inv, nx * inv, ny * inv, nz * inv
        append((w, x, y, z))
    return rows
