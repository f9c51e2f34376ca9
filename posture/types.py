"""Value types of the posture engine: settings, outputs and events.

These are the contract in docs/architecture.md. Settings are frozen
dataclasses validated on construction; outputs are frozen dataclasses of
NumPy arrays.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from common.errors import PostureMonitorError

__all__ = [
    "Activity",
    "EngineBlock",
    "OrientationSettings",
    "PostureEvent",
    "PostureEventKind",
    "SampleError",
    "SlouchSettings",
    "check_positive_fields",
]


class SampleError(PostureMonitorError, ValueError):
    """A block of samples handed to the engine is malformed.

    Wrong shapes, non-finite values, or gyroscope data that does not match
    the configuration. The message says what was expected and what came.
    """


class Activity(enum.IntEnum):
    """What the wearer is doing, per sample (stored as int8 in blocks)."""

    UNKNOWN = 0  # the filter has not settled since the start or a gap
    UPRIGHT = 1  # still, trunk not lying (sitting/standing, slouched too)
    MOVING = 2  # non-periodic motion (bending, transferring)
    WALKING = 3
    LYING = 4  # trunk more than ~60° from upright and quasi-static


class PostureEventKind(enum.StrEnum):
    """Kinds of :class:`PostureEvent`."""

    SLOUCH_STARTED = "slouch_started"
    SLOUCH_ENDED = "slouch_ended"
    FALL_DETECTED = "fall_detected"
    FALL_CANCELLED = "fall_cancelled"
    CALIBRATED = "calibrated"


@dataclass(frozen=True)
class PostureEvent:
    """Something the physiotherapist may need to know about.

    ``t_s`` is the sample time (wearable clock, seconds) at which the event
    became true; ``flexion_deg`` and ``lateral_deg`` are the angles at that
    sample (NaN if not calibrated yet). ``details`` holds numbers with units
    in their keys, e.g. ``{"duration_s": 31.0}`` or ``{"peak_acc_g": 4.2}``.
    """

    kind: PostureEventKind
    t_s: float
    flexion_deg: float
    lateral_deg: float
    details: Mapping[str, float]


@dataclass(frozen=True)
class EngineBlock:
    """The engine's output for one input block of ``n`` samples.

    ``flexion_deg`` (n,) forward bend from the calibrated upright, + forward;
    ``lateral_deg`` (n,) + toward the patient's right; both NaN until
    calibrated. ``activity`` (n,) int8 :class:`Activity` values;
    ``slouching`` (n,) bool; ``events`` in time order.
    """

    t_s: NDArray[np.float64]
    flexion_deg: NDArray[np.float64]
    lateral_deg: NDArray[np.float64]
    activity: NDArray[np.int8]
    slouching: NDArray[np.bool_]
    events: tuple[PostureEvent, ...]


def check_positive_fields(settings: object) -> None:
    """Raise ValueError naming the field unless every float field is finite and > 0."""
    for name, value in vars(settings).items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            _check_positive(type(settings).__name__, **{name: value})


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0.0):
            raise ValueError(f"{owner}.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class SlouchSettings:
    """Per-patient slouch rule.

    Slouching means flexion beyond ``threshold_deg`` (or ``|lateral|`` beyond
    ``lateral_threshold_deg``) for ``dwell_s`` of counted time; it ends once
    both fall below their threshold minus ``hysteresis_deg``.
    ``while_walking``: walking hunched counts too (the default: hunched gait
    loads osteoporotic vertebrae most); False: walking resets the count.
    """

    threshold_deg: float = 25.0
    hysteresis_deg: float = 5.0
    dwell_s: float = 30.0
    lateral_threshold_deg: float = 20.0
    while_walking: bool = True

    def __post_init__(self) -> None:
        _check_positive(
            "SlouchSettings",
            threshold_deg=self.threshold_deg,
            dwell_s=self.dwell_s,
            lateral_threshold_deg=self.lateral_threshold_deg,
        )
        if not (math.isfinite(self.hysteresis_deg) and self.hysteresis_deg >= 0.0):
            raise ValueError(
                f"SlouchSettings.hysteresis_deg must be >= 0, got {self.hysteresis_deg!r}"
            )
        if self.hysteresis_deg >= min(self.threshold_deg, self.lateral_threshold_deg):
            raise ValueError(
                "SlouchSettings.hysteresis_deg must be smaller than both thresholds, "
                f"got {self.hysteresis_deg!r}"
            )
        if self.threshold_deg >= 90.0 or self.lateral_threshold_deg >= 90.0:
            raise ValueError("SlouchSettings thresholds must be below 90°")
        if not isinstance(self.while_walking, bool):
            raise ValueError(
                f"SlouchSettings.while_walking must be a bool, got {self.while_walking!r}"
            )


@dataclass(frozen=True)
class OrientationSettings:
    """Tuning of the gravity (inclination) filter; defaults suit a trunk IMU.

    ``tau_acc_s``: accelerometer low-pass time constant in the gyroscope's
    inertial frame (gyroscope wearables). ``acc_only_cutoff_hz``: cutoff of
    the accelerometer low-pass for wearables without a gyroscope.
    ``gyr_delay_s``: how much later the gyroscope samples are than the
    accelerometer and the true motion (a sensor property; 0 unless measured).
    """

    tau_acc_s: float = 3.0
    acc_only_cutoff_hz: float = 3.0
    gyr_delay_s: float = 0.0

    def __post_init__(self) -> None:
        _check_positive(
            "OrientationSettings",
            tau_acc_s=self.tau_acc_s,
            acc_only_cutoff_hz=self.acc_only_cutoff_hz,
        )
        if not (math.isfinite(self.gyr_delay_s) and 0.0 <= self.gyr_delay_s <= 0.05):
            raise ValueError(
                f"OrientationSettings.gyr_delay_s must be in 0..0.05 s, got {self.gyr_delay_s!r}"
            )
