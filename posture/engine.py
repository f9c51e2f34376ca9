"""The per-wearable posture engine: samples in, angles, activity and events out.

One :class:`PostureEngine` per wearable. Each :meth:`PostureEngine.process`
call takes a block of samples (any length) and returns an
:class:`~posture.types.EngineBlock`. Sample timestamps are the only clock.
Inside (:mod:`posture.core`, shared with the batched
:class:`~posture.batch.BatchEngine`): the gravity filter
(:mod:`posture.orientation`) gives the up-direction; calibration
(:mod:`posture.calibration`, :mod:`posture.capture`) waits for a still
upright period or learns the upright from walking; angles follow from the
calibration; the activity classifier (:mod:`posture.activity`), the slouch
detector (:mod:`posture.slouch`) and the fall detector (:mod:`posture.falls`)
run on them. Output is the same for any split of the stream into blocks.

Discontinuities: a step between consecutive samples of more than 2.5
nominal intervals (lost packets) resets the gravity filter, the activity
filters and a calibration still period in progress, and keeps the
calibration. A step of zero or backwards (the wearable's clock restarted)
is handled the same way and counted in :attr:`PostureEngine.stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from posture.calibration import Calibration
from posture.config import EngineConfig
from posture.core import EngineCore
from posture.types import EngineBlock, SampleError

__all__ = ["EngineStats", "PostureEngine"]

FloatArray = NDArray[np.float64]


@dataclass
class EngineStats:
    """Counters for the gateway's status metrics."""

    samples: int = 0
    blocks: int = 0
    gaps: int = 0
    clock_resets: int = 0


class PostureEngine:
    """Streaming posture engine for one wearable (see the module docstring).

    Raises:
        ConfigError: from :class:`EngineConfig` if the configuration is bad.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._core = EngineCore(config, 1)

    # -- public ------------------------------------------------------------

    @property
    def calibrated(self) -> bool:
        """True once an upright posture has been captured (or restored),
        provisionally from walking too."""
        return self._core.stored.calibrations[0] is not None

    @property
    def calibration(self) -> Calibration | None:
        """The current calibration, e.g. to store it for the next session."""
        cal: Calibration | None = self._core.stored.calibrations[0]
        return cal

    @property
    def stats(self) -> EngineStats:
        """Counters since construction."""
        c = self._core.stored
        return EngineStats(
            samples=int(c.samples[0]),
            blocks=int(c.blocks[0]),
            gaps=int(c.gaps[0]),
            clock_resets=int(c.clock_resets[0]),
        )

    def request_calibration(self) -> None:
        """Capture the upright posture at the next still period, any pose, any spin.

        The still period must begin after this call (the clinician has just
        asked the patient to sit up straight). Until it comes, the previous
        calibration stays in use.
        """
        self._core.request_calibration(0)

    def set_calibration(self, calibration: Calibration) -> None:
        """Use a stored calibration (same wearable, same mounting) from now on.

        Cancels a pending automatic capture (a provisional calibration keeps
        waiting for its refinement); a requested one stays pending.
        """
        self._core.set_calibration(0, calibration)

    def process(
        self, t_s: ArrayLike, acc_g: ArrayLike, gyr_dps: ArrayLike | None = None
    ) -> EngineBlock:
        """Process one block of samples.

        Args:
            t_s: (n,) float seconds on the wearable's clock.
            acc_g: (n, 3) accelerometer in g, sensor axes.
            gyr_dps: (n, 3) gyroscope in °/s, or None for a wearable without
                one (must match ``config.has_gyro``).

        Returns:
            The block's angles, activity, slouch flags and events. Inputs are
            never mutated.

        Raises:
            SampleError: wrong shapes, non-finite values, or gyroscope data
                present/absent against the configuration. The engine state is
                unchanged then.
        """
        t, acc, gyr = self._validate(t_s, acc_g, gyr_dps)
        n = t.shape[0]
        if n == 0:
            self._core.count_empty_block()
            empty = np.zeros(0)
            return EngineBlock(t, empty, empty.copy(), np.zeros(0, np.int8), np.zeros(0, bool), ())
        out = self._core.process(
            t[:, None],
            acc[:, :, None],
            None if gyr is None else gyr[:, :, None],
        )
        return EngineBlock(
            t_s=t.copy(),
            flexion_deg=out.flexion_deg[:, 0],
            lateral_deg=out.lateral_deg[:, 0],
            activity=out.activity[:, 0],
            slouching=out.slouching[:, 0],
            events=tuple(out.events.get(0, ())),
        )

    # -- internals ---------------------------------------------------------

    def _validate(
        self, t_s: ArrayLike, acc_g: ArrayLike, gyr_dps: ArrayLike | None
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        try:
            t = np.asarray(t_s, dtype=np.float64)
            acc = np.asarray(acc_g, dtype=np.float64)
            gyr = None if gyr_dps is None else np.asarray(gyr_dps, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SampleError(f"samples must be numeric arrays: {exc}") from exc
        if t.ndim != 1:
            raise SampleError(f"t_s must have shape (n,), got {t.shape}")
        n = t.size
        if acc.shape != (n, 3):
            raise SampleError(f"acc_g must have shape ({n}, 3), got {acc.shape}")
        if self.config.has_gyro and gyr is None:
            raise SampleError("this engine is configured with a gyroscope; gyr_dps is None")
        if not self.config.has_gyro and gyr is not None:
            raise SampleError("this engine is configured without a gyroscope; got gyr_dps")
        if gyr is not None and gyr.shape != (n, 3):
            raise SampleError(f"gyr_dps must have shape ({n}, 3), got {gyr.shape}")
        # A finite sum means finite values (NaN and inf propagate); only if it
        # is not, look closer (huge finite values can overflow the sum).
        total = float(t.sum()) + float(acc.sum()) + (0.0 if gyr is None else float(gyr.sum()))
        if not math.isfinite(total):
            finite = bool(np.isfinite(t).all() and np.isfinite(acc).all())
            if gyr is not None:
                finite = finite and bool(np.isfinite(gyr).all())
            if not finite:
                raise SampleError("t_s, acc_g and gyr_dps must be finite (no NaN or inf)")
        return t, acc, gyr
