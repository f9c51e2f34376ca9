"""Unit quaternions as NumPy arrays, for the simulator's batched physics.

Shape ``(..., 4)``, scalar last ``(x, y, z, w)`` as SciPy's ``Rotation.as_quat``;
``multiply(p, q)`` is SciPy's ``p * q`` (apply ``q`` first). SciPy's
``Rotation`` checks and wraps every call, which costs more than the
arithmetic on the short arrays of one wearable and cannot hold a
wearables x samples grid; these are plain ufunc expressions on any shape.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["as_rotvec", "conjugate", "from_rotvec", "multiply", "rotate"]

FloatArray = NDArray[np.float64]


def multiply(p: FloatArray, q: FloatArray) -> FloatArray:
    """Hamilton product ``p q`` (rotation ``q`` then ``p``), broadcasting."""
    px, py, pz, pw = p[..., 0], p[..., 1], p[..., 2], p[..., 3]
    qx, qy, qz, qw = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    out = np.empty(np.broadcast_shapes(p.shape, q.shape))
    out[..., 0] = pw * qx + px * qw + py * qz - pz * qy
    out[..., 1] = pw * qy - px * qz + py * qw + pz * qx
    out[..., 2] = pw * qz + px * qy - py * qx + pz * qw
    out[..., 3] = pw * qw - px * qx - py * qy - pz * qz
    return out


def conjugate(q: FloatArray) -> FloatArray:
    """The inverse rotation of unit quaternions."""
    out = -q
    out[..., 3] = q[..., 3]
    return out


def rotate(q: FloatArray, v: FloatArray) -> FloatArray:
    """Vectors ``v`` (..., 3) rotated by ``q`` (..., 4), broadcasting."""
    # v + 2w (u x v) + 2 u x (u x v), written out (np.cross costs more than the sums).
    ux, uy, uz, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    tx = 2.0 * (uy * vz - uz * vy)
    ty = 2.0 * (uz * vx - ux * vz)
    tz = 2.0 * (ux * vy - uy * vx)
    out = np.empty((*np.broadcast_shapes(q.shape[:-1], v.shape[:-1]), 3))
    out[..., 0] = vx + w * tx + (uy * tz - uz * ty)
    out[..., 1] = vy + w * ty + (uz * tx - ux * tz)
    out[..., 2] = vz + w * tz + (ux * ty - uy * tx)
    return out


# Taylor coefficients in x = (a/2)^2 of cos(a/2) and of sin(a/2)/a, to x^7: below
# _SERIES_RAD their remainder is under 1e-17, so small turns (the sway,
# most of a move's steps) need no sin and cos, which NumPy does not vectorise.
_SERIES_RAD = 0.5
_COS_HALF = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(8))
_SINC_HALF = tuple(0.5 * (-1.0) ** k / math.factorial(2 * k + 1) for k in range(8))


def from_rotvec(r: FloatArray) -> FloatArray:
    """Quaternions of rotation vectors ``r`` (..., 3) in radians."""
    rx, ry, rz = r[..., 0], r[..., 1], r[..., 2]
    angle_sq = rx * rx + ry * ry + rz * rz
    x = 0.25 * angle_sq
    w = np.full(angle_sq.shape, _COS_HALF[-1])
    scale = np.full(angle_sq.shape, _SINC_HALF[-1])
    for c, s in zip(_COS_HALF[-2::-1], _SINC_HALF[-2::-1], strict=True):
        w *= x
        w += c
        scale *= x
        scale += s
    large = np.flatnonzero(angle_sq.reshape(-1) >= _SERIES_RAD * _SERIES_RAD)
    if large.size:
        angle = np.sqrt(angle_sq.reshape(-1)[large])
        w.reshape(-1)[large] = np.cos(0.5 * angle)
        scale.reshape(-1)[large] = np.sin(0.5 * angle) / angle
    out = np.empty((*r.shape[:-1], 4))
    out[..., 0] = rx * scale
    out[..., 1] = ry * scale
    out[..., 2] = rz * scale
    out[..., 3] = w
    return out


def as_rotvec(q: FloatArray) -> FloatArray:
    """Rotation vectors (..., 3), radians, of the shorter rotation of ``q``."""
    sign = np.where(q[..., 3] < 0.0, -1.0, 1.0)[..., None]
    u = q[..., :3] * sign
    w = q[..., 3] * sign[..., 0]
    norm = np.sqrt(np.einsum("...i,...i->...", u, u))
    angle = 2.0 * np.arctan2(norm, w)
    small = angle <= 1e-3
    a2 = angle * angle
    safe = np.where(small, 1.0, np.sin(0.5 * angle))
    scale = np.where(small, 2.0 + a2 / 12.0 + 7.0 * a2 * a2 / 2880.0, angle / safe)
    return u * scale[..., None]
