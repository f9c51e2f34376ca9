"""Compiled kernels of the posture engine (numba), and which implementation runs.

The engine's NumPy code (block operations across devices) is the tested
reference; a compiled kernel computes the same per-sample recursions in one
pass over the samples with the device loop innermost. Which one a filter uses
is chosen when it is built:

* ``POSTURE_KERNEL=numpy`` forces the NumPy reference;
* ``POSTURE_KERNEL=compiled`` (the default) uses the compiled kernel when numba
  imports, and falls back to NumPy (logged once) when it does not, e.g. on a
  platform without numba wheels.

Kernels are compiled on first use and cached on disk (numba's ``cache=True``:
next to the package, or in numba's user cache directory when the package
directory is read-only; ``NUMBA_CACHE_DIR`` overrides both).
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Iterable
from functools import cache
from typing import TypeVar, cast

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "KERNEL_ENV",
    "Kernel",
    "c_array",
    "compiled_available",
    "numba_version",
    "selected_kernel",
    "warm_up",
]

_log = logging.getLogger(__name__)

KERNEL_ENV = "POSTURE_KERNEL"
"""Environment variable naming the implementation: ``numpy`` or ``compiled``."""

_A = TypeVar("_A", bound=NDArray[np.generic])


class Kernel(enum.StrEnum):
    """Which implementation of the per-sample recursions runs."""

    NUMPY = "numpy"
    COMPILED = "compiled"


@cache
def numba_version() -> str | None:
    """numba's version if it imports here, else None (the reason is logged once)."""
    try:
        import numba

        # The kernels are declared at import.
        import posture.kernels.activity
        import posture.kernels.angles
        import posture.kernels.capture
        import posture.kernels.falls
        import posture.kernels.gravity
        import posture.kernels.slouch
        import posture.kernels.steps  # noqa: F401
    except ImportError as exc:
        _log.warning("numba does not import (%s): the posture engine runs NumPy", exc)
        return None
    except Exception as exc:  # llvmlite or the kernels' declaration failed
        _log.warning("the compiled kernels do not load (%s): the engine runs NumPy", exc)
        return None
    return str(numba.__version__)


def c_array(a: _A) -> _A:
    """``a`` itself when C-contiguous, else a C-contiguous copy (the layout the
    kernels are compiled for)."""
    return a if a.flags.c_contiguous else cast(_A, np.ascontiguousarray(a))


def contiguous_fields(obj: object, names: Iterable[str]) -> None:
    """Make each array field ``names`` of ``obj`` C-contiguous (:func:`c_array`),
    in place: a component does this once when a state is bound, since its
    kernel updates those arrays in place."""
    for name in names:
        setattr(obj, name, c_array(getattr(obj, name)))


def compiled_available() -> bool:
    """Whether the compiled kernels can run on this machine."""
    return numba_version() is not None


def selected_kernel(requested: Kernel | str | None = None) -> Kernel:
    """The implementation to use: ``requested``, else ``$POSTURE_KERNEL``, else compiled;
    compiled falls back to NumPy where numba is unavailable.

    Raises:
        ValueError: ``requested`` or the environment names no known kernel.
    """
    raw = requested if requested is not None else os.environ.get(KERNEL_ENV, "") or "compiled"
    try:
        kernel = Kernel(str(raw).strip().lower())
    except ValueError:
        source = "kernel" if requested is not None else KERNEL_ENV
        raise ValueError(f"{source} must be 'numpy' or 'compiled', got {raw!r}") from None
    if kernel is Kernel.COMPILED and not compiled_available():
        return Kernel.NUMPY
    return kernel


