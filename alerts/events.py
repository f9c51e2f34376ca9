"""Alert events: what happened to a patient, as sent on ``.../events``.

The JSON form is the contract with ``physio/`` (docs/architecture.md)::

    {"event_id": "uuid4 hex", "type": "fall_detected", "patient_id": "p-001",
     "gateway_id": "ward-3", "time": "2026-11-24T08:15:02.120Z",
     "severity": "high", "flexion_deg": 78.1, "lateral_deg": -4.0,
     "device_time_s": 41.02, "details": {"peak_acc_g": 5.1}}

Angles are null where they do not apply. The ``event_id`` is the identity
of an event end to end: the outbox keys on it and consumers de-duplicate on
it, because QoS 1 is at-least-once.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from alerts.topics import validate_id
from alerts.wire import (
    DropReason,
    PayloadError,
    PayloadLimits,
    decode_object,
    encode_object,
    finite_or_none,
    format_utc_ms,
    opt_float,
    parse_utc,
    req_id,
    req_str,
    to_utc_ms,
)

__all__ = [
    "DEFAULT_SLOUCH_EXPIRY_S",
    "EVENT_LIMITS",
    "FALL_TYPES",
    "SLOUCH_TYPES",
    "AlertEvent",
    "EventType",
    "Severity",
    "severity_of",
]

# A slouch reminder older than this is noise, not help: MQTT 5 message expiry
# and the outbox both drop it. Falls never expire.
DEFAULT_SLOUCH_EXPIRY_S = 300
# An event is a dozen fields and a few details: 16 KiB is ample, and keeps a
# hostile one from costing anything.
EVENT_LIMITS = PayloadLimits(max_bytes=16 * 1024, max_depth=2, max_items=64)
_MAX_DETAILS = 32
_ANGLE_RANGE_DEG = (-180.0, 180.0)


class EventType(enum.StrEnum):
    """The seven alert event types on the wire."""

    SLOUCH_STARTED = "slouch_started"
    SLOUCH_ENDED = "slouch_ended"
    FALL_DETECTED = "fall_detected"
    FALL_CANCELLED = "fall_cancelled"
    DEVICE_CONNECTED = "device_connected"
    DEVICE_DISCONNECTED = "device_disconnected"
    BATTERY_LOW = "battery_low"


class Severity(enum.StrEnum):
    """How urgent an event is; ``rank`` orders them (info 0 ... high 3)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 for info up to 3 for high."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3}

_SEVERITY_BY_TYPE: Mapping[EventType, Severity] = MappingProxyType(
    {
        EventType.FALL_DETECTED: Severity.HIGH,
        EventType.DEVICE_DISCONNECTED: Severity.MEDIUM,
        EventType.BATTERY_LOW: Severity.MEDIUM,
        EventType.SLOUCH_STARTED: Severity.LOW,
        EventType.SLOUCH_ENDED: Severity.INFO,
        EventType.FALL_CANCELLED: Severity.INFO,
        EventType.DEVICE_CONNECTED: Severity.INFO,
    }
)

# Both fall types are never evicted, never expire and go out first: a lost
# cancellation would leave a false fall alarm standing.
FALL_TYPES = frozenset({EventType.FALL_DETECTED, EventType.FALL_CANCELLED})
SLOUCH_TYPES = frozenset({EventType.SLOUCH_STARTED, EventType.SLOUCH_ENDED})


def severity_of(event_type: EventType) -> Severity:
    """The contract's severity for an event type."""
    return _SEVERITY_BY_TYPE[event_type]


