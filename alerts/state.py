"""Retained wire formats: a patient's latest state and a gateway's status.

``{root}/patients/{patient_id}/state`` (retained, QoS 0)::

    {"patient_id", "gateway_id", "time", "flexion_deg", "lateral_deg",
     "activity", "slouching", "device_connected", "battery_pct",
     "calibrated", "slouch_threshold_deg", "mono_time"?}

``activity`` is the lower-case name of an :class:`Activity` on the wire and
that enum in code, on both sides; a name this version does not know (a newer
gateway) reads as ``Activity.UNKNOWN`` rather than losing the state.

``{root}/gateways/{gateway_id}/status`` (retained, QoS 1; Last Will = offline)::

    {"gateway_id", "status": "online"/"offline", "time", "metrics": {...}}
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from alerts.topics import validate_id
from alerts.wire import (
    PayloadError,
    PayloadLimits,
    decode_object,
    encode_object,
    finite_or_none,
    format_utc_ms,
    opt_float,
    opt_int,
    parse_utc,
    req_bool,
    req_float,
    req_id,
    req_str,
    to_utc_ms,
)

__all__ = [
    "SLOUCH_THRESHOLD_RANGE_DEG",
    "STATE_LIMITS",
    "STATUS_LIMITS",
    "Activity",
    "GatewayState",
    "GatewayStatus",
    "PatientState",
]

# A state is a dozen scalars; a status carries per-wearable metrics (about
# 300 bytes each: 256 KiB is several hundred wearables on one gateway).
STATE_LIMITS = PayloadLimits(max_bytes=4 * 1024, max_depth=1, max_items=32)
STATUS_LIMITS = PayloadLimits(max_bytes=256 * 1024, max_depth=4, max_items=20_000)
# A slouch threshold outside this is no configuration a gateway accepts (it caps at 80°).
SLOUCH_THRESHOLD_RANGE_DEG = (0.0, 90.0)
_ANGLE_RANGE_DEG = (-180.0, 180.0)


class Activity(enum.StrEnum):
    """What the patient is doing, as the wire names it.

    The same names as the engine's ``posture.Activity`` (an IntEnum for its
    per-sample arrays; alerts may not import posture): the gateway converts
    by name once, everything after it uses this enum.
    """

    UNKNOWN = "unknown"
    UPRIGHT = "upright"
    MOVING = "moving"
    WALKING = "walking"
    LYING = "lying"

    @classmethod
    def from_wire(cls, name: object) -> Activity:
        """The activity of a wire name; UNKNOWN for a name this version does not know.

        Raises:
            PayloadError: ``name`` is not a short lower-case string.
        """
        if not isinstance(name, str) or not 0 < len(name) <= 32:
            raise PayloadError(
                f"field 'activity': expected a name like 'walking', got {name!r:.40}"
            )
        try:
            return cls(name)
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class PatientState:
    """The latest posture state of one patient.

    Attributes:
        flexion_deg, lateral_deg: trunk angles from the calibrated upright,
            degrees; None before calibration or while disconnected.
        activity: what the patient is doing (a plain name is converted).
        battery_pct: 0-100, or None when unknown.
        slouch_threshold_deg: the patient's configured threshold, 0-90 degrees.
        mono_time: when the gateway made it on its monotonic clock (see
            ``alerts.clock``), or None (older gateways).

    Raises:
        ValueError: on an invalid id, a naive ``time``, an unknown activity,
            a battery outside 0-100 or a threshold outside 0-90 degrees.
    """

    patient_id: str
    gateway_id: str
    time: datetime
    flexion_deg: float | None
    lateral_deg: float | None
    activity: Activity
    slouching: bool
    device_connected: bool
    battery_pct: int | None
    calibrated: bool
    slouch_threshold_deg: float
    mono_time: datetime | None = None

    def __post_init__(self) -> None:
        validate_id(self.patient_id, "patient")
        validate_id(self.gateway_id, "gateway")
        object.__setattr__(self, "time", to_utc_ms(self.time))
        if self.mono_time is not None:
            object.__setattr__(self, "mono_time", to_utc_ms(self.mono_time))
        object.__setattr__(self, "activity", Activity(self.activity))
        if self.battery_pct is not None and not 0 <= self.battery_pct <= 100:
            raise ValueError(f"battery_pct: expected 0-100 or None, got {self.battery_pct!r}")
        low, high = SLOUCH_THRESHOLD_RANGE_DEG
        if not (
            math.isfinite(self.slouch_threshold_deg) and low <= self.slouch_threshold_deg <= high
        ):
            raise ValueError(
                f"slouch_threshold_deg: expected {low:g}-{high:g} degrees, "
                f"got {self.slouch_threshold_deg!r:.40}"
            )
        object.__setattr__(self, "flexion_deg", finite_or_none(self.flexion_deg))
        object.__setattr__(self, "lateral_deg", finite_or_none(self.lateral_deg))

    @property
    def time_s(self) -> float:
        """``time`` as POSIX seconds."""
        return self.time.timestamp()

    @property
    def mono_time_s(self) -> float | None:
        """``mono_time`` as POSIX seconds, or None."""
        return None if self.mono_time is None else self.mono_time.timestamp()

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object as a dict."""
        return {
            "patient_id": self.patient_id,
            "gateway_id": self.gateway_id,
            "time": format_utc_ms(self.time),
            "flexion_deg": self.flexion_deg,
            "lateral_deg": self.lateral_deg,
            "activity": str(self.activity),
            "slouching": self.slouching,
            "device_connected": self.device_connected,
            "battery_pct": self.battery_pct,
            "calibrated": self.calibrated,
            "slouch_threshold_deg": float(self.slouch_threshold_deg),
            **({} if self.mono_time is None else {"mono_time": format_utc_ms(self.mono_time)}),
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON payload for the state topic."""
        return encode_object(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | bytearray | str) -> PatientState:
        """Parse a state payload (under :data:`STATE_LIMITS`).

        Raises:
            PayloadError: naming the field when the payload breaks the
                contract (ids, types, ranges: angles within ±180°, battery
                0-100, threshold 0-90°, a time after 2000).
        """
        obj = decode_object(data, "patient state", STATE_LIMITS)
        mono_text = obj.get("mono_time")
        return cls(
            patient_id=req_id(obj, "patient_id"),
            gateway_id=req_id(obj, "gateway_id"),
            time=parse_utc(obj.get("time")),
            flexion_deg=opt_float(obj, "flexion_deg", *_ANGLE_RANGE_DEG),
            lateral_deg=opt_float(obj, "lateral_deg", *_ANGLE_RANGE_DEG),
            activity=Activity.from_wire(obj.get("activity")),
            slouching=req_bool(obj, "slouching"),
            device_connected=req_bool(obj, "device_connected"),
            battery_pct=opt_int(obj, "battery_pct", 0, 100),
            calibrated=req_bool(obj, "calibrated"),
            slouch_threshold_deg=req_float(
                obj, "slouch_threshold_deg", *SLOUCH_THRESHOLD_RANGE_DEG
            ),
            mono_time=None if mono_text is None else parse_utc(mono_text, "mono_time"),
        )


class GatewayState(enum.StrEnum):
    """Whether a gateway is publishing."""

    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True)
class GatewayStatus:
    """A gateway's retained status with its metrics.

    ``metrics`` holds JSON-able values (numbers, strings, nested objects such
    as ``{"devices": {"p-001": {"packets_dropped": 0}}}``).
    """

    gateway_id: str
    status: GatewayState
    time: datetime
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_id(self.gateway_id, "gateway")
        object.__setattr__(self, "status", GatewayState(self.status))
        object.__setattr__(self, "time", to_utc_ms(self.time))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def online(self) -> bool:
        """True when the gateway says it is online."""
        return self.status is GatewayState.ONLINE

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object as a dict."""
        return {
            "gateway_id": self.gateway_id,
            "status": str(self.status),
            "time": format_utc_ms(self.time),
            "metrics": dict(self.metrics),
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON payload for the status topic.

        Raises:
            ValueError: when a metric is not JSON-able (e.g. NaN).
        """
        return encode_object(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | bytearray | str) -> GatewayStatus:
        """Parse a status payload.

        Raises:
            PayloadError: naming the field when the payload breaks the contract.
        """
        obj = decode_object(data, "gateway status", STATUS_LIMITS)
        status_text = req_str(obj, "status")
        try:
            status = GatewayState(status_text)
        except ValueError:
            raise PayloadError(
                f"field 'status': expected online/offline, got {status_text!r:.40}"
            ) from None
        metrics = obj.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise PayloadError(f"field 'metrics': expected an object, got {metrics!r:.40}")
        return cls(
            gateway_id=req_id(obj, "gateway_id"),
            status=status,
            time=parse_utc(obj.get("time")),
            metrics=metrics,
        )
