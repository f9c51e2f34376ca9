"""Posture engine: trunk angles, activity, slouch and fall events from IMU samples.

Pure numerics: no I/O and no wall clock; sample timestamps are the only
clock. See docs/architecture.md for the contract and
:mod:`posture.calibration` for the mounting convention.
"""

from posture.batch import BatchBlock, BatchEngine
from posture.calibration import Calibration, CalibrationError
from posture.config import EngineConfig
from posture.engine import EngineStats, PostureEngine
from posture.falls import FallSettings
from posture.types import (
    Activity,
    EngineBlock,
    OrientationSettings,
    PostureEvent,
    PostureEventKind,
    SampleError,
    SlouchSettings,
)

__all__ = [
    "Activity",
    "BatchBlock",
    "BatchEngine",
    "Calibration",
    "CalibrationError",
    "EngineBlock",
    "EngineConfig",
    "EngineStats",
    "FallSettings",
    "OrientationSettings",
    "PostureEngine",
    "PostureEvent",
    "PostureEventKind",
    "SampleError",
    "SlouchSettings",
]
