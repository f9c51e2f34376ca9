"""Parsing of the MQTT messages the dashboard consumes, and the JSON it publishes.

The topics and payloads are the contract in docs/architecture.md (state, events,
acks, gateway status) plus the three the dashboard adds (escalations, daily
summaries; see docs/dashboard.md). Everything that arrives from the broker is
untrusted: a payload that does not fit raises :class:`WireFormatError`, which
the service counts and logs as a dropped message; it never stops the service.

Times on the wire are ISO 8601 UTC strings with milliseconds and a ``Z``;
inside the dashboard they are POSIX seconds (``*_s`` floats).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alerts.topics import ID_PATTERN
from alerts.wire import decode_object, format_utc_ms, parse_utc, utc_from_timestamp
from common.errors import PostureMonitorError

__all__ = [
    "ACK_ACTIONS",
    "ID_PATTERN",
    "AckMessage",
    "EscalationMessage",
    "EventMessage",
    "GatewayStatusMessage",
    "StateMessage",
    "TopicKind",
    "TopicMap",
    "WireFormatError",
    "format_time",
    "parse_ack",
    "parse_escalation",
    "parse_event",
    "parse_gateway_status",
    "parse_state",
    "parse_time",
]

ACK_ACTIONS = ("acknowledged", "resolved")
_MAX_NAME_LEN = 128


class WireFormatError(PostureMonitorError, ValueError):
    """A message from the broker does not match the documented format."""


class TopicKind(enum.StrEnum):
    """What a topic under the root carries."""

    STATE = "state"
    EVENTS = "events"
    ACKS = "acks"
    ESCALATIONS = "escalations"
    SUMMARY = "summary"
    SUMMARY_ARCHIVE = "summary_archive"
    GATEWAY_STATUS = "gateway_status"


@dataclass(frozen=True)
class TopicMap:
    """Topic names under one root (default ``posture/v1``)."""

    root: str = "posture/v1"

    def __post_init__(self) -> None:
        if not self.root or self.root.endswith("/") or any(c in self.root for c in "+#"):
            raise ValueError(
                f"topic root must be non-empty, without wildcards or a trailing "
                f"'/', got {self.root!r}"
            )

    def patient(self, patient_id: str, leaf: str) -> str:
        """``{root}/patients/{patient_id}/{leaf}``."""
        return f"{self.root}/patients/{patient_id}/{leaf}"

    def summary_archive(self, patient_id: str, day_iso: str) -> str:
        """Retained summary of one past or current day: ``.../summary/YYYY-MM-DD``."""
        return f"{self.root}/patients/{patient_id}/summary/{day_iso}"

    def subscriptions(self) -> tuple[str, ...]:
        """The filters the dashboard subscribes to (not the per-day summary archive)."""
        return (
            f"{self.root}/gateways/+/status",
            f"{self.root}/patients/+/state",
            f"{self.root}/patients/+/events",
            f"{self.root}/patients/+/acks",
            f"{self.root}/patients/+/escalations",
            f"{self.root}/patients/+/summary",
        )

    def classify(self, topic: str) -> tuple[TopicKind, str] | None:
        """Return (kind, patient or gateway id) or None for a topic we do not use."""
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if len(parts) < 3 or ID_PATTERN.fullmatch(parts[1]) is None:
            return None
        if len(parts) == 3 and parts[0] == "gateways" and parts[2] == "status":
            return TopicKind.GATEWAY_STATUS, parts[1]
        if len(parts) == 3 and parts[0] == "patients":
            try:
                return TopicKind(parts[2]), parts[1]
            except ValueError:
                return None
        if len(parts) == 4 and parts[0] == "patients" and parts[2] == "summary":
            return TopicKind.SUMMARY_ARCHIVE, parts[1]
        return None


def parse_time(value: object, key: str = "time") -> float:
    """ISO 8601 string (``...Z`` or with an offset) to POSIX seconds.

    Raises:
        WireFormatError: not a string, not ISO 8601, or without a time zone.
    """
    try:
        return parse_utc(value, key).timestamp()
    except ValueError as exc:
        raise WireFormatError(str(exc)) from None


def format_time(t_s: float) -> str:
    """POSIX seconds to ISO 8601 UTC with milliseconds and a ``Z``."""
    return format_utc_ms(utc_from_timestamp(t_s))


def _load(payload: bytes) -> dict[str, Any]:
    try:
        return decode_object(payload, "payload")
    except ValueError as exc:
        raise WireFormatError(str(exc)) from None


def _ident(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise WireFormatError(
            f"{key!r} must be 1-64 characters from A-Z a-z 0-9 '_' '-', got {str(value)[:80]!r}"
        )
    return value


def _opt_float(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WireFormatError(f"{key!r} must be a finite number or null, got {value!r}")
    return float(value)


def _bool(obj: Mapping[str, Any], key: str, default: bool | None = None) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise WireFormatError(f"{key!r} must be true or false, got {value!r}")
    return value


_ACTIVITY_NAMES = ("unknown", "upright", "moving", "walking", "lying")


def _activity(value: object) -> str:
    # The engine's Activity is an IntEnum; accept its name or its number so the
    # dashboard does not depend on which one the publisher chose.
    if isinstance(value, bool):
        raise WireFormatError(f"'activity' must be a name or a number, got {value!r}")
    if isinstance(value, int):
        if 0 <= value < len(_ACTIVITY_NAMES):
            return _ACTIVITY_NAMES[value]
        return "unknown"
    if isinstance(value, str) and 0 < len(value) <= 32:
        return value.lower()
    if value is None:
        return "unknown"
    raise WireFormatError(f"'activity' must be a name or a number, got {value!r}")


@dataclass(frozen=True)
class StateMessage:
    """One ``.../state`` message: the latest posture of a patient."""

    patient_id: str
    gateway_id: str
    time_s: float
    flexion_deg: float | None
    lateral_deg: float | None
    activity: str
    slouching: bool
    device_connected: bool
    battery_pct: float | None
    calibrated: bool
    slouch_threshold_deg: float | None


def parse_state(payload: bytes) -> StateMessage:
    """Parse a state payload. Raises WireFormatError."""
    obj = _load(payload)
    return StateMessage(
        patient_id=_ident(obj, "patient_id"),
        gateway_id=str(obj.get("gateway_id") or ""),
        time_s=parse_time(obj.get("time")),
        flexion_deg=_opt_float(obj, "flexion_deg"),
        lateral_deg=_opt_float(obj, "lateral_deg"),
        activity=_activity(obj.get("activity")),
        slouching=_bool(obj, "slouching", False),
        device_connected=_bool(obj, "device_connected"),
        battery_pct=_opt_float(obj, "battery_pct"),
        calibrated=_bool(obj, "calibrated", False),
        slouch_threshold_deg=_opt_float(obj, "slouch_threshold_deg"),
    )


_SEVERITY_OF_TYPE = {
    "fall_detected": "high",
    "device_disconnected": "medium",
    "battery_low": "medium",
    "slouch_started": "low",
    "slouch_ended": "info",
    "fall_cancelled": "info",
    "device_connected": "info",
}


@dataclass(frozen=True)
class EventMessage:
    """One ``.../events`` message (see the event JSON in docs/architecture.md)."""

    event_id: str
    type: str
    patient_id: str
    gateway_id: str
    time_s: float
    severity: str
    flexion_deg: float | None
    lateral_deg: float | None
    device_time_s: float | None
    details: Mapping[str, float] = field(default_factory=dict)


def parse_event(payload: bytes) -> EventMessage:
    """Parse an event payload. Raises WireFormatError.

    An unknown ``type`` is accepted (shown as-is, severity from the message)
    so a newer gateway does not make old dashboards drop alerts; a missing
    severity is derived from the type, and a fall is always ``high``.
    """
    obj = _load(payload)
    event_type = _ident(obj, "type")
    severity = obj.get("severity")
    if not isinstance(severity, str) or severity not in ("high", "medium", "low", "info"):
        severity = _SEVERITY_OF_TYPE.get(event_type, "medium")
    if event_type == "fall_detected":
        severity = "high"  # never let a malformed severity hide a fall
    raw_details = obj.get("details") or {}
    if not isinstance(raw_details, dict):
        raise WireFormatError(f"'details' must be an object, got {raw_details!r}")
    details = {
        str(k): float(v)
        for k, v in raw_details.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    return EventMessage(
        event_id=_ident(obj, "event_id"),
        type=event_type,
        patient_id=_ident(obj, "patient_id"),
        gateway_id=str(obj.get("gateway_id") or ""),
        time_s=parse_time(obj.get("time")),
        severity=severity,
        flexion_deg=_opt_float(obj, "flexion_deg"),
        lateral_deg=_opt_float(obj, "lateral_deg"),
        device_time_s=_opt_float(obj, "device_time_s"),
        details=details,
    )


@dataclass(frozen=True)
class AckMessage:
    """``.../acks``: a person acknowledged or resolved an event."""

    event_id: str
    action: str
    by: str
    time_s: float

    def to_json(self) -> bytes:
        """The wire payload: ``{"event_id", "action", "by", "time"}``."""
        return json.dumps(
            {
                "event_id": self.event_id,
                "action": self.action,
                "by": self.by,
                "time": format_time(self.time_s),
            }
        ).encode()


def parse_ack(payload: bytes) -> AckMessage:
    """Parse an ack payload. Raises WireFormatError."""
    obj = _load(payload)
    action = obj.get("action")
    if action not in ACK_ACTIONS:
        raise WireFormatError(f"'action' must be one of {ACK_ACTIONS}, got {action!r}")
    by = obj.get("by")
    if not isinstance(by, str) or len(by) > _MAX_NAME_LEN:
        raise WireFormatError(f"'by' must be a string, got {by!r}")
    return AckMessage(
        event_id=_ident(obj, "event_id"), action=action, by=by, time_s=parse_time(obj.get("time"))
    )


@dataclass(frozen=True)
class EscalationMessage:
    """``.../escalations``: a fall was not acknowledged in time."""

    event_id: str
    patient_id: str
    level: int
    time_s: float

    def to_json(self) -> bytes:
        """``{"event_id", "level", "time", "patient_id"}`` (patient_id is extra)."""
        return json.dumps(
            {
                "event_id": self.event_id,
                "level": self.level,
                "time": format_time(self.time_s),
                "patient_id": self.patient_id,
            }
        ).encode()


def parse_escalation(payload: bytes, patient_id: str) -> EscalationMessage:
    """Parse an escalation payload; the patient comes from the topic."""
    obj = _load(payload)
    level = obj.get("level")
    if level not in (1, 2) or isinstance(level, bool):
        raise WireFormatError(f"'level' must be 1 or 2, got {level!r}")
    return EscalationMessage(
        event_id=_ident(obj, "event_id"),
        patient_id=patient_id,
        level=int(level),
        time_s=parse_time(obj.get("time")),
    )


@dataclass(frozen=True)
class GatewayStatusMessage:
    """``{root}/gateways/{id}/status`` (retained; the Last Will says offline)."""

    gateway_id: str
    online: bool
    time_s: float | None


def parse_gateway_status(payload: bytes, gateway_id: str) -> GatewayStatusMessage:
    """Parse a gateway status; an empty payload (retained message cleared) is offline."""
    if not payload:
        return GatewayStatusMessage(gateway_id=gateway_id, online=False, time_s=None)
    obj = _load(payload)
    status = obj.get("status")
    if status not in ("online", "offline"):
        raise WireFormatError(f"'status' must be 'online' or 'offline', got {status!r}")
    time_value = obj.get("time")
    # A Last Will is written when the gateway connects, so its time may be old
    # or absent; the status itself is what matters.
    time_s = parse_time(time_value) if time_value is not None else None
    return GatewayStatusMessage(gateway_id=gateway_id, online=status == "online", time_s=time_s)
