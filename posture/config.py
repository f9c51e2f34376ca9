"""The engine's configuration: one frozen dataclass, validated on creation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from common.errors import ConfigError
from posture.activity import ActivitySettings
from posture.calibration import CalibrationSettings
from posture.falls import FallSettings
from posture.types import OrientationSettings, SlouchSettings

__all__ = ["EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """Settings of one :class:`~posture.engine.PostureEngine` (one wearable).

    ``sample_rate_hz``: the wearable's nominal rate (10-2000 Hz); filters are
    designed for it and a step of more than 2.5 nominal intervals between
    samples is a gap. ``has_gyro``: whether blocks carry gyroscope data.
    ``nominal_up_sensor``: the up-direction in sensor axes of an upright
    wearer in the nominal mounting (see :mod:`posture.calibration`): a still
    pose within 35° of it calibrates at once, and before any calibration
    the fall detector takes it as an unmeasured guess; datasets with other
    mountings pass theirs (SisFall: ``(0, -1, 0)``). ``auto_calibrate``:
    find the upright automatically (a still pose near the nominal up, or
    walking, for any spin of the puck; rules in :mod:`posture.calibration`).

    Raises:
        ConfigError: a value is out of range (the message names the field).
    """

    sample_rate_hz: float
    has_gyro: bool
    slouch: SlouchSettings = field(default_factory=SlouchSettings)
    fall: FallSettings = field(default_factory=FallSettings)
    auto_calibrate: bool = True
    nominal_up_sensor: tuple[float, float, float] = (0.0, 1.0, 0.0)
    orientation: OrientationSettings = field(default_factory=OrientationSettings)
    activity: ActivitySettings = field(default_factory=ActivitySettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)

    def __post_init__(self) -> None:
        rate = self.sample_rate_hz
        if not (isinstance(rate, int | float) and math.isfinite(rate) and 10 <= rate <= 2000):
            raise ConfigError(f"EngineConfig.sample_rate_hz must be in 10..2000 Hz, got {rate!r}")
        if not isinstance(self.has_gyro, bool):
            raise ConfigError(f"EngineConfig.has_gyro must be a bool, got {self.has_gyro!r}")
        if not isinstance(self.auto_calibrate, bool):
            raise ConfigError(
                f"EngineConfig.auto_calibrate must be a bool, got {self.auto_calibrate!r}"
            )
        up = self.nominal_up_sensor
        try:
            values = [float(v) for v in up]
        except (TypeError, ValueError):
            values = []
        if len(values) != 3 or not all(map(math.isfinite, values)) or not any(values):
            raise ConfigError(
                f"EngineConfig.nominal_up_sensor must be a non-zero 3-vector, got {up!r}"
            )
        expected = {
            "slouch": SlouchSettings,
            "fall": FallSettings,
            "orientation": OrientationSettings,
            "activity": ActivitySettings,
            "calibration": CalibrationSettings,
        }
        for name, cls in expected.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"EngineConfig.{name} must be a {cls.__name__}")
