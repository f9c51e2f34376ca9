"""The gateway keeps each patient's open falls retained until a person answers them.

Events are not retained: a consumer that (re)subscribes after a broker crash
that lost its session never receives a fall published before it came back.
So the gateway also keeps, per patient, the list of its falls that nobody has
acknowledged or resolved yet, retained on ``{root}/patients/{patient_id}/alerts``
(QoS 1; payload :class:`alerts.open_falls.OpenFalls`, ``"open": []`` once none
is left). A fall leaves the list when an ack or a resolution for its
``event_id`` arrives on ``{root}/patients/{id}/acks``; a ``fall_cancelled`` does
not remove it (a fall never closes itself: a person must answer it).

:class:`OpenFallKeeper` is that set (pure, persisted through the outbox
database); :class:`OpenFallsLink` is its MQTT side, run by
``alerts.publisher.AlertPublisher``: it subscribes to the acks of every patient
seen, and publishes a patient's list when it changes and after every
(re)connection (the broker may have lost its retained messages in a crash).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from alerts.acks import Ack
from alerts.events import AlertEvent, EventType
from alerts.mqtt import MqttClient
from alerts.open_falls import MAX_OPEN_FALLS, OpenFalls
from alerts.topics import Topics, mask_id
from alerts.wire import PayloadError, utc_from_timestamp
from common.errors import BrokerError

__all__ = ["OpenFallKeeper", "OpenFallsLink", "OpenFallsStore", "answered_event"]

_RETRY_S = 1.0

_log = logging.getLogger(__name__)


def answered_event(payload: bytes) -> str | None:
    """The ``event_id`` an acks payload answers, or None when it is not a valid ack."""
    try:
        return Ack.from_json(payload).event_id
    except (PayloadError, ValueError):
        return None


class OpenFallsStore(Protocol):
    """Where :class:`OpenFalls` persists (``alerts.outbox.Outbox``)."""

    def open_falls(self) -> list[tuple[str, str, bytes]]:
        """Every kept (patient_id, event_id, payload), oldest first."""
        ...

    def keep_open_fall(self, patient_id: str, event_id: str, payload: bytes) -> None: ...

    def drop_open_fall(self, event_id: str) -> None: ...


class OpenFallKeeper:
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
        """The open falls of ``patient_id`` (event JSON), oldest first."""
        return list(self._by_patient.get(patient_id, {}).values())

    def retained(self, patient_id: str, gateway_id: str, time: datetime) -> bytes:
        """The retained ``.../alerts`` payload of ``patient_id`` now."""
        payloads = self.payloads(patient_id)
        if len(payloads) > MAX_OPEN_FALLS:
            # The contract lists at most 100 (more is a broken gateway): the newest go
            # out; the older ones stay open here and in the outbox until answered.
            _log.error(
                "%d open falls of %s: only the newest %d are listed",
                len(payloads),
                mask_id(patient_id),
                MAX_OPEN_FALLS,
            )
            payloads = payloads[-MAX_OPEN_FALLS:]
        events = tuple(AlertEvent.from_json(p) for p in payloads)
        return OpenFalls(patient_id, gateway_id, time, events).to_json()

    def __len__(self) -> int:
        return len(self._patient_of)


class OpenFallsLink:
    """The open falls of one gateway on MQTT (its two tasks run in the publisher's group).

    Args:
        store: the outbox (persistence of the open set).
        topics, gateway_id: where and as whom to publish.
        clock: wall clock, POSIX s (the list's ``time``).
    """

    def __init__(
        self,
        store: OpenFallsStore,
        topics: Topics,
        gateway_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.keeper = OpenFallKeeper(store)
        self._topics = topics
        self._gateway_id = gateway_id
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._seen: set[str] = set(self.keeper.patients())
        self._subscribed: set[str] = set()
        if self._seen:
            self._wakeup.set()

    def __len__(self) -> int:
        return len(self.keeper)

    def saw_patient(self, patient_id: str) -> None:
        """A patient of this gateway (subscribe to its acks from now on)."""
        if patient_id not in self._seen:
            self._seen.add(patient_id)
            self._wakeup.set()

    def on_event(self, event: AlertEvent) -> None:
        """An event was queued: a fall becomes open (and is published)."""
        self.saw_patient(event.patient_id)
        if self.keeper.add(event):
            _log.info(
                "fall %s of %s open until answered", event.event_id, mask_id(event.patient_id)
            )
            self._wakeup.set()

    def on_connected(self) -> None:
        """A (re)connection: say every list again (the broker may have lost them)."""
        self.keeper.dirty.update(self.keeper.patients())
        self._wakeup.set()

    async def publish_loop(self, client: MqttClient) -> None:
        """Subscribe to acks and publish changed lists, until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                for patient_id in sorted(self._seen - self._subscribed):
                    await client.subscribe(self._topics.acks(patient_id), qos=1)
                    self._subscribed.add(patient_id)
                await client.wait_connected()
                for patient_id in sorted(self.keeper.dirty):
                    self.keeper.dirty.discard(patient_id)
                    payload = self.keeper.retained(
                        patient_id, self._gateway_id, utc_from_timestamp(self._clock())
                    )
                    try:
                        await client.publish(
                            self._topics.alerts(patient_id), payload, qos=1, retain=True
                        )
                    except BrokerError:
                        self.keeper.dirty.add(patient_id)
                        raise
            except BrokerError as exc:
                _log.warning("open falls not published yet (retrying): %s", exc)
                await asyncio.sleep(_RETRY_S)
                self._wakeup.set()

    async def ack_loop(self, client: MqttClient) -> None:
        """Close the falls that acks and resolutions answer, until cancelled."""
        async for message in client.messages():
            info = self._topics.parse(message.topic)
            if info is None or info.kind != "acks":
                continue
            event_id = answered_event(message.payload)
            if event_id is None:
                _log.warning("ignored a malformed ack for %s", mask_id(info.id))
            elif self.keeper.close(event_id) is not None:
                _log.info("fall %s of %s answered: no longer open", event_id, mask_id(info.id))
                self._wakeup.set()
