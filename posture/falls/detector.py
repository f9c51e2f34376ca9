"""Streaming fall detector: an impact, then what the trunk does after it.

The stages (docs/falls.md has the rules' table, their reasons and the
families of falls and everyday movements each one is for):

1. **Impact**: a local maximum of ``|a|`` above ``trigger_acc_g`` opens a
   candidate, measured in rate-independent ways: the impulse ``∫ max(|a| -
   1 g, 0) dt`` over ±``impact_window_s`` and the peak of ``|a|`` after a
   0.2 s Hann low-pass (≈ 5 Hz); also the lowest ``|a|`` in the 1.5 s before
   (free fall). The impact model (:mod:`posture.falls.model`) turns them
   into a probability; at least ``min_fall_probability`` is a *fall-grade*
   impact.
2. **Before**: where the fall starts. Lying for the whole ``pre_window_s``
   by the engine's up estimate (calibrated upright), or, before any
   calibration, far from the nominal upright with the back horizontal:
   the patient is in bed (origin ``lying``); only the out-of-bed rule
   applies. Before calibration a trunk far from the nominal upright with
   the back vertical is a wearable worn rotated: the trunk just before the
   impact serves as the upright for that candidate. The trunk direction 2-1
   s before the peak is kept to judge the change of posture.
3. **Aftermath**: the rules of :mod:`posture.falls.rules`, judged at every
   sample from ``confirm_min_s`` after the peak on the last
   ``still_window_s`` (and ``soft_still_s``): lying, reclined, unmoving,
   down-then-up within ``confirm_max_s``; two-stage up to
   ``two_stage_max_s``; soft up to ``soft_confirm_max_s``; out of bed.
   A patient up and moving like walking ends the long rules. A saturated
   gyroscope around the impact (an axis stuck at the same value of at least
   ``gyro_clip_min_dps``) lifts the requirement that the engine's
   (gyroscope-aided) up agree.

A detection is reported at the first sample that confirms it. If within
``cancel_window_s`` the patient is upright (tilt below
``cancel_upright_deg``) and moving like walking (``|a|`` deviation at least
``cancel_motion_sd_g``) for ``cancel_upright_s``, a ``"cancelled"`` finding
follows. While a fall is active (until then, or until the patient has been
upright for ``cancel_upright_s`` after the window) only a fall that starts
upright is a new fall: an impact while still down is not.

Windows are counted in samples at the nominal ``sample_rate_hz``; samples
across a lost packet are treated as contiguous. State is explicit (a short
history of per-sample signals and the pending candidates) and every window
statistic is computed the same way whatever the block boundaries
(:mod:`posture.falls.features`), so findings are identical for any split of
the stream. Orientation enters through the engine's ``up_sensor``; the
gyroscope itself is only checked for saturation, so accelerometer-only
wearables get the same detector.

:class:`FallDetector` is one wearable's detector: the engine's
:class:`~posture.falls.stage.FallStage` (every wearable side by side, the
state in :mod:`posture.falls.history`) with one device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from posture.falls.model import FallModel
from posture.falls.stage import FallStage
from posture.falls.types import FallCandidate, FallFinding, FallSettings

__all__ = ["FallCandidate", "FallDetector", "FallFinding", "FallSettings"]

FloatArray = NDArray[np.float64]

_NOMINAL_UP = np.array([0.0, 1.0, 0.0])


class FallDetector:
    """Streaming fall detector for one wearable (see the module docstring).

    Args:
        settings: thresholds.
        sample_rate_hz: nominal rate of the stream; windows are in samples.
        on_candidate: optional observer, called with each candidate once it is
            resolved (model training and evaluation use it).

    Raises:
        ValueError: sample rate outside 10-2000 Hz.
        ConfigError: the model file cannot be loaded.
    """

    def __init__(
        self,
        settings: FallSettings,
        sample_rate_hz: float,
        *,
        on_candidate: Callable[[FallCandidate], None] | None = None,
    ) -> None:
        self._stage = FallStage(settings, sample_rate_hz, 1, _NOMINAL_UP, on_candidate=on_candidate)
        self._stage.set_reference_up(0, _NOMINAL_UP, calibrated=True)
        self.settings = settings
        self.sample_rate_hz = self._stage.sample_rate_hz
        self.model: FallModel = self._stage.model

    def set_reference_up(self, up_sensor: ArrayLike, *, calibrated: bool = True) -> None:
        """Set the upright "up" (3,) in sensor axes; applies to impacts from now on.

        Args:
            up_sensor: the calibrated upright, or the mounting's nominal one.
            calibrated: False for a nominal guess (not measured on this
                patient); then an impact whose pre-fall trunk is far from it is
                judged as from lying (back horizontal) or against the pre-fall
                trunk (a wearable worn rotated; see the module docstring).

        Raises:
            ValueError: not a finite non-zero 3-vector.
        """
        v = np.asarray(up_sensor, dtype=np.float64)
        norm = float(np.linalg.norm(v)) if v.shape == (3,) else 0.0
        if not (math.isfinite(norm) and norm > 1e-9):
            raise ValueError(f"reference up must be a finite non-zero (3,) vector, got {v!r}")
        self._stage.set_reference_up(0, v / norm, calibrated=bool(calibrated))

    @property
    def fall_active(self) -> bool:
        """True from a detection until its cancellation or the detector re-arms."""
        return self._stage.fall_active(0)

    @property
    def pending_candidates(self) -> tuple[FallCandidate, ...]:
        """Candidates still waiting for their aftermath (e.g. when a recording ends)."""
        return self._stage.pending_candidates(0)

    def process(
        self, t_s: ArrayLike, acc_g: ArrayLike, gyr_dps: ArrayLike | None, up_sensor: ArrayLike
    ) -> list[FallFinding]:
        """Feed one block; return the findings that became true in it, in time order.

        Args:
            t_s: (n,) sample times in seconds.
            acc_g: (n, 3) acceleration in g, sensor axes.
            gyr_dps: (n, 3) angular rate in °/s, or None; only checked for
                saturation (module docstring).
            up_sensor: (n, 3) the engine's unit up direction per sample; NaN rows
                (no estimate yet) count as "not known to be lying".

        Raises:
            ValueError: shapes disagree, or t_s/acc_g are not finite.
        """
        t = np.asarray(t_s, dtype=np.float64)
        acc = np.asarray(acc_g, dtype=np.float64)
        up = np.asarray(up_sensor, dtype=np.float64)
        count = t.shape[0] if t.ndim == 1 else -1
        if count < 0 or acc.shape != (count, 3) or up.shape != (count, 3):
            raise ValueError(
                "expected t_s (n,), acc_g (n, 3) and up_sensor (n, 3), got "
                f"{t.shape}, {acc.shape}, {up.shape}"
            )
        if gyr_dps is not None and np.shape(gyr_dps) != (count, 3):
            raise ValueError(f"gyr_dps must be (n, 3) or None, got {np.shape(gyr_dps)}")
        if count == 0:
            return []
        if not (np.isfinite(acc).all() and np.isfinite(t).all()):
            raise ValueError("t_s and acc_g must be finite")
        gyr = None if gyr_dps is None else np.asarray(gyr_dps, dtype=np.float64)[:, :, None]
        found = self._stage.process(t[:, None], acc[:, :, None], gyr, up[:, :, None])
        return found.get(0, [])
