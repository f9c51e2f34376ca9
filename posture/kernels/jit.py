"""How the engine's kernels are compiled: numba, cached on disk, without the GIL.

What LLVM (numba 0.68, LLVM 20) makes of a loop across devices, measured on
the gravity kernel (``python -m lab.kernel_asm`` counts packed and scalar
arithmetic, for this CPU or an AVX2 one named the numba way; LLVM's own
remarks, ``llvmlite.binding.set_option("", "-pass-remarks=loop-vectorize")``
and ``-pass-remarks-missed=loop-vectorize``, say which loops and why not):

* One loop over all devices per sample, about twenty state arrays: not
  vectorised. numba marks no array argument ``noalias``, so every store may
  overlap every load and the loop needs more run-time overlap checks than
  LLVM's vectoriser allows ("too many memory checks needed"). Forcing
  numba's internal ``noalias`` flag and passing each state row as its own
  argument got it vectorised but no faster: the loop keeps one pointer per
  state row live, about forty, which spill to the stack.
* What works (:mod:`posture.kernels.gravity`, 2.0x the loop above at 1000
  devices, ymm with AVX2): lane blocks. A block's state goes into one small
  workspace allocated in the kernel (its shape a constant, so every state
  value is at a constant offset from one pointer); the loop over the block's
  lanes has a literal trip count and touches only the inputs (read) and the
  workspace (read and written): three overlap checks, which LLVM accepts for
  32 lanes (below 16 it leaves a loop that needs any check scalar). Outputs
  are staged in the workspace and copied out by loops of their own.
* Conditional expressions: numba lowers ``a if c else b`` to a branch, LLVM
  sinks the loads and stores used on one side into it, and the vectorised
  loop then masks them (``vmaskmov``: slower) or the cost model leaves it
  scalar. :func:`select` emits an LLVM ``select`` instead. One pattern
  still becomes a masked store: ``w[r] = select(c, x, w[r])`` (a value kept
  unless ``c``), which LLVM rewrites as "store ``x`` where ``c``". On AMD
  cores a ``vmaskmovpd`` store costs many plain ones; writing the kept
  value as ``w[r] + 0.0`` (not foldable without fast-math, as it turns
  -0.0 into 0.0) keeps the plain store: the gravity kernel ran 3-4 %
  faster without its three (``python -m lab.kernel_asm`` counts them).
* Signed indices: numba wraps negative indices around with a select, which
  hides from LLVM that ``base + lane`` columns are consecutive (it gathers
  them one by one); unsigned indices (``np.uint64``) have no wrap-around.
* Loops with a constant trip count and a small body (copies) are unrolled
  into scalar code before the vectoriser runs; a trip count LLVM cannot see
  keeps them loops it vectorises.
* Writing the outputs straight from the lane loops instead of staging them
  added overlap checks past the limit, and the loops went scalar (1.3x-1.5x
  slower).

Fast-math stays off (below), so reductions and reassociation are not
available to the vectoriser; the kernels need neither.

The on-disk cache is keyed on every source file of the kernel's package,
not only the kernel's own (numba's default): kernels inline helpers from
sibling modules (:mod:`posture.kernels.trig`, the ``@helper`` functions),
and an upgrade that changes only a helper's module would otherwise run the
old machine code from the cache, which pip leaves behind (the cache files
are not part of the installed package).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numba
from numba import types
from numba.core import caching
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


@functools.cache
def package_digest(folder: str) -> bytes:
    """SHA-256 over the names and contents of the ``.py`` files in ``folder``
    (a kernel's package), read once per process."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.digest()


class _PackageStamp:
    """A cache locator mixin: the source stamp is numba's (the kernel's own
    file) and the digest of every module beside it."""

    _py_file: str

    def get_source_stamp(self) -> Any:
        own = super().get_source_stamp()  # type: ignore[misc]
        return own, package_digest(str(Path(self._py_file).parent))


class _UserProvidedLocator(_PackageStamp, caching.UserProvidedCacheLocator):
    pass


class _InTreeLocator(_PackageStamp, caching.InTreeCacheLocator):
    pass


class _UserWideLocator(_PackageStamp, caching.UserWideCacheLocator):
    pass


class _PackageCacheImpl(caching.CompileResultCacheImpl):
    # numba's own order: NUMBA_CACHE_DIR, next to the package, the user's cache.
    _locator_classes = [_UserProvidedLocator, _InTreeLocator, _UserWideLocator]  # noqa: RUF012


class _PackageCache(caching.FunctionCache):
    """numba's function cache, invalidated by a change to any module of the package."""

    _impl_class = _PackageCacheImpl


def _jit(fn: Callable[..., Any], **extra: Any) -> Any:
    dispatcher = numba.njit(**{**KERNEL_OPTIONS, "cache": False}, **extra)(fn)
    try:
        # What numba's ``cache=True`` does (Dispatcher.enable_caching), with
        # the package-wide stamp.
        dispatcher._cache = _PackageCache(dispatcher.py_func)
    except RuntimeError as exc:  # numba found no writable cache directory
        _log.warning("%s; compiling %s at every start instead", exc, fn.__name__)
    return dispatcher


def kernel(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` as an engine kernel."""
    return _jit(fn)


def helper(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` as a helper inlined (in numba's IR) into the kernels that call it."""
    return _jit(fn, inline="always")


@intrinsic
def _select(typingctx: Any, cond: Any, if_true: Any, if_false: Any) -> Any:
    """:func:`select`'s typing and code generation.

    ``select(cond, if_true, if_false)``, in kernels: ``if_true if cond else
    if_false`` as one LLVM ``select``.

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


# The intrinsic as kernels call it (its own signature, with numba's typing
# context first, is not what a caller sees).
select = cast("Callable[[bool, float, float], float]", _select)
