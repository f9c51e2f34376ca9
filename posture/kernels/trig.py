"""``atan2`` and ``asin`` without branches or C library calls, for kernels whose
device loop should vectorise.

``math.atan2``/``math.asin`` in a numba kernel are calls into the C library,
which LLVM's loop vectoriser cannot widen: one such call keeps the whole loop
around it scalar. These helpers are plain arithmetic and selects (no loops,
no calls, no data-dependent branches once LLVM has if-converted the
conditional expressions), so they inline into a kernel's device loop and
vectorise with it (AVX2: four doubles per instruction).

Method: Cephes ``atan`` (S. L. Moshier, *Methods and Programs for
Mathematical Functions*, 1989; the Cephes library's ``atan.c``), its argument
reduction taken to the two arguments of ``atan2`` so that no quotient can
overflow. With ``a = |x|`` and ``b = |y|``, ``atan(b / a)`` in [0, pi/2] is

* ``atan(b / a)`` where ``b <= 0.66 a``,
* ``pi/4 + atan((b - a) / (b + a))`` where ``0.66 a < b <= tan(3 pi/8) a``,
* ``pi/2 + atan(-a / b)`` where ``b > tan(3 pi/8) a``,

so ``atan`` is only needed on [-0.4142, 0.66], where Cephes approximates it
as ``t + t z P(z) / Q(z)`` (``z = t * t``, P of degree 4, Q monic of degree 5:
Moshier's published coefficients, below). A negative (or -0) ``x`` reflects
the angle to ``pi - angle``, folded into the constant (pi, 3 pi/4 or pi/2) so
there is one rounding at the end; each constant is added as a double plus its
rounding error (``hi + (lo + r)``), as Cephes adds ``MOREBITS``. The sign of
``y`` is copied on last. ``asin(z)`` is ``atan2(z, sqrt((1 - z)(1 + z)))``:
the factored ``1 - z**2`` loses nothing near |z| = 1, and ``atan2`` is
accurate at both ends, where ``asin``'s own series (small z) and
``acos``-like forms (z near 1) each lose at one of them.

Measured error, against the 80-bit ``long double`` ``atan2l``/``asinl`` (far
better than a double ulp): ``atan2`` at most 1.51 ulp on the 1.6 million
points of ``tests/test_kernel_trig.py`` (a dense grid of angles in all four
quadrants at magnitudes from 1e-300 to 1e300, random points, points near the
axes), 1.61 ulp on 2**25 further random directions; ``asin`` at most 2.20
ulp on the test's 3.1 million points of [-1, 1], 2.40 ulp on 2**22 random
points in each of the ranges where the angle is just below a power of two
(the worst: the rounding of the cosine adds to ``atan2``'s). Against the C
library (``np.arctan2``/``np.arcsin``, within 0.52 ulp of exact) at most 2
ulp, 4.4e-16 radians; in degrees below 3e-14.

Special cases, as C99's ``atan2`` gives them: ``atan2(+-0, +0) = +-0``,
``atan2(+-0, -0) = +-pi``, ``atan2(+-y, 0) = +-pi/2`` for y > 0,
``atan2(+-0, x < 0) = +-pi``; a NaN argument gives NaN. Infinite arguments
(unit vectors never have them) do not trap: ``atan2(inf, finite) = pi/2`` and
``atan2(finite, inf) = 0`` as in C, but ``atan2(+-inf, +-inf)`` is NaN where C
gives an odd multiple of pi/4. Finite arguments both above 8e307 in
magnitude may overflow ``a + b`` to the wrong quadrant's eighth (not a
domain a kernel here meets). ``asin(z)`` is NaN for |z| > 1, as in C.

The kernels that inline these helpers are recompiled when this module
changes: their on-disk cache is keyed on every module of the package
(:mod:`posture.kernels.jit`).
"""

from __future__ import annotations

import math

from posture.kernels.jit import helper, select

__all__ = ["asin", "atan2", "cos2_of_sin", "cos_of_sin"]

# tan(3 pi / 8) = 1 + sqrt(2): above it the argument is reduced by -1/t.
_TAN_3PI_8 = 2.41421356237309504880
_UNDER = 2.0**-1000
_UNDER_SCALE = 2.0**100
# Cephes' split between the unreduced range and the one reduced around pi/4.
_MID = 0.66

