"""What the compiler made of the engine's compiled kernels: packed (vector) and
scalar double-precision arithmetic in their machine code.

``python -m lab.kernel_asm`` compiles the gravity and activity-feature
kernels afresh (no cache) for this machine's CPU, or for another one named
the numba way (``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2,+fma,...``),
and counts instructions by register width: ``xmm`` packed is SSE (2
doubles), ``ymm`` AVX2 (4), ``zmm`` AVX-512 (8); scalar ones (``...sd``) work
one double at a time. Loops LLVM vectorised show as packed arithmetic.
Masked stores (``vmaskmov``, what LLVM makes of ``w[r] = select(c, x,
w[r])`` in a vectorised loop) are counted too: on AMD cores they cost many
times a plain store (``posture/kernels/jit.py``).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from typing import Any

import numpy as np

__all__ = ["arithmetic_by_width", "main"]

_PACKED = re.compile(r"\bv?(?:mul|add|sub|div|sqrt|max|min|fmadd\w*)pd\s+[^\n]*%([xyz]mm)\d+\s*$")
_SCALAR = re.compile(r"\bv?(?:mul|add|sub|div|sqrt|max|min|fmadd\w*)sd\b")
_MASKED_STORE = re.compile(r"\bvp?maskmov")


def arithmetic_by_width(asm: str) -> dict[str, int]:
    """Counts of double arithmetic in ``asm`` (AT&T syntax): packed by register,
    and scalar; and of masked stores."""
    counts: Counter[str] = Counter()
    for line in asm.splitlines():
        packed = _PACKED.search(line)
        if packed:
            counts[f"packed {packed.group(1)}"] += 1
        elif _SCALAR.search(line):
            counts["scalar"] += 1
        elif _MASKED_STORE.search(line):
            counts["masked store"] += 1
    return dict(counts)


def main() -> int:
    import numba

    from posture.kernels import gravity
    from posture.kernels.jit import KERNEL_OPTIONS
    from posture.orientation import GravityFilter, GravityFilterParams

    cpu = getattr(numba.config, "CPU_NAME", None) or "host"
    print(f"numba {numba.__version__}, CPU {cpu}")
    for has_gyro, fn in ((True, gravity.gravity_gyro), (False, gravity.gravity_acc_only)):
        # One call types the kernel; then a fresh, uncached compile to read.
        f = GravityFilter(GravityFilterParams(50.0, has_gyro), 4, kernel="compiled")
        acc = np.zeros((2, 3, 4))
        acc[:, 2] = 1.0
        f.process(acc, np.zeros((2, 3, 4)) if has_gyro else None, np.full((2, 4), 0.02))
        sig = fn.signatures[0]
        fresh = numba.njit(sig, **{**KERNEL_OPTIONS, "cache": False})(fn.py_func)
        print(f"{fn.__name__}: {arithmetic_by_width(fresh.inspect_asm(sig))}")
    _activity(KERNEL_OPTIONS)
    return 0


def _activity(options: dict[str, Any]) -> None:
    """The activity features kernel, typed by one call as :func:`main` does the
    gravity kernels (one signature serves both paths: ``has_gyro`` is an argument)."""
    import numba

    from posture.activity import ActivityClassifier, ActivitySettings
    from posture.kernels import activity

    acc = np.zeros((2, 3, 4))
    acc[:, 2] = 1.0
    a = ActivityClassifier(ActivitySettings(), 50.0, True, 4, kernel="compiled")
    a.features(acc, np.zeros((2, 3, 4)), acc, np.ones((2, 4), dtype=bool))
    fn = activity.activity_features
    sig = fn.signatures[0]
    fresh = numba.njit(sig, **{**options, "cache": False})(fn.py_func)
    print(f"{fn.__name__}: {arithmetic_by_width(fresh.inspect_asm(sig))}")


if __name__ == "__main__":  # pragma: no cover - command line
    sys.exit(main())
