"""Small quaternion and rotation helpers used by the posture engine.

Quaternions are ``(w, x, y, z)`` arrays with the scalar first, as in VQF and
the BROAD dataset. A quaternion ``q`` that maps sensor coordinates to an
outer frame rotates a sensor-frame vector ``v`` to ``q ⊗ v ⊗ q*``. All
functions accept any leading shape (``(..., 4)`` and ``(..., 3)``) so the same
code serves one wearable or a batch of them.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "cross_rows",
    "cumulative_product",
    "gyro_increments",
    "normalize",
    "quat_to_matrix",
]

FloatArray = NDArray[np.float64]


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
    quadratic form of ``q``, so all of them are one matrix product.
    """
    outer = q[..., :, None] * q[..., None, :]
    flat = outer.reshape(*q.shape[:-1], 16) @ _QUAT_TO_MATRIX
    return flat.reshape(*q.shape[:-1], 3, 3)


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

    Interval ``k`` runs from sample ``k-1`` (``gyr_prev_rps[k]``) to sample
    ``k`` (``gyr_rps[k]``), both in rad/s, shape ``(n, 3)``; ``dt_s`` is
    ``(n,)``. The rate is taken as linear between the samples: the rotation
    vector is the trapezoid plus the two-sample coning term
    ``cross(ω_prev, ω) dt² / 12``. A band-limited rate signal sampled at 50 Hz
    then integrates without the half-sample lag that holding one sample over
    the interval gives (about 2° of tilt at 200 °/s).

    ``lead_s`` shifts the rate line earlier by that many seconds (linear
    extrapolation), to undo a known delay of the gyroscope's samples.
    """
    dt = dt_s[:, None]
    if lead_s:
        shift = (gyr_rps - gyr_prev_rps) * (lead_s / dt)
        gyr_prev_rps = gyr_prev_rps + shift
        gyr_rps = gyr_rps + shift
    phi = (gyr_prev_rps + gyr_rps) * (0.5 * dt)
    phi += cross_rows(gyr_prev_rps, gyr_rps) * (dt * dt / 12.0)
    angle = np.sqrt(np.einsum("ni,ni->n", phi, phi))
    half = 0.5 * angle
    out = np.empty((phi.shape[0], 4))
    out[:, 0] = np.cos(half)
    # sin(a/2)/a is accurate down to tiny angles; at exactly 0, phi is 0 too.
    out[:, 1:] = phi * (np.sin(half) / np.maximum(angle, 1e-300))[:, None]
    return out


def cumulative_product(q0: FloatArray, dq: FloatArray) -> FloatArray:
    """Running products ``q0 ⊗ dq[0] ⊗ ... ⊗ dq[k]`` for every ``k``: ``(n, 4)``.

    Each product is renormalised. The loop runs over plain floats, one sample
    after the other, so the result is bitwise the same however a stream is
    cut into blocks (a prefix scan would not be), and for the short blocks a
    wearable sends it is faster than NumPy calls on 4-element arrays.
    """
    w, x, y, z = (float(c) for c in q0)
    out: list[tuple[float, float, float, float]] = []
    append = out.append
    sqrt = math.sqrt
    for bw, bx, by, bz in dq.tolist():
        w, x, y, z = (
            w * bw - x * bx - y * by - z * bz,
            w * bx + x * bw + y * bz - z * by,
            w * by - x * bz + y * bw + z * bx,
            w * bz + x * by - y * bx + z * bw,
        )
        inv = 1.0 / sqrt(w * w + x * x + y * y + z * z)
        w, x, y, z = w * inv, x * inv, y * inv, z * inv
        append((w, x, y, z))
    return np.array(out, dtype=np.float64).reshape(-1, 4)
