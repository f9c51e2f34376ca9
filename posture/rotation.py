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
    "dot_tcd",
    "gyro_increments",
    "increments_tcd",
    "matrix_tcd",
    "normalize",
    "normalize_rows",
    "quat_to_matrix",
    "rotate_back_tcd",
    "rotate_tcd",
]

FloatArray = NDArray[np.float64]

# Up to this many devices the running product loops over plain floats per
# device (about 0.8 µs a sample); beyond, over array steps (about 10 µs a step).
_SCALAR_LOOP_MAX_DEVICES = 8

# cos(h) and sin(h)/h as polynomials in h² (Taylor, to h^8 and h^9): exact
# to rounding (next terms below 3e-17) for |h| <= 0.1 rad, i.e. a turn of up
# to 0.2 rad (11°) per sample, 570 °/s at 50 Hz; larger turns use
# np.cos/np.sin. Much cheaper than the libm calls (7 ns an element here)
# when thousands of samples go through at once.
_SERIES_MAX_HALF_RAD = 0.1
_COS_SERIES = [(-1) ** k / math.factorial(2 * k) for k in range(4, -1, -1)]
_SINC_SERIES = [(-1) ** k / math.factorial(2 * k + 1) for k in range(4, -1, -1)]


def normalize_rows(v: FloatArray) -> FloatArray:
    """Rows of ``v`` (n, 3) scaled to unit length (in place); zero rows stay zero."""
    norm = np.sqrt(np.einsum("ni,ni->n", v, v))
    v /= np.maximum(norm, 1e-300)[:, None]
    return v


