"""What people do about alerts, as sent on ``.../acks`` and ``.../escalations``.

``{root}/patients/{patient_id}/acks`` (QoS 1, from a dashboard)::

    {"event_id", "action": "acknowledged"/"resolved", "by", "time"}

``{root}/patients/{patient_id}/escalations`` (QoS 1, from a dashboard)::

    {"event_id", "level": 1.., "time", "patient_id"}

Both name an event by its ``event_id``; the patient is the topic's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alerts.topics import validate_id
from alerts.wire import (
    DropReason,
    PayloadError,
    PayloadLimits,
    decode_object,
    encode_object,
    format_utc_ms,
    opt_int,
    parse_utc,
    req_id,
    req_str,
    to_utc_ms,
    utc_from_timestamp,
)

__all__ = [
    "ACK_ACTIONS",
    "ACK_LIMITS",
    "MAX_ESCALATION_LEVEL",
    "MAX_NAME_CHARS",
    "Ack",
    "AckAction",
    "EscalationMessage",
]

ACK_LIMITS = PayloadLimits(max_bytes=2 * 1024, max_depth=1, max_items=16, max_string_chars=256)
MAX_NAME_CHARS = 128  # a user name as shown ("Dr Müller")
MAX_ESCALATION_LEVEL = 9


class AckAction(enum.StrEnum):
    """What a person did about an alert."""

    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Ack:
    """A person acknowledged or resolved an event.

    Attributes:
        event_id: the event's id.
        action: what they did.
        by: the user name (at most 128 characters, any script).
        time: when, aware datetime (milliseconds on the wire).

    Raises:
        ValueError: on an invalid event id, unknown action, empty or long name.
    """

    event_id: str
    action: AckAction
    by: str
    time: datetime

    def __post_init__(self) -> None:
        validate_id(self.event_id, "event")
        object.__setattr__(self, "action", AckAction(self.action))
        if not isinstance(self.by, str) or len(self.by) > MAX_NAME_CHARS:
            raise ValueError(f"by: expected a name of <= {MAX_NAME_CHARS} characters")
        object.__setattr__(self, "time", to_utc_ms(self.time))

    @classmethod
    def at(cls, event_id: str, action: AckAction | str, by: str, time_s: float) -> Ack:
        """An ack stamped at POSIX seconds ``time_s``."""
        return cls(event_id, AckAction(action), by, utc_from_timestamp(time_s))

    @property
    def time_s(self) -> float:
        """``time`` as POSIX seconds."""
        return self.time.timestamp()

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object as a dict."""
        return {
            "event_id": self.event_id,
            "action": str(self.action),
            "by": self.by,
            "time": format_utc_ms(self.time),
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON payload for the acks topic."""
        return encode_object(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | bytearray | str) -> Ack:
        """Parse an acks payload (under :data:`ACK_LIMITS`).

        Raises:
            PayloadError: naming the field when the payload breaks the contract.
        """
        obj = decode_object(data, "ack", ACK_LIMITS)
        action = obj.get("action")
        if action not in tuple(AckAction):
            raise PayloadError(
                f"field 'action': expected acknowledged/resolved, got {action!r:.40}"
            )
        return cls(
            event_id=req_id(obj, "event_id"),
            action=AckAction(action),
            by=req_str(obj, "by", MAX_NAME_CHARS),
            time=parse_utc(obj.get("time")),
        )


@dataclass(frozen=True)
class EscalationMessage:
    """A fall was not acknowledged in time and reached ``level`` (1, 2, ...).

    Raises:
        ValueError: on invalid ids or a level outside 1..9.
    """

    event_id: str
    patient_id: str
    level: int
    time: datetime

    def __post_init__(self) -> None:
        validate_id(self.event_id, "event")
        validate_id(self.patient_id, "patient")
        if isinstance(self.level, bool) or not 1 <= self.level <= MAX_ESCALATION_LEVEL:
            raise ValueError(f"level: expected 1..{MAX_ESCALATION_LEVEL}, got {self.level!r}")
        object.__setattr__(self, "time", to_utc_ms(self.time))

    @classmethod
    def at(cls, event_id: str, patient_id: str, level: int, time_s: float) -> EscalationMessage:
        """An escalation stamped at POSIX seconds ``time_s``."""
        return cls(event_id, patient_id, level, utc_from_timestamp(time_s))

    @property
    def time_s(self) -> float:
        """``time`` as POSIX seconds."""
        return self.time.timestamp()

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object as a dict (``patient_id`` repeats the topic's)."""
        return {
            "event_id": self.event_id,
            "level": self.level,
            "time": format_utc_ms(self.time),
            "patient_id": self.patient_id,
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON payload for the escalations topic."""
        return encode_object(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | bytearray | str, patient_id: str) -> EscalationMessage:
        """Parse an escalations payload; the patient is the topic's.

        Raises:
            PayloadError: naming the field when the payload breaks the
                contract, or names another patient than the topic.
        """
        obj = decode_object(data, "escalation", ACK_LIMITS)
        level = opt_int(obj, "level", 1, MAX_ESCALATION_LEVEL)
        if level is None:
            raise PayloadError("field 'level': expected an integer 1..9")
        named = obj.get("patient_id")
        if named is not None and named != patient_id:
            raise PayloadError(
                "field 'patient_id': not the topic's patient", DropReason.TOPIC_MISMATCH
            )
        return cls(req_id(obj, "event_id"), patient_id, level, parse_utc(obj.get("time")))


ACK_ACTIONS: tuple[str, ...] = tuple(action.value for action in AckAction)
