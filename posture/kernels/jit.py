"""How the engine's kernels are compiled: numba, cached on disk, without the GIL.

Measured on the gravity kernel (numba 0.68, LLVM 20; README and
docs/architecture.md): LLVM does not vectorise its device loops as numba
hands them over. numba marks no array argument ``noalias``, so every store
may overlap every load and the loop over some twenty arrays needs more run-time
overlap checks than LLVM's vectoriser allows ("too many memory checks
needed"). Forcing numba's internal ``noalias`` flag (the one it sets for
``parallel=True`` loops) and passing each state row as its own argument got
the loops vectorised (zmm with AVX-512, ymm with AVX2 for one of the two
passes) but no faster: the loops keep one pointer per state row live, about
forty, which spill to the stack, and that, not the arithmetic, sets the
time. So the kernels stay on numba's default pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numba
from numba import types
from numba.extending import intrinsic

_log = logging.getLogger(__name__)

__all__ = ["KERNEL_OPTIONS", "helper", "kernel", "select"]

KERNEL_OPTIONS: dict[str, Any] = {
    # Machine code kept on disk (next to the package, or numba's user cache
    # directory when that is read-only; NUMBA_CACHE_DIR overrides): a
    # gateway compiles once, not at every start.
    "cache": True,
    # The gateway may run the engine on a worker thread beside its event loop.
    "nogil": True,
    # Fast-math would let LLVM reassociate and contract (FMA): the results
    # would depend on the build and no longer follow the reference's order of
    # operations.
    "fastmath": False,
    # Division by zero gives inf/NaN as in NumPy instead of raising (and
    # keeps the check out of the loops).
    "error_model": "numpy",
}


def _jit(fn: Callable[..., Any], **extra: Any) -> Any:
    try:
        return numba.njit(**KERNEL_OPTIONS, **extra)(fn)
    except RuntimeError as exc:  # numba found no writable cache directory
        _log.warning("%s; compiling %s at every start instead", exc, fn.__name__)
        return numba.njit(**{**KERNEL_OPTIONS, "cache": False}, **extra)(fn)


def kernel(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` as an engine kernel."""
    return _jit(fn)


def helper(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` as a helper inlined (in numba's IR) into the kernels that call it."""
    return _jit(fn, inline="always")


@intrinsic
def select(typingctx: Any, cond: Any, if_true: Any, if_false: Any) -> Any:
    """``if_true if cond else if_false`` as one LLVM ``select``, for use in kernels.

    numba lowers a conditional expression to a branch; LLVM then sinks the
    loads and stores used on one side into it, and a vectorised loop has to
    mask them (slow) or is left scalar. A ``select`` keeps both sides
    unconditional. Both values must be of one type; ``cond`` a boolean.
    """
    if not isinstance(cond, types.Boolean) or if_true != if_false:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        c, x, y = args
        return builder.select(c, x, y)

    return if_true(cond, if_true, if_false), codegen
