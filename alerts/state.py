"""Retained wire formats: a patient's latest state and a gateway's status.

``{root}/patients/{patient_id}/state`` (retained, QoS 0)::

    {"patient_id", "gateway_id", "time", "flexion_deg", "lateral_deg",
     "activity", "slouching", "device_connected", "battery_pct",
     "calibrated", "slouch_threshold_deg"}

``{root}/gateways/{gateway_id}/status`` (retained, QoS 1; Last Will = offline)::

    {"gateway_id", "status": "online"/"offline", "time", "metrics": {...}}
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from alerts.topics import validate_id
from alerts.wire import (
    decode_object,
    encode_object,
    finite_or_none,
    format_utc_ms,
    opt_float,
    opt_int,
    parse_utc,
    req_bool,
    req_float,
    req_str,
    to_utc_ms,
)

__all__ = ["GatewayState", "GatewayStatus", "PatientState"]

# Activity travels as the lower-case name of posture.Activity ("upright",
# "walking", ...); alerts may not import posture, so only the shape is checked.
_ACTIVITY = re.compile(r"[a-z_]{1,32}")


@dataclass(frozen=True)
class PatientState:
    """The latest posture state of one patient.

    Attributes:
        flexion_deg, lateral_deg: trunk angles from the calibrated upright,
            degrees; None before calibration or while disconnected.
        activity: lower-case ``posture.Activity`` name, e.g. "walking".
        battery_pct: 0-100, or None when unknown.
        slouch_threshold_deg: the patient's configured threshold, degrees.

    Raises:
        ValueError: on an invalid id, a naive ``time``, a malformed activity
            or a battery outside 0-100.
    """

    patient_id: str
    gateway_id: str
    time: datetime
    flexion_deg: float | None
    lateral_deg: float | None
    activity: str
    slouching: bool
    device_connected: bool
    battery_pct: int | None
    calibrated: bool
    slouch_threshold_deg: float

    def __post_init__(self) -> None:
        validate_id(self.patient_id, "patient")
        validate_id(self.gateway_id, "gateway")
        object.__setattr__(self, "time", to_utc_ms(self.time))
        if not isinstance(self.activity, str) or _ACTIVITY.fullmatch(self.activity) is None:
            raise ValueError(
                f"activity: expected a lower-case name like 'walking', got {self.activity!r:.40}"
            )
        if self.battery_pct is not None and not 0 <= self.battery_pct <= 100:
            raise ValueError(f"battery_pct: expected 0-100 or None, got {self.battery_pct!r}")
        if not math.isfinite(self.slouch_threshold_deg):
            raise ValueError("slouch_threshold_deg: expected a finite number of degrees")
        object.__setattr__(self, "flexion_deg", finite_or_none(self.flexion_deg))
        object.__setattr__(self, "lateral_deg", finite_or_none(self.lateral_deg))

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object as a dict."""
        return {
            "patient_id": self.patient_id,
            "gateway_id": self.gateway_id,
            "time": format_utc_ms(self.time),
            "flexion_deg": self.flexion_deg,
            "lateral_deg": self.lateral_deg,
            "activity": self.activity,
            "slouching": self.slouching,
            "device_connected": self.device_connected,
            "battery_pct": self.battery_pct,
            "calibrated": self.calibrated,
            "slouch_threshold_deg": float(self.slouch_threshold_deg),
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON payload for the state topic."""
        return encode_object(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | bytearray | str) -> PatientState:
        """Parse a state payload.

        Raises:
            ValueError: naming the field when the payload breaks the contract.
        """
        obj = decode_object(data, "patient state")
        return cls(
            patient_id=req_str(obj, "patient_id"),
            gateway_id=req_str(obj, "gateway_id"),
            time=parse_utc(obj.get("time")),
            flexion_deg=opt_float(obj, "flexion_deg"),
            lateral_deg=opt_float(obj, "lateral_deg"),
            activity=req_str(obj, "activity"),
            slouching=req_bool(obj, "slouching"),
            device_connected=req_bool(obj, "device_connected"),
            battery_pct=opt_int(obj, "battery_pct"),
            calibrated=req_bool(obj, "calibrated"),
            slouch_threshold_deg=req_float(obj, "slouch_threshold_deg"),
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
            ValueError: naming the field when the payload breaks the contract.
        """
        obj = decode_object(data, "gateway status")
        status_text = req_str(obj, "status")
        try:
            status = GatewayState(status_text)
        except ValueError as exc:
            raise ValueError(
                f"field 'status': expected online/offline, got {status_text!r:.40}"
            ) from exc
        metrics = obj.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise ValueError(f"field 'metrics': expected an object, got {metrics!r:.40}")
        return cls(
            gateway_id=req_str(obj, "gateway_id"),
            status=status,
            time=parse_utc(obj.get("time")),
            metrics=metrics,
        )
