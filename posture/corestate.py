"""The whole per-device state of an :class:`~posture.core.EngineCore`, as one object.

:class:`EngineState` nests the state of every component (gravity filter,
activity, calibration capture, slouch detector), each device's slouch rule
and the core's own memory (:class:`CoreState`). It follows
:mod:`posture.state`: every field is an array with the device on the last
axis or a nested state, so :func:`posture.state.take`, :func:`~posture.state.put`,
:func:`~posture.state.grow` and :func:`~posture.state.copy` handle it whole.
The fall detectors are per-device objects kept beside it (:mod:`posture.falls`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from posture.activity import ActivityState
from posture.capture import CaptureState
from posture.orientation import GravityState
from posture.slouch import SlouchParams, SlouchState

__all__ = ["CoreState", "EngineState"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
ObjectArray = NDArray[np.object_]


@dataclass(slots=True)
class CoreState:
    """The core's own memory, one column per device.

    ``calibrations`` (D,) object: each device's
    :class:`~posture.calibration.Calibration` or None; ``matrix`` (3, 3, D)
    its rotation and ``calibrated`` (D,) whether there is one;
    ``last_t_s`` (D,) the last sample's time (NaN before any);
    ``last_angles`` (2, D) the last flexion and lateral bend in degrees;
    ``samples``, ``blocks``, ``gaps``, ``clock_resets`` (D,) counters.
    """

    calibrations: ObjectArray
    matrix: FloatArray
    calibrated: BoolArray
    last_t_s: FloatArray
    last_angles: FloatArray
    samples: IntArray
    blocks: IntArray
    gaps: IntArray
    clock_resets: IntArray

    @classmethod
    def fresh(cls, devices: int) -> CoreState:
        return cls(
            calibrations=np.full(devices, None, dtype=object),
            matrix=np.zeros((3, 3, devices)),
            calibrated=np.zeros(devices, dtype=bool),
            last_t_s=np.full(devices, math.nan),
            last_angles=np.full((2, devices), math.nan),
            samples=np.zeros(devices, dtype=np.int64),
            blocks=np.zeros(devices, dtype=np.int64),
            gaps=np.zeros(devices, dtype=np.int64),
            clock_resets=np.zeros(devices, dtype=np.int64),
        )


@dataclass(slots=True)
class EngineState:
    """Everything an :class:`~posture.core.EngineCore` remembers per device
    (module docstring); ``slouch_params`` is each device's slouch rule."""

    gravity: GravityState
    activity: ActivityState
    capture: CaptureState
    slouch: SlouchState
    slouch_params: SlouchParams
    core: CoreState