def warm_up() -> float | None:
    """Compile (or load from the on-disk cache) every compiled kernel the engine
    uses, so the first block of a wearable does not pay for it; returns the
    seconds it took, or None when the engine runs NumPy.

    A gateway calls this on a worker thread before it connects any wearable:
    a first compile takes seconds (``bench engine`` measures it), which the
    event loop must not wait for.
    """
    if selected_kernel() is not Kernel.COMPILED:
        return None

    from posture.activity import ActivityClassifier, ActivitySettings
    from posture.orientation import GravityFilter, GravityFilterParams
    from posture.slouch import SlouchDetector
    from posture.types import SlouchSettings

    start = time.perf_counter()
    for has_gyro in (True, False):
        f = GravityFilter(GravityFilterParams(50.0, has_gyro), 1, kernel=Kernel.COMPILED)
        acc_g = np.zeros((2, 3, 1))
        acc_g[:, 2] = 1.0
        gyr_dps = np.zeros((2, 3, 1)) if has_gyro else None
        grav = f.process(acc_g, gyr_dps, np.full((2, 1), 0.02))
        a = ActivityClassifier(ActivitySettings(), 50.0, has_gyro, 1, kernel=Kernel.COMPILED)
        feats = a.features(acc_g, gyr_dps, grav.up_sensor, grav.settled)
        activity = a.classify(feats, np.zeros((2, 1)))
    s = SlouchDetector(SlouchSettings(), 0.5, 1, kernel=Kernel.COMPILED)
    s.process(
        np.array([[0.0], [0.02]]), np.zeros((2, 1)), np.zeros((2, 1)), activity, feats.vigorous
    )
    _warm_up_falls()
    _warm_up_capture()
    _warm_up_angles()
    _warm_up_steps()
    return time.perf_counter() - start


def _warm_up_angles() -> None:
    """The angles' kernels (:mod:`posture.kernels.angles`): every device's,
    one device calibrated and one not, then the re-angling after a capture."""

    from posture.calibration import Calibration, TrunkAngles

    angles = TrunkAngles(Kernel.COMPILED)
    up = np.zeros((2, 3, 2))
    up[:, 1] = 1.0
    matrix = np.zeros((3, 3, 2))
    matrix[:, :, 0] = Calibration.from_up((0.0, 1.0, 0.0)).matrix
    flexion, lateral, incl = angles.of_devices(up, matrix, np.array([True, False]))
    angles.redo_device(up, matrix, 0, 1, flexion, lateral, incl)


def _warm_up_steps() -> None:
    """A block's entry checks (:mod:`posture.kernels.steps`), with and without
    a gyroscope."""

    from posture.steps import block_steps

    t_s = np.array([[0.0], [0.02]])
    acc_g = np.zeros((2, 3, 1))
    for gyr_dps in (np.zeros((2, 3, 1)), None):
        block_steps(t_s, acc_g, gyr_dps, np.full(1, np.nan), 0.05, Kernel.COMPILED)


def _warm_up_capture() -> None:
    """The calibration capture's runs (:mod:`posture.kernels.capture`), with
    and without a gyroscope."""

    from posture.calibration import CalibrationSettings
    from posture.capture import CalibrationCapture

    n = 4
    acc_g = np.zeros((n, 3, 1))
    acc_g[:, 2] = 1.0
    flags = np.zeros((n, 1), dtype=bool)
    t_s = np.asarray(np.arange(n)[:, None] * 0.02, dtype=np.float64)
    for gyr_dps in (np.zeros((n, 3, 1)), None):
        capture = CalibrationCapture(
            CalibrationSettings(), 50.0, (0.0, 0.0, 1.0), auto=True, kernel=Kernel.COMPILED
        )
        capture.process(t_s, acc_g, gyr_dps, acc_g, np.zeros((n, 1)), flags, flags)


def _warm_up_falls() -> None:
    """The fall stage's kernels (:mod:`posture.kernels.falls`), with and
    without a gyroscope, on a block with a peak so the screen runs too."""

    from posture.falls import FallSettings, FallStage

    n = 64
    t_s = np.asarray(np.arange(n)[:, None] * 0.02, dtype=np.float64)
    acc_g = np.zeros((n, 3, 1))
    acc_g[:, 2] = 1.0
    acc_g[n // 2, 2] = 3.0
    up = acc_g.copy()
    for gyr_dps in (np.zeros((n, 3, 1)), None):
        stage = FallStage(
            FallSettings(), 50.0, 1, np.array([0.0, 0.0, 1.0]), kernel=Kernel.COMPILED
        )
        stage.process(t_s, acc_g, gyr_dps, up)