def _new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class AlertEvent:
    """One alert event.

    Attributes:
        type: what happened.
        patient_id, gateway_id: ids matching ``[A-Za-z0-9_-]{1,64}``.
        time: aware datetime, the sample time mapped to UTC.
        flexion_deg, lateral_deg: trunk angles at the event, None where they
            do not apply (NaN is stored as None).
        device_time_s: sample time on the wearable's clock, s, or None.
        details: extra numbers, e.g. ``{"peak_acc_g": 5.1}``.
        event_id: unique id (uuid4 hex by default), kept across retries.
        severity: derived from ``type`` when not given.
        mono_time: when the gateway made the event on its monotonic clock
            anchored to its wall clock at start (see ``alerts.clock``), or
            None (older gateways); unaffected by wall-clock steps.

    Raises:
        ValueError: (``ConfigError`` for ids) on an invalid id, a naive
            ``time``, or non-numeric details.
    """

    type: EventType
    patient_id: str
    gateway_id: str
    time: datetime
    flexion_deg: float | None = None
    lateral_deg: float | None = None
    device_time_s: float | None = None
    details: Mapping[str, float] = field(default_factory=dict)
    event_id: str = field(default_factory=_new_event_id)
    severity: Severity | None = None
    mono_time: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", EventType(self.type))
        validate_id(self.patient_id, "patient")
        validate_id(self.gateway_id, "gateway")
        validate_id(self.event_id, "event")
        object.__setattr__(self, "time", to_utc_ms(self.time))
        if self.mono_time is not None:
            object.__setattr__(self, "mono_time", to_utc_ms(self.mono_time))
        if self.severity is None:
            object.__setattr__(self, "severity", severity_of(self.type))
        else:
            object.__setattr__(self, "severity", Severity(self.severity))
        for name in ("flexion_deg", "lateral_deg", "device_time_s"):
            object.__setattr__(self, name, finite_or_none(getattr(self, name)))
        clean: dict[str, float] = {}
        for key, value in dict(self.details).items():
            if not isinstance(key, str) or isinstance(value, bool):
                raise ValueError(f"details: expected str -> number, got {key!r}: {value!r}")
            if not isinstance(value, int | float):
                raise ValueError(f"details[{key!r}]: expected a number, got {value!r:.40}")
            # A non-finite detail is dropped: JSON cannot carry it.
            if math.isfinite(value):
                clean[key] = float(value)
        object.__setattr__(self, "details", MappingProxyType(clean))

    @property
    def time_s(self) -> float:
        """``time`` as POSIX seconds."""
        return self.time.timestamp()

    @property
    def mono_time_s(self) -> float | None:
        """``mono_time`` as POSIX seconds, or None."""
        return None if self.mono_time is None else self.mono_time.timestamp()

    @property
    def is_fall(self) -> bool:
        """True for fall_detected and fall_cancelled."""
        return self.type in FALL_TYPES

    def default_expiry_s(self, slouch_expiry_s: float = DEFAULT_SLOUCH_EXPIRY_S) -> float | None:
        """Message expiry for this event: ``slouch_expiry_s`` for slouch
        events, None (never) for everything else, falls included."""
        return float(slouch_expiry_s) if self.type in SLOUCH_TYPES else None

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object as a dict."""
        severity = self.severity or severity_of(self.type)
        return {
            "event_id": self.event_id,
            "type": str(self.type),
            "patient_id": self.patient_id,
            "gateway_id": self.gateway_id,
            "time": format_utc_ms(self.time),
            "severity": str(severity),
            "flexion_deg": self.flexion_deg,
            "lateral_deg": self.lateral_deg,
            "device_time_s": self.device_time_s,
            "details": dict(self.details),
            **({} if self.mono_time is None else {"mono_time": format_utc_ms(self.mono_time)}),
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON payload for the events topic."""
        return encode_object(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | bytearray | str) -> AlertEvent:
        """Parse an events payload (under :data:`EVENT_LIMITS`).

        The severity is the contract's for the type, whatever the payload
        says: a malformed severity must never hide a fall.

        Raises:
            PayloadError: naming the field when the payload does not follow
                the contract; ``reason`` UNKNOWN_TYPE for a type outside
                :class:`EventType` (never shown as an alert).
        """
        obj = decode_object(data, "alert event", EVENT_LIMITS)
        type_text = req_str(obj, "type", 64)
        try:
            event_type = EventType(type_text)
        except ValueError:
            raise PayloadError(
                f"field 'type': unknown event type {type_text!r:.40}", DropReason.UNKNOWN_TYPE
            ) from None
        details = obj.get("details") or {}
        if not isinstance(details, dict) or len(details) > _MAX_DETAILS:
            raise PayloadError(
                f"field 'details': expected an object of <= {_MAX_DETAILS} numbers, "
                f"got {details!r:.40}"
            )
        if any(
            isinstance(v, bool) or not isinstance(v, int | float) or len(k) > 64
            for k, v in details.items()
        ):
            raise PayloadError("field 'details': expected short names -> numbers")
        mono_text = obj.get("mono_time")
        try:
            return cls(
                type=event_type,
                patient_id=req_id(obj, "patient_id"),
                gateway_id=req_id(obj, "gateway_id"),
                time=parse_utc(obj.get("time")),
                flexion_deg=opt_float(obj, "flexion_deg", *_ANGLE_RANGE_DEG),
                lateral_deg=opt_float(obj, "lateral_deg", *_ANGLE_RANGE_DEG),
                device_time_s=opt_float(obj, "device_time_s", -1e12, 1e12),
                details={k: float(v) for k, v in details.items()},
                event_id=req_id(obj, "event_id"),
                mono_time=None if mono_text is None else parse_utc(mono_text, "mono_time"),
            )
        except OverflowError:  # a detail too large for a float
            raise PayloadError(
                "field 'details': number out of range", DropReason.BAD_NUMBER
            ) from None