# The constants added back: each as the double nearest it and that double's
# error, so the sum rounds once (Cephes' MOREBITS is _HALF_PI_LO).
_PI_HI = 3.141592653589793
_PI_LO = 1.2246467991473532e-16
_THREE_QUARTER_PI_HI = 2.356194490192345
_THREE_QUARTER_PI_LO = 9.184850993605148e-17
_HALF_PI_HI = 1.5707963267948966
_HALF_PI_LO = 6.123233995736766e-17
_QUARTER_PI_HI = 0.7853981633974483
_QUARTER_PI_LO = 3.061616997868383e-17

# Cephes atan.c: atan(t) = t + t z P(z) / Q(z), z = t**2, |t| <= 0.66.
_P0 = -8.750608600031904122785e-1
_P1 = -1.615753718733365076637e1
_P2 = -7.500855792314704667340e1
_P3 = -1.228866684490136173410e2
_P4 = -6.485021904942025371773e1
_Q0 = 2.485846490142306297962e1
_Q1 = 1.650270098316988542046e2
_Q2 = 4.328810604912902668951e2
_Q3 = 4.853903996359136964868e2
_Q4 = 1.945506571482613964425e2


@helper
def atan2(y: float, x: float) -> float:
    """The angle of the point (x, y) from the positive x axis, radians in
    [-pi, pi], as C's ``atan2(y, x)`` (error and special cases in the module
    docstring)."""
    # Below 2**-1000 the products 0.66 a and tan(3 pi/8) a in the tests below
    # would round as subnormals and pick the wrong reduction; scaling both by
    # 2**100 is exact (a b that overflows was steep anyway: inf still is).
    scale = _UNDER_SCALE if abs(x) < _UNDER else 1.0
    a = abs(x) * scale
    b = abs(y) * scale
    steep = b > _TAN_3PI_8 * a
    middle = b > _MID * a
    num = -a if steep else (b - a if middle else b)
    den = b if steep else (b + a if middle else a)
    # den is 0 only where a is 0 and b is 0 or NaN (steep and middle fail):
    # dividing by 1 instead keeps atan2(0, 0) = 0 and atan2(NaN, 0) = NaN.
    t = num / (1.0 if den == 0.0 else den)
    z = t * t
    p = (((_P0 * z + _P1) * z + _P2) * z + _P3) * z + _P4
    q = ((((z + _Q0) * z + _Q1) * z + _Q2) * z + _Q3) * z + _Q4
    r = t + t * (z * p / q)
    # copysign, not x < 0: -0 is on the left (atan2(0, -0) = pi).
    left = math.copysign(1.0, x) < 0.0
    if steep:
        hi = _HALF_PI_HI
        lo = _HALF_PI_LO
    elif middle:
        hi = _THREE_QUARTER_PI_HI if left else _QUARTER_PI_HI
        lo = _THREE_QUARTER_PI_LO if left else _QUARTER_PI_LO
    else:
        hi = _PI_HI if left else 0.0
        lo = _PI_LO if left else 0.0
    angle = hi + (lo + (-r if left else r))
    return math.copysign(angle, y)


@helper
def cos2_of_sin(s: float) -> float:
    """``1 - s**2``, the square of :func:`cos_of_sin` before its root (a
    caller that selects among square roots takes one root of the choice)."""
    # Near |s| = 1, 1 - s is exact and the factored form loses nothing; below
    # 1/2, 1 - s * s rounds once where the factors round twice (2.6 against
    # 2.3 ulp at most in asin).
    return select(abs(s) < 0.5, 1.0 - s * s, (1.0 - s) * (1.0 + s))


@helper
def cos_of_sin(s: float) -> float:
    """``sqrt(1 - s**2)``: the cosine of an angle in [-pi/2, pi/2] from its
    sine ``s`` (NaN for |s| > 1)."""
    return math.sqrt(cos2_of_sin(s))


@helper
def asin(s: float) -> float:
    """The angle in [-pi/2, pi/2] (radians) whose sine is ``s``, as C's
    ``asin``; NaN outside [-1, 1] (error in the module docstring)."""
    return atan2(s, cos_of_sin(s))
