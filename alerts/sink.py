"""Where the gateway hands its alerts: the :class:`AlertSink` interface, and an
in-memory sink for tests and embedders.

The gateway (``device_gateway.Gateway(config, sink)``) needs three things of
its sink: take an event (awaited: a fall must be on its way before the
gateway moves on), take a patient's latest state, take a wearable's link
counters. :class:`alerts.AlertPublisher` does that over MQTT with a durable
outbox. :class:`MemorySink` keeps them in memory instead, the way httpx ships
``MockTransport``: a test or an embedding application runs the real gateway
and reads what it would have published, without a broker, and can wait for
an event instead of sleeping for it::

    sink = MemorySink()
    async with world, gateway_running(config, sink, world):
        fall = await sink.wait_for_event(EventType.FALL_DETECTED)

With ``forward=`` it also passes everything on (to a real publisher, say) and
records what it passed: "what did the gateway hand over" next to "what did a
subscriber receive".
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from alerts.events import AlertEvent, EventType
from alerts.state import PatientState

__all__ = ["AlertSink", "MemorySink"]

_log = logging.getLogger(__name__)

EventFilter = EventType | Callable[[AlertEvent], bool] | None


class AlertSink(Protocol):
    """What the gateway hands its output to.

    ``alerts.AlertPublisher`` (MQTT) and :class:`MemorySink` implement it.
    """

    async def publish_event(self, event: AlertEvent) -> None:
        """Take one event; returns once it is safe (queued durably, or kept)."""
        ...

    def update_state(self, state: PatientState) -> None:
        """Take a patient's latest state (only the latest matters)."""
        ...

    def set_device_metrics(self, patient_id: str, metrics: dict[str, int]) -> None:
        """Take a wearable's link counters (packets, drops, reconnects...)."""
        ...


def _matcher(wanted: EventFilter) -> Callable[[AlertEvent], bool]:
    if wanted is None:
        return lambda event: True
    if isinstance(wanted, EventType):
        return lambda event: event.type is wanted
    return wanted


class MemorySink:
    """An :class:`AlertSink` that keeps everything in memory.

    Attributes:
        events: every event taken, oldest first (at most ``max_events``: the
            oldest are forgotten beyond that, so a long-running embedder does
            not grow without bound; None keeps all).
        states: the latest state of each patient, by patient id (like the
            retained MQTT topic: one per patient, never a history).
        device_metrics: the latest link counters of each patient's wearable.
        degraded: what the gateway reported degraded, by source (e.g. "ble"):
            ``"{source} {reason}: {detail}"``, as ``AlertPublisher`` words it
            in the gateway status; a cleared source is removed.

    Args:
        forward: another sink that gets everything too (after it is recorded
            here); an error it raises reaches the caller, as it would without
            this sink in between.
        max_events: how many events to keep; None (default) keeps all.

    Raises:
        ValueError: ``max_events`` below 1.
    """

    def __init__(self, *, forward: AlertSink | None = None, max_events: int | None = None) -> None:
        if max_events is not None and max_events < 1:
            raise ValueError(f"max_events: expected at least 1 or None, got {max_events}")
        self.events: deque[AlertEvent] = deque(maxlen=max_events)
        self.states: dict[str, PatientState] = {}
        self.device_metrics: dict[str, dict[str, int]] = {}
        self.degraded: dict[str, str] = {}
        self._forward = forward
        self._waiters: list[tuple[Callable[[AlertEvent], bool], asyncio.Future[AlertEvent]]] = []

    # -- the AlertSink interface ---------------------------------------------

    async def publish_event(self, event: AlertEvent) -> None:
        """Record ``event``, wake whoever waits for it, then forward it."""
        self.events.append(event)
        _log.debug("kept %s event %s", event.type.value, event.event_id)
        for matches, future in list(self._waiters):
            if not future.done() and matches(event):
                future.set_result(event)
        if self._forward is not None:
            await self._forward.publish_event(event)

    def update_state(self, state: PatientState) -> None:
        """Keep ``state`` as its patient's latest, then forward it."""
        self.states[state.patient_id] = state
        if self._forward is not None:
            self._forward.update_state(state)

    def set_device_metrics(self, patient_id: str, metrics: dict[str, int]) -> None:
        """Keep a copy of ``metrics`` as the patient's latest, then forward them."""
        self.device_metrics[patient_id] = dict(metrics)
        if self._forward is not None:
            self._forward.set_device_metrics(patient_id, metrics)

    def set_degraded(self, source: str, reason: str | None, detail: str = "") -> None:
        """Keep (``reason``) or clear (None) a degraded part, then forward it
        to a forward sink that takes it (the gateway's optional health sink)."""
        if reason is None:
            self.degraded.pop(source, None)
        else:
            self.degraded[source] = f"{source} {reason}: {detail}"
        forward_degraded = getattr(self._forward, "set_degraded", None)
        if callable(forward_degraded):
            forward_degraded(source, reason, detail)

    # -- reading -------------------------------------------------------------

    def of_type(self, *types: EventType) -> list[AlertEvent]:
        """The kept events of any of ``types``, oldest first."""
        return [event for event in self.events if event.type in types]

    def for_patient(self, patient_id: str) -> list[AlertEvent]:
        """The kept events of one patient, oldest first."""
        return [event for event in self.events if event.patient_id == patient_id]

    async def wait_for_event(self, wanted: EventFilter = None) -> AlertEvent:
        """The first kept event that matches, waiting for one if none does yet.

        ``wanted`` is an :class:`EventType`, a predicate, or None (any event).
        There is no timeout here: wrap the call in ``asyncio.timeout(...)``.
        """
        matches = _matcher(wanted)
        for event in self.events:
            if matches(event):
                return event
        future: asyncio.Future[AlertEvent] = asyncio.get_running_loop().create_future()
        waiter = (matches, future)
        self._waiters.append(waiter)
        try:
            return await future
        finally:
            self._waiters.remove(waiter)

    def clear(self) -> None:
        """Forget every event, state and metric (waiters keep waiting)."""
        self.events.clear()
        self.states.clear()
        self.device_metrics.clear()
        self.degraded.clear()

    # -- lifecycle (so it swaps in where an AlertPublisher is used) ----------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None
