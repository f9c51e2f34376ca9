"""Open falls kept on a retained topic until a person answers them.

Events are not retained: a consumer that (re)subscribes after a broker crash
that lost its session never receives a fall published before it came back.
So the gateway also keeps, per patient, the list of its falls that nobody has
acknowledged or resolved yet, retained on::

    {root}/patients/{patient_id}/alerts   QoS 1, retained
    {"patient_id": "p-001", "gateway_id": "ward-3", "time": "2026-11-24T08:15:03.000Z",
     "open": [<event JSON of each open fall, as on .../events>]}

``"open": []`` once none is left. A fall leaves the list when an ack or a
resolution for its ``event_id`` arrives on ``{root}/patients/{id}/acks``; a
``fall_cancelled`` does not remove it (a fall never closes itself: a person
must answer it). Any consumer that subscribes at any moment learns of every
open fall from the retained message.

:class:`OpenFalls` is the gateway's side (pure, no I/O of its own: the
publisher persists it in the outbox database and publishes it);
:func:`build_open_alerts` / :func:`parse_open_alerts` are the payload.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from alerts.events import AlertEvent, EventType
from alerts.topics import validate_id
from alerts.wire import decode_object, format_utc_ms, parse_utc, req_str

__all__ = [
    "OpenAlerts",
    "OpenFalls",
    "OpenFallsStore",
    "build_open_alerts",
    "parse_ack_target",
    "parse_open_alerts",
]

# One patient rarely has more than one open fall; this bounds a hostile list.
MAX_OPEN_PER_PATIENT = 1000


@dataclass(frozen=True)
class OpenAlerts:
    """A parsed ``.../alerts`` payload; ``open`` holds each fall's event JSON object."""

    patient_id: str
    gateway_id: str
    time: datetime
    open: tuple[dict[str, Any], ...]


def build_open_alerts(
    patient_id: str, gateway_id: str, time: datetime, open_payloads: Iterable[bytes]
) -> bytes:
    """The retained payload; ``open_payloads`` are event JSON payloads as published.

    Raises:
        ValueError: an invalid id, a naive time, or a payload that is not a JSON object.
    """
    events = []
    for payload in open_payloads:
        event = json.loads(payload)
        if not isinstance(event, dict):
            raise ValueError("an open alert must be an event JSON object")
        events.append(event)
    body = {
        "patient_id": validate_id(patient_id, "patient"),
        "gateway_id": validate_id(gateway_id, "gateway"),
        "time": format_utc_ms(time),
        "open": events,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def parse_open_alerts(payload: bytes) -> OpenAlerts:
    """Parse a ``.../alerts`` payload (each event is checked by the event parser of the
    consumer; here only that it is an object with an ``event_id``).

    Raises:
        ValueError: naming the field that does not fit.
    """
    obj = decode_object(payload, "open alerts")
    items = obj.get("open")
    if not isinstance(items, list) or len(items) > MAX_OPEN_PER_PATIENT:
        raise ValueError(f"field 'open': expected a list of at most {MAX_OPEN_PER_PATIENT} events")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("event_id"), str):
            raise ValueError("field 'open': every item must be an event object with an event_id")
    return OpenAlerts(
        patient_id=validate_id(req_str(obj, "patient_id"), "patient"),
        gateway_id=validate_id(req_str(obj, "gateway_id"), "gateway"),
        time=parse_utc(obj.get("time"), "time"),
        open=tuple(items),
    )


def parse_ack_target(payload: bytes) -> str | None:
    """The ``event_id`` an ack or resolution closes, or None when ``payload`` is not one.

    Only what the gateway needs from ``{"event_id", "action", "by", "time"}``.
    """
    try:
        obj = decode_object(payload, "ack")
    except ValueError:
        return None
    if obj.get("action") not in ("acknowledged", "resolved"):
        return None
    event_id = obj.get("event_id")
    return event_id if isinstance(event_id, str) and 0 < len(event_id) <= 64 else None


class OpenFallsStore(Protocol):
    """Where :class:`OpenFalls` persists (``alerts.outbox.Outbox``)."""

    def open_falls(self) -> list[tuple[str, str, bytes]]:
        """Every kept (patient_id, event_id, payload), oldest first."""
        ...

    def keep_open_fall(self, patient_id: str, event_id: str, payload: bytes) -> None: ...

    def drop_open_fall(self, event_id: str) -> None: ...


class OpenFalls:
    """Each patient's open falls (gateway side), persisted through ``store``.

    ``dirty`` holds the patients whose retained list must be (re)published.
    """

    def __init__(self, store: OpenFallsStore) -> None:
        self._store = store
        self._by_patient: dict[str, dict[str, bytes]] = {}
        self._patient_of: dict[str, str] = {}
        self.dirty: set[str] = set()
        for patient_id, event_id, payload in store.open_falls():
            self._by_patient.setdefault(patient_id, {})[event_id] = payload
            self._patient_of[event_id] = patient_id
            self.dirty.add(patient_id)

    def add(self, event: AlertEvent) -> bool:
        """Keep ``event`` if it is a fall; True if it was added."""
        if event.type is not EventType.FALL_DETECTED or event.event_id in self._patient_of:
            return False
        payload = event.to_json()
        self._store.keep_open_fall(event.patient_id, event.event_id, payload)
        self._by_patient.setdefault(event.patient_id, {})[event.event_id] = payload
        self._patient_of[event.event_id] = event.patient_id
        self.dirty.add(event.patient_id)
        return True

    def close(self, event_id: str) -> str | None:
        """An ack or resolution of ``event_id`` arrived; its patient if a fall closed."""
        patient_id = self._patient_of.pop(event_id, None)
        if patient_id is None:
            return None
        self._store.drop_open_fall(event_id)
        self._by_patient.get(patient_id, {}).pop(event_id, None)
        self.dirty.add(patient_id)
        return patient_id

    def patients(self) -> list[str]:
        """Patients with a list (open falls now or earlier in this run)."""
        return sorted(self._by_patient)

    def payloads(self, patient_id: str) -> list[bytes]:
        """The open falls of ``patient_id``, oldest first."""
        return list(self._by_patient.get(patient_id, {}).values())

    def __len__(self) -> int:
        return len(self._patient_of)
