"""The fall detector's settings and results (see :mod:`posture.falls`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from common.errors import ConfigError

__all__ = ["PEAK_LP_SPAN_S", "FallCandidate", "FallFinding", "FallSettings"]

PEAK_LP_SPAN_S = (0.1, 0.3)
"""Span (before, after) around the raw peak searched for the smoothed peak, s."""


@dataclass(frozen=True)
class FallSettings:
    """Fall detector settings; thresholds in s, g, g·s and degrees.

    Defaults are the engine's, chosen with leave-one-subject-out validation on
    SisFall at 25-100 Hz (``python -m lab.train_falls``).

    Raises:
        ConfigError: a value out of range (the message names the field).
    """

    trigger_acc_g: float = 1.3
    peak_merge_s: float = 0.5
    """A candidate is the largest peak within ± this; also its confirmation delay."""
    impact_window_s: float = 0.5
    min_impulse_gs: float = 0.05
    """Candidates below this impulse (ordinary steps) are dropped at once."""
    pre_window_s: float = 5.0
    lying_tilt_deg: float = 60.0
    still_window_s: float = 1.0
    still_acc_sd_g: float = 0.15
    confirm_min_s: float = 1.5
    confirm_max_s: float = 4.0
    min_fall_probability: float | None = None
    """None: the threshold stored with the model."""
    unmoving_impulse_gs: float = 0.4
    unmoving_acc_sd_g: float = 0.05
    unmoving_tilt_change_deg: float = 40.0
    cancel_window_s: float = 30.0
    cancel_upright_deg: float = 40.0
    cancel_upright_s: float = 3.0
    cancel_motion_sd_g: float = 0.1
    """Walking-like motion; sitting up on the floor and moving the arms stays below."""
    reclined_tilt_deg: float = 40.0
    reclined_change_deg: float = 60.0
    """Reclined rule: a fall-grade impact ending at least ``reclined_tilt_deg``
    from upright and ``reclined_change_deg`` from the posture before (a
    backward fall from a chair ending half reclined)."""
    soft_min_peak_lp_g: float = 1.3
    soft_min_impulse_gs: float = 0.08
    soft_still_s: float = 5.0
    soft_still_sd_g: float = 0.03
    soft_confirm_max_s: float = 10.0
    """Soft rule: an impact below the model's threshold (low-passed peak at
    least ``soft_min_peak_lp_g``, impulse at least ``soft_min_impulse_gs``,
    ≈ 0.8 m/s lost beyond gravity) followed by lying motionless (``|a|``
    deviation at most ``soft_still_sd_g``) for ``soft_still_s``, confirmed by
    ``soft_confirm_max_s`` after the impact (a slow collapse)."""
    two_stage_max_s: float = 15.0
    """Two-stage rule: after a clear fall impact that does not end lying, the
    patient may sit on the floor and lie back up to this long after it."""
    clear_fall_probability: float = 0.9
    """A clear fall impact (model probability at least this): the two-stage
    and down-then-up rules confirm on weaker evidence after it (lying later,
    or already back up), so they need more before it."""
    bed_max_min_acc_g: float = 0.6
    bed_change_deg: float = 30.0
    """Out-of-bed rule: from lying, a fall-grade impact after a free fall
    (``|a|`` below ``bed_max_min_acc_g``) into a lying posture at least
    ``bed_change_deg`` from the one before."""
    gyro_clip_min_dps: float = 150.0
    """A gyroscope axis holding the same value of at least this magnitude on
    consecutive samples is saturated; the engine's up estimate is then not
    required to agree (the accelerometer decides)."""
    lying_face_tilt_deg: float = 50.0
    """Before calibration, a trunk far from the nominal upright whose back is
    at least this far from vertical (the skin normal near vertical) is a
    patient lying, not a wearable worn rotated."""
    model_path: str | None = None
    """Impact model (.npz); None: the one shipped with the package."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "model_path" or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"FallSettings.{f.name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"FallSettings.{f.name} must be finite and >= 0, got {value!r}")
        if self.clear_fall_probability > 1.0:
            raise ConfigError("FallSettings.clear_fall_probability must be in [0, 1]")
        if self.min_fall_probability is not None and self.min_fall_probability > 1.0:
            raise ConfigError("FallSettings.min_fall_probability must be in [0, 1] or None")
        if not 0.0 < self.still_window_s <= self.confirm_min_s <= self.confirm_max_s:
            raise ConfigError(
                "FallSettings needs 0 < still_window_s <= confirm_min_s <= confirm_max_s"
            )
        if not (self.peak_merge_s >= max(self.impact_window_s, PEAK_LP_SPAN_S[1]) > 0.0):
            raise ConfigError("FallSettings.peak_merge_s must be >= impact_window_s and >= 0.3")
        if self.cancel_upright_s <= 0.0:
            raise ConfigError("FallSettings.cancel_upright_s must be > 0")
        if not 0.0 < self.soft_still_s <= self.soft_confirm_max_s:
            raise ConfigError("FallSettings needs 0 < soft_still_s <= soft_confirm_max_s")
        if self.two_stage_max_s < self.confirm_max_s:
            raise ConfigError("FallSettings.two_stage_max_s must be >= confirm_max_s")


@dataclass(frozen=True)
class FallFinding:
    """A fall detected, or a detection cancelled, at sample time ``t_s``.

    ``details`` of a detection: ``impact_t_s``, ``peak_acc_g``,
    ``impulse_gs``, ``peak_lp_acc_g``, ``min_acc_before_g``, ``tilt_deg``
    (trunk from upright when confirmed), ``change_deg`` (from the trunk
    before the fall), ``still_sd_g``, ``probability``, ``latency_s`` (after
    the impact peak), ``from_lying`` and ``gyro_clipped`` (0 or 1), and
    ``rule_<name>`` = 1 for the rule that fired (docs/falls.md: ``lying``,
    ``reclined``, ``unmoving``, ``down_up``, ``two_stage``, ``soft``,
    ``out_of_bed``). Of a cancellation: ``impact_t_s``, ``detected_t_s``.
    """

    kind: Literal["detected", "cancelled"]
    t_s: float
    details: dict[str, float]


@dataclass
class FallCandidate:
    """An impact under judgement; handed to the ``on_candidate`` observer when resolved."""

    index: int
    """Sample index of the peak, counted from the detector's first sample."""
    t_s: float
    features: dict[str, float]
    """Impact features, and the posture at the first lying-and-still sample if any."""
    probability: float
    viable: bool
    """False if it can never fire (weak impact); then kept only for an observer."""
    pre_dir: NDArray[np.float64] = field(repr=False)
    """Unit direction of the mean acceleration 2-1 s before the peak (sensor axes)."""
    ref_up: NDArray[np.float64] = field(repr=False)
    """The upright this candidate is judged against: the detector's reference, or
    ``pre_dir`` when an uncalibrated reference disagrees with the pre-fall trunk."""
    outcome: str = "pending"
    """"pending", "detected", "expired" or "superseded" (another candidate fired)."""
    origin: Literal["upright", "lying"] = "upright"
    """Where the fall starts: lying (in bed) or not."""
    rules: frozenset[str] = frozenset()
    """The rules that may still confirm it (docs/falls.md)."""
    clipped: bool = False
    """The gyroscope saturated around the impact (the engine's up is not trusted)."""
    pre_upright: bool = True
    """The trunk was upright before (a new fall even while one is active)."""
    end_index: int = 0
    """Last sample index at which a rule may confirm it."""
    killed_at: int | None = None
    """Sample at which the patient was up and moving (the long rules stop there)."""