def normalize(v: FloatArray) -> FloatArray:
    """Unit vectors along the last axis; zero vectors stay zero (no NaN)."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0.0)


def _quadratic_form() -> FloatArray:
    """(16, 9): rotation matrix entries as linear combinations of q_i q_j."""
    c = np.zeros((4, 4, 3, 3))
    w, x, y, z = range(4)
    # Diagonal: w² + a² - b² - c² (valid for unit quaternions).
    for i, (a, b, d) in enumerate(((x, y, z), (y, x, z), (z, x, y))):
        c[w, w, i, i] = c[a, a, i, i] = 1.0
        c[b, b, i, i] = c[d, d, i, i] = -1.0
    # Off-diagonal (i, j): 2(ab + sign wk) split over the symmetric pair.
    for (i, j), (a, b), k, sign in (
        ((0, 1), (x, y), z, -1.0),
        ((1, 0), (x, y), z, 1.0),
        ((0, 2), (x, z), y, 1.0),
        ((2, 0), (x, z), y, -1.0),
        ((1, 2), (y, z), x, -1.0),
        ((2, 1), (y, z), x, 1.0),
    ):
        c[a, b, i, j] = c[b, a, i, j] = 1.0
        c[w, k, i, j] = c[k, w, i, j] = sign
    return c.reshape(16, 9)


_QUAT_TO_MATRIX = _quadratic_form()


def quat_to_matrix(q: FloatArray) -> FloatArray:
    """Rotation matrices ``(..., 3, 3)`` of unit quaternions ``(..., 4)``.

    ``quat_to_matrix(q) @ v`` equals ``q ⊗ v ⊗ q*``. Every entry is a
    quadratic form of ``q``, so all of them are one matrix product (the
    row layout's way; :func:`matrix_tcd` is the many-device one).
    """
    outer = q[..., :, None] * q[..., None, :]
    flat = outer.reshape(*q.shape[:-1], 16) @ _QUAT_TO_MATRIX
    return flat.reshape(*q.shape[:-1], 3, 3)


# Rotation matrix entries (row-major) as c + s1 * p[i1] + s2 * p[i2] over the
# products p = (xx, yy, zz, xy, xz, yz, wx, wy, wz), each doubled: e.g.
# R00 = 1 - 2yy - 2zz, R01 = 2xy - 2wz. Unit quaternions assumed.
_PRODUCT_A = np.array([1, 2, 3, 1, 1, 2, 0, 0, 0])  # first factor (w, x, y, z)
_PRODUCT_B = np.array([1, 2, 3, 2, 3, 3, 1, 2, 3])  # second factor, doubled
_ENTRY_C = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])[None, :, None]
_ENTRY_I1 = np.array([1, 3, 4, 3, 0, 5, 4, 5, 0])
_ENTRY_S1 = np.array([-1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0])[None, :, None]
_ENTRY_I2 = np.array([2, 8, 7, 8, 2, 6, 7, 6, 1])
_ENTRY_S2 = np.array([-1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 1.0, -1.0])[None, :, None]


def matrix_tcd(q: FloatArray) -> FloatArray:
    """Rotation matrices ``(n, 9, D)`` (row-major entries) of unit quaternions ``(n, 4, D)``.

    Each entry is ``(c ± p1) ± p2`` of doubled products; stacked operations
    for a few devices, per-entry planes for many (fewer element operations);
    both evaluate the same expressions, so they agree bitwise.
    """
    if q.shape[2] >= _PLANE_MIN_DEVICES:
        return _matrix_planes(q)
    q2 = q + q
    p = q.take(_PRODUCT_A, axis=1) * q2.take(_PRODUCT_B, axis=1)
    out = p.take(_ENTRY_I1, axis=1)
    out *= _ENTRY_S1
    out += _ENTRY_C
    tail = p.take(_ENTRY_I2, axis=1)
    tail *= _ENTRY_S2
    out += tail
    return out


_PLANE_MIN_DEVICES = 64


def _matrix_planes(q: FloatArray) -> FloatArray:
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    x2, y2, z2 = x + x, y + y, z + z
    xx, yy, zz = x * x2, y * y2, z * z2
    xy, xz, yz = x * y2, x * z2, y * z2
    wx, wy, wz = w * x2, w * y2, w * z2
    out = np.empty((q.shape[0], 9, q.shape[2]))
    # Same order as the stacked form: (c + s1 p1) + s2 p2, with 0 + p = p.
    np.subtract(1.0 - yy, zz, out=out[:, 0])
    np.subtract(xy, wz, out=out[:, 1])
    np.add(xz, wy, out=out[:, 2])
    np.add(xy, wz, out=out[:, 3])
    np.subtract(1.0 - xx, zz, out=out[:, 4])
    np.subtract(yz, wx, out=out[:, 5])
    np.subtract(xz, wy, out=out[:, 6])
    np.add(yz, wx, out=out[:, 7])
    np.subtract(1.0 - xx, yy, out=out[:, 8])
    return out


def rotate_tcd(matrix: FloatArray, v: FloatArray) -> FloatArray:
    """``R v`` per sample and device: ``matrix`` (n, 9, D) row-major, ``v`` (n, 3, D)."""
    n = v.shape[0]
    prod = matrix.reshape(n, 3, 3, -1) * v[:, None]
    return np.add.reduce(prod, axis=2)


def rotate_back_tcd(matrix: FloatArray, v: FloatArray) -> FloatArray:
    """``R^T v`` per sample and device: ``matrix`` (n, 9, D) row-major, ``v`` (n, 3, D)."""
    n = v.shape[0]
    prod = matrix.reshape(n, 3, 3, -1) * v[:, :, None]
    return np.add.reduce(prod, axis=1)


def dot_tcd(a: FloatArray, b: FloatArray) -> FloatArray:
    """Dot products (n, D) of vectors (n, 3, D) (or broadcastable)."""
    return np.add.reduce(a * b, axis=1)


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

    The row layout's version of :func:`increments_tcd` (same rotation, exact
    functions instead of the series): rates ``(n, 3)`` in rad/s, ``dt_s``
    ``(n,)``; a few stacked operations, the fast way for one device.
    """
    dt = dt_s[:, None]
    if lead_s:
        shift = (gyr_rps - gyr_prev_rps) * (lead_s / dt)
        gyr_prev_rps = gyr_prev_rps + shift
        gyr_rps = gyr_rps + shift
    phi = gyr_prev_rps + gyr_rps
    phi *= 0.5 * dt
    phi += cross_rows(gyr_prev_rps, gyr_rps) * ((dt * dt) * (1.0 / 12.0))
    angle = np.sqrt(np.einsum("ni,ni->n", phi, phi))
    half = 0.5 * angle
    out = np.empty((phi.shape[0], 4))
    out[:, 0] = np.cos(half)
    # sin(a/2)/a is accurate down to tiny angles; at exactly 0, phi is 0 too.
    out[:, 1:] = phi * (np.sin(half) / np.maximum(angle, 1e-300))[:, None]
    return out


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
    phi = gyr_prev_rps + gyr_rps
    phi *= 0.5 * dt
    # Coning: cross(ω_prev, ω) dt²/12, on the components' planes.
    scaled = gyr_prev_rps * ((dt * dt) * (1.0 / 12.0))
    p0, p1, p2 = scaled[:, 0], scaled[:, 1], scaled[:, 2]
    r0, r1, r2 = gyr_rps[:, 0], gyr_rps[:, 1], gyr_rps[:, 2]
    phi[:, 0] += p1 * r2 - p2 * r1
    phi[:, 1] += p2 * r0 - p0 * r2
    phi[:, 2] += p0 * r1 - p1 * r0
    half2 = np.add.reduce(phi * phi, axis=1)
    half2 *= 0.25
    # Horner, highest power first: cos(h) and sin(h)/h.
    cos_half = half2 * _COS_SERIES[0]
    sinc_half = half2 * _SINC_SERIES[0]
    for k in range(1, len(_COS_SERIES)):
        cos_half += _COS_SERIES[k]
        sinc_half += _SINC_SERIES[k]
        if k < len(_COS_SERIES) - 1:
            cos_half *= half2
            sinc_half *= half2
    if np.count_nonzero(half2 > _SERIES_MAX_HALF_RAD**2):
        big = half2 > _SERIES_MAX_HALF_RAD**2
        half = np.sqrt(half2[big])
        cos_half[big] = np.cos(half)
        sinc_half[big] = np.sin(half) / half
    out = np.empty((phi.shape[0], 4, *phi.shape[2:]))
    out[:, 0] = cos_half
    # sin(a/2)/a = sinc(a/2)/2.
    sinc_half *= 0.5
    np.multiply(phi, sinc_half[:, None], out=out[:, 1:])
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
    prev = q0
    products = np.empty((4, 4, d))
    for k in range(n):
        # p[i, j] = q_i b_j; the sums below follow _product_loop's
        # expressions term by term, so both loops give the same bits.
        np.multiply(prev[:, None, :], dq[k][None, :, :], out=products)
        p = products
        cur = out[k]
        np.subtract(p[0, 0], p[1, 1], out=cur[0])
        cur[0] -= p[2, 2]
        cur[0] -= p[3, 3]
        np.add(p[0, 1], p[1, 0], out=cur[1])
        cur[1] += p[2, 3]
        cur[1] -= p[3, 2]
        np.subtract(p[0, 2], p[1, 3], out=cur[2])
        cur[2] += p[2, 0]
        cur[2] += p[3, 1]
        np.add(p[0, 3], p[1, 2], out=cur[3])
        cur[3] -= p[2, 1]
        cur[3] += p[3, 0]
        inv = np.add.reduce(cur * cur, axis=0)
        np.sqrt(inv, out=inv)
        np.divide(1.0, inv, out=inv)
        cur *= inv
        prev = cur
    return out


def _product_loop(
    q0: list[float], dq: list[list[float]]
) -> list[tuple[float, float, float, float]]:
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
