"""How the engine's kernels are compiled: numba, cached on disk, without the GIL,
with array arguments that never overlap.

``distinct_arrays`` marks every pointer argument of a kernel ``noalias`` (the
flag numba itself sets for the loops of ``parallel=True`` when it has proved
their arrays distinct). Without it LLVM must assume that any output or state
array may overlap any other, and a loop over devices that touches some twenty
arrays needs more run-time overlap checks than LLVM's loop vectoriser allows
("too many memory checks needed"), so it stays scalar. The callers keep the
promise: every array a kernel writes is its own allocation or a row of one,
and no written array shares memory with another argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
from numba.core import compiler

__all__ = ["KERNEL_OPTIONS", "helper", "kernel"]

KERNEL_OPTIONS: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    # Fast-math would let LLVM reassociate and contract (FMA): faster, but the
    # results would depend on the build and no longer follow the reference's
    # order of operations.
    "fastmath": False,
    # Division by zero gives inf/NaN as in NumPy instead of raising (and
    # keeps the check out of the loops).
    "error_model": "numpy",
}


class _DistinctArraysCompiler(compiler.Compiler):
    """numba's default pipeline with ``noalias`` on the pointer arguments."""

    def __init__(
        self,
        typingctx: Any,
        targetctx: Any,
        library: Any,
        args: Any,
        return_type: Any,
        flags: Any,
        locals: Any,
    ) -> None:
        flags.noalias = True
        super().__init__(typingctx, targetctx, library, args, return_type, flags, locals)


def kernel(fn: Callable[..., None]) -> Any:
    """Compile ``fn`` as an engine kernel (module docstring)."""
    return numba.njit(pipeline_class=_DistinctArraysCompiler, **KERNEL_OPTIONS)(fn)


def helper(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` as a helper inlined into the kernels that call it."""
    return numba.njit(inline="always", **KERNEL_OPTIONS)(fn)
