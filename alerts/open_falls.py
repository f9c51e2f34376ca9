"""A patient's open falls, retained on ``{root}/patients/{patient_id}/alerts``.

Kept by the gateway until a person acknowledges or resolves each fall, so any
consumer that (re)subscribes at any moment learns of every open fall::

    {"patient_id", "gateway_id", "time", "open": [<event JSON>, ...]}

Each item is a ``fall_detected`` event of this patient in the events topic's
form (:class:`alerts.events.AlertEvent`). An empty retained payload clears
the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alerts.events import EVENT_LIMITS, AlertEvent, EventType
from alerts.topics import validate_id
from alerts.wire import (
    DropReason,
    PayloadError,
    PayloadLimits,
    decode_object,
    encode_object,
    format_utc_ms,
    parse_utc,
    req_id,
    to_utc_ms,
)

__all__ = ["MAX_OPEN_FALLS", "OPEN_FALLS_LIMITS", "OpenFalls"]

MAX_OPEN_FALLS = 100  # more open falls of one patient than this is a broken gateway
OPEN_FALLS_LIMITS = PayloadLimits(
    max_bytes=MAX_OPEN_FALLS * EVENT_LIMITS.max_bytes // 8,
    max_depth=4,
    max_items=MAX_OPEN_FALLS * EVENT_LIMITS.max_items,
)


@dataclass(frozen=True)
class OpenFalls:
    """The falls of one patient that nobody has answered yet.

    Raises:
        ValueError: on an invalid id, a naive ``time``, more than 100 falls,
            or an item that is not a fall of this patient.
    """

    patient_id: str
    gateway_id: str
    time: datetime
    open: tuple[AlertEvent, ...] = ()

    def __post_init__(self) -> None:
        validate_id(self.patient_id, "patient")
        validate_id(self.gateway_id, "gateway")
        object.__setattr__(self, "time", to_utc_ms(self.time))
        object.__setattr__(self, "open", tuple(self.open))
        if len(self.open) > MAX_OPEN_FALLS:
            raise ValueError(f"open: at most {MAX_OPEN_FALLS} falls, got {len(self.open)}")
        for event in self.open:
            if event.type is not EventType.FALL_DETECTED or event.patient_id != self.patient_id:
                raise ValueError("open: every item must be a fall_detected of this patient")

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object as a dict."""
        return {
            "patient_id": self.patient_id,
            "gateway_id": self.gateway_id,
            "time": format_utc_ms(self.time),
            "open": [event.to_dict() for event in self.open],
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON payload for the alerts topic."""
        return encode_object(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | bytearray | str) -> OpenFalls:
        """Parse an alerts payload (under :data:`OPEN_FALLS_LIMITS`).

        Raises:
            PayloadError: naming the field when the payload breaks the contract.
        """
        obj = decode_object(data, "open falls", OPEN_FALLS_LIMITS)
        items = obj.get("open")
        if not isinstance(items, list) or len(items) > MAX_OPEN_FALLS:
            raise PayloadError(f"field 'open': expected a list of <= {MAX_OPEN_FALLS} falls")
        patient_id = req_id(obj, "patient_id")
        events = []
        for item in items:
            if not isinstance(item, dict):
                raise PayloadError("field 'open': expected event objects")
            event = AlertEvent.from_json(encode_object(item))
            if event.type is not EventType.FALL_DETECTED or event.patient_id != patient_id:
                raise PayloadError(
                    "field 'open': an item is not a fall of this patient",
                    DropReason.TOPIC_MISMATCH,
                )
            events.append(event)
        return cls(patient_id, req_id(obj, "gateway_id"), parse_utc(obj.get("time")), tuple(events))
