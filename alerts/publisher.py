"""AlertPublisher: durable alert events, retained states and gateway status.

``await publish_event(event)`` commits the event to the outbox and returns:
it never waits for the broker and never drops. A background task drains the
outbox while connected (QoS 1, falls first, deleted only after PUBACK).
Latest states are published retained about once a second, and every state
plus an "online" status again after each (re)connection. The Last Will is a
retained "offline" status with an MQTT 5 will delay, so a short network blip
does not flap the gateway offline for the physiotherapist.

Each patient's open falls are kept retained on ``{root}/patients/{id}/alerts``
(``alerts.open_alerts``) until an ack or resolution for them arrives on
``{root}/patients/{id}/acks``, which the publisher subscribes to for every
patient it has seen. The open set lives in the outbox database, so it survives
a restart, and it is republished after every (re)connection, so it survives a
broker that lost its retained messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

from alerts.events import DEFAULT_SLOUCH_EXPIRY_S, AlertEvent
from alerts.metrics import DeviceMetricValue, LatencyStats, PublisherMetrics, freeze_devices
from alerts.mqtt import MqttClient
from alerts.open_alerts import OpenFallsLink
from alerts.outbox import DEFAULT_MAX_ROWS, Outbox, OutboxEntry
from alerts.settings import MqttSettings, Will
from alerts.state import GatewayState, GatewayStatus, PatientState
from alerts.topics import DEFAULT_TOPIC_ROOT, Topics, mask_id, validate_id
from alerts.wire import utc_from_timestamp
from common.backoff import Backoff
from common.errors import BrokerError, ConfigError

__all__ = ["AlertPublisher"]

logger = logging.getLogger(__name__)

# Events published concurrently per drain round (paho keeps 20 in flight);
# MQTT keeps their order on the wire, so a batch costs one round trip.
_BATCH = 16
_OFFLINE_PUBLISH_TIMEOUT_S = 2.0
# Drain rounds failing in a row, still connected, before it is an alarm.
_FAILED_ROUNDS_ALARM = 5


class _Lifecycle(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class AlertPublisher:
    """Publishes one gateway's alerts, patient states and status.

    Args:
        settings: broker connection settings.
        gateway_id: this gateway's id (``[A-Za-z0-9_-]{1,64}``); also makes
            the stable MQTT client id ``{client_id_prefix}-gw-{gateway_id}``,
            so run one process per gateway id.
        topic_root: topic root, default ``posture/v1``.
        outbox_path: SQLite file of the durable outbox; None keeps it in
            memory (demo: pending events die with the process).
        state_interval_s: period of retained state publishing, s.
        shutdown_grace_s: on exit, how long to wait for pending acks, s.
        will_delay_s: MQTT 5 will delay of the "offline" Last Will, s.
        status_interval_s: period of the "online" status with metrics, s.
        slouch_expiry_s: expiry of slouch events (MQTT 5 message expiry and
            outbox drop), s; falls never expire.
        outbox_max_rows: outbox bound before eviction.
        integrity_check_interval_s: how often the outbox file is checked
            on disk (SQLite ``quick_check``), s.
        clock: wall clock, POSIX s (injectable for tests).

    Raises:
        ConfigError: on an invalid id, topic root, interval or outbox file.
        BrokerError: from ``__aenter__`` only when the broker refuses us for
            good (credentials, TLS, not authorized); an unreachable broker is
            retried in the background while events queue in the outbox.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        gateway_id: str,
        topic_root: str = DEFAULT_TOPIC_ROOT,
        outbox_path: str | os.PathLike[str] | None = None,
        state_interval_s: float = 1.0,
        shutdown_grace_s: float = 5.0,
        will_delay_s: int = 10,
        status_interval_s: float = 10.0,
        slouch_expiry_s: float = DEFAULT_SLOUCH_EXPIRY_S,
        outbox_max_rows: int = DEFAULT_MAX_ROWS,
        integrity_check_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._gateway_id = validate_id(gateway_id, "gateway")
        self._topics = Topics(topic_root)
        for name, value in (
            ("state_interval_s", state_interval_s),
            ("status_interval_s", status_interval_s),
            ("slouch_expiry_s", slouch_expiry_s),
            ("integrity_check_interval_s", integrity_check_interval_s),
        ):
            if not 0 < value < 1e7:
                raise ConfigError(f"publisher setting {name!r}: expected > 0 s, got {value!r}")
        if not 0 <= shutdown_grace_s < 1e4 or not 0 <= will_delay_s <= 86_400:
            raise ConfigError("publisher settings 'shutdown_grace_s'/'will_delay_s' out of range")
        self._settings = settings
        self._outbox_path = outbox_path
        self._outbox_max_rows = outbox_max_rows
        self._state_interval_s = state_interval_s
        self._status_interval_s = status_interval_s
        self._shutdown_grace_s = shutdown_grace_s
        self._will_delay_s = int(will_delay_s)
        self._slouch_expiry_s = slouch_expiry_s
        self._clock = clock
        self._lifecycle = _Lifecycle.NEW
        self._client: MqttClient | None = None
        self._outbox: Outbox | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._background: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()
        self._states: dict[str, PatientState] = {}
        self._dirty: set[str] = set()
        self._devices: dict[str, dict[str, DeviceMetricValue]] = {}
        self._latency = LatencyStats()
        self._states_published = 0
        self._open: OpenFallsLink | None = None
        self._integrity_check_interval_s = integrity_check_interval_s
        # Health alarms: a changed reason publishes the status at once.
        self._publish_alarm: str | None = None
        self._reported_degraded: str | None = None
        self._status_now = asyncio.Event()
        self._told_protocol_limits = False
        # Parts of the gateway that cannot do their job ("ble": cannot scan).
        self._degraded_parts: dict[str, str] = {}

    # ----------------------------------------------------------- properties

    @property
    def gateway_id(self) -> str:
        """This gateway's id."""
        return self._gateway_id

    @property
    def topics(self) -> Topics:
        """The topic builder in use."""
        return self._topics

    @property
    def connected(self) -> bool:
        """Whether the broker link is up."""
        return self._client is not None and self._client.connected

    @property
    def broker_address(self) -> str | None:
        """``host:port`` of the broker node in use (or being tried); None before start."""
        return self._client.address if self._client is not None else None

    @property
    def broker_protocol(self) -> str | None:
        """The MQTT version in use ("5", or "3.1.1" asked for or fallen back to)."""
        return self._client.protocol if self._client is not None else None

    @property
    def metrics(self) -> PublisherMetrics:
        """A snapshot of the counters published in the status topic."""
        outbox, client = self._outbox, self._client
        is_open = outbox is not None and self._lifecycle is not _Lifecycle.CLOSED
        pending = len(outbox) if is_open and outbox is not None else 0
        oldest = outbox.oldest_created_s() if pending and outbox is not None else None
        return PublisherMetrics(
            connected=self.connected,
            events_pending=pending,
            oldest_pending_age_s=None if oldest is None else max(0.0, self._clock() - oldest),
            events_published=self._latency.count,
            events_expired=outbox.expired_count if outbox is not None else 0,
            events_evicted=outbox.evicted_count if outbox is not None else 0,
            publish_latency_last_ms=self._latency.last_ms,
            publish_latency_avg_ms=self._latency.avg_ms,
            reconnects=max(0, client.connect_count - 1) if client is not None else 0,
            states_published=self._states_published,
            outbox_errors=outbox.db_errors if outbox is not None else 0,
            devices=freeze_devices(self._devices),
            degraded=self._degraded(),
            outbox_recoveries=outbox.recoveries if outbox is not None else 0,
        )

    def _degraded(self) -> str | None:
        reasons = [self._outbox.degraded if self._outbox is not None else None]
        reasons.append(self._publish_alarm)
        reasons.extend(self._degraded_parts[source] for source in sorted(self._degraded_parts))
        return "; ".join(r for r in reasons if r) or None

    def _note_health(self) -> None:
        """Publish the status now if the degraded reason changed."""
        if self._degraded() != self._reported_degraded:
            self._status_now.set()

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._lifecycle is not _Lifecycle.NEW:
            raise RuntimeError("an AlertPublisher can be entered only once")
        self._outbox = Outbox(self._outbox_path, max_rows=self._outbox_max_rows, clock=self._clock)
        self._open = OpenFallsLink(self._outbox, self._topics, self._gateway_id, self._clock)
        offline = self._status_payload(GatewayState.OFFLINE, with_metrics=False)
        client = MqttClient(
            self._settings,
            client_id=f"{self._settings.client_id_prefix}-gw-{self._gateway_id}",
            will=Will(
                self._topics.status(self._gateway_id),
                offline,
                qos=1,
                retain=True,
                delay_s=self._will_delay_s,
            ),
            clean_start=True,
            # MQTT 5 publishes the will when the session ends if that comes
            # before the will delay: the session must outlive the delay.
            session_expiry_s=self._will_delay_s + 60,
            wait_for_connection=False,
        )
        client.add_connect_callback(self._on_connected)
        try:
            await client.__aenter__()
        except BaseException:
            self._outbox.close()
            self._lifecycle = _Lifecycle.CLOSED
            raise
        self._client = client
        self._lifecycle = _Lifecycle.OPEN
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        name = f"publisher-{self._gateway_id}"
        self._background = [
            self._tasks.create_task(self._drain(), name=f"{name}-drain"),
            self._tasks.create_task(self._state_loop(), name=f"{name}-states"),
            self._tasks.create_task(self._status_loop(), name=f"{name}-status"),
            self._tasks.create_task(self._open.publish_loop(client), name=f"{name}-open-falls"),
            self._tasks.create_task(self._open.ack_loop(client), name=f"{name}-acks"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lifecycle is not _Lifecycle.OPEN:
            return
        self._lifecycle = _Lifecycle.CLOSING
        client, outbox = self._client, self._outbox
        assert client is not None and outbox is not None and self._tasks is not None
        try:
            # Pending alerts get a last chance; the drain task keeps running.
            deadline = asyncio.get_running_loop().time() + self._shutdown_grace_s
            while len(outbox) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        finally:
            for task in self._background:
                task.cancel()
            await self._tasks.__aexit__(None, None, None)
            if client.connected:
                try:
                    async with asyncio.timeout(_OFFLINE_PUBLISH_TIMEOUT_S):
                        await self._publish_status(GatewayState.OFFLINE)
                except (BrokerError, TimeoutError) as error:
                    logger.warning("could not publish offline status: %s", error)
            await client.__aexit__(None, None, None)
            left = len(outbox)
            if left:
                logger.warning("%d event(s) stay in the outbox for the next run", left)
            outbox.close()
            self._lifecycle = _Lifecycle.CLOSED

    def _require_open(self) -> tuple[MqttClient, Outbox]:
        if self._lifecycle not in (_Lifecycle.OPEN, _Lifecycle.CLOSING):
            raise RuntimeError(f"AlertPublisher is {self._lifecycle.value}, not open")
        assert self._client is not None and self._outbox is not None
        return self._client, self._outbox

    # ------------------------------------------------------------- the API

    async def publish_event(self, event: AlertEvent) -> None:
        """Queue ``event`` durably for publishing; returns once it is on disk.

        Raises:
            ValueError: if the event belongs to another gateway.
            RuntimeError: if the publisher is not open.
        """
        _client, outbox = self._require_open()
        if event.gateway_id != self._gateway_id:
            raise ValueError(
                f"event {event.event_id} is from gateway {event.gateway_id!r}, "
                f"this publisher is {self._gateway_id!r}"
            )
        stored = outbox.put(
            event,
            self._topics.events(event.patient_id),
            expiry_s=event.default_expiry_s(self._slouch_expiry_s),
        )
        logger.info(
            "queued %s event %s for patient %s%s",
            event.type,
            event.event_id,
            mask_id(event.patient_id),
            "" if stored else " (duplicate or evicted)",
        )
        self._note_health()
        self._wakeup.set()
        if self._open is not None:
            self._open.on_event(event)

    @property
    def open_falls(self) -> int:
        """Falls this gateway keeps open (published retained) until someone answers them."""
        return len(self._open) if self._open is not None else 0

    def update_state(self, state: PatientState) -> None:
        """Keep ``state`` as the patient's latest; published retained ~1 Hz.

        Raises:
            ValueError: if the state belongs to another gateway.
            RuntimeError: if the publisher is not open.
        """
        self._require_open()
        if state.gateway_id != self._gateway_id:
            raise ValueError(
                f"state of gateway {state.gateway_id!r} given to publisher {self._gateway_id!r}"
            )
        self._states[state.patient_id] = state
        self._dirty.add(state.patient_id)
        if self._open is not None:
            self._open.saw_patient(state.patient_id)

    def set_degraded(self, source: str, reason: str | None, detail: str = "") -> None:
        """Report (``reason``, a short code) or clear (None) a degraded part of
        the gateway, e.g. ``("ble", "adapter_off", "adapter hci0 is powered
        off ...")``: ``metrics.degraded`` of the status then reads
        ``"ble adapter_off: adapter hci0 is powered off ..."`` and the status is
        republished at once.

        Raises:
            ValueError: ``source`` or ``reason`` is not a short identifier.
        """
        for name, value in (("source", source), ("reason", reason or "ok")):
            if not (isinstance(value, str) and value.isidentifier() and len(value) <= 64):
                raise ValueError(f"degraded {name}: expected a short code, got {value!r:.40}")
        if reason is None:
            self._degraded_parts.pop(source, None)
        else:
            self._degraded_parts[source] = f"{source} {reason}: {detail}"[:400]
        self._note_health()

    def set_device_metrics(self, patient_id: str, metrics: Mapping[str, DeviceMetricValue]) -> None:
        """Set one wearable's counters (e.g. ``{"packets_dropped": 3,
        "malformed": 0}``) reported under ``metrics.devices`` in the status.

        Raises:
            ValueError: on an invalid id or a value that is not a finite
                number, bool or string.
        """
        validate_id(patient_id, "patient")
        clean: dict[str, DeviceMetricValue] = {}
        for key, value in metrics.items():
            ok = isinstance(value, bool | str) or (
                isinstance(value, int | float) and math.isfinite(value)
            )
            if not isinstance(key, str) or not ok:
                raise ValueError(
                    f"device metric {key!r}: expected a finite number, bool or "
                    f"string, got {value!r:.40}"
                )
            clean[key] = value
        self._devices[patient_id] = clean

    # ------------------------------------------------------ background work

    async def _on_connected(self) -> None:
        client, _outbox = self._require_open()
        self._wakeup.set()
        if self._open is not None:
            self._open.on_connected()
        if client.protocol != "5" and not self._told_protocol_limits:
            self._told_protocol_limits = True
            self._warn_protocol_limits(client)
        try:
            await self._publish_status(GatewayState.ONLINE)
            for patient_id, state in list(self._states.items()):
                await client.publish(
                    self._topics.state(patient_id), state.to_json(), qos=0, retain=True
                )
                self._states_published += 1
                self._dirty.discard(patient_id)
        except BrokerError as exc:
            logger.warning("republishing status/states after connect failed: %s", exc)

    async def _drain(self) -> None:
        client, outbox = self._require_open()
        backoff = Backoff(0.2, 5.0)
        failed_rounds = 0
        while True:
            await client.wait_connected()
            self._wakeup.clear()
            batch = outbox.next_batch(_BATCH)
            if not batch:
                await self._wakeup.wait()
                continue
            results = await asyncio.gather(
                *(self._send(client, e) for e in batch), return_exceptions=True
            )
            outbox.remove(*(e.event_id for e, r in zip(batch, results, strict=True) if r is None))
            self._note_health()
            errors = [r for r in results if isinstance(r, BaseException)]
            if not errors:
                backoff.reset()
                failed_rounds = 0
                if self._publish_alarm is not None:
                    logger.warning("events are acknowledged again")
                    self._publish_alarm = None
                    self._note_health()
                continue
            # The link is up yet the broker keeps refusing (an ACL, a quota):
            # not an outage to wait out quietly but an alarm in the status.
            failed_rounds = failed_rounds + 1 if client.connected else 0
            if failed_rounds >= _FAILED_ROUNDS_ALARM and self._publish_alarm is None:
                self._publish_alarm = f"publishing events fails repeatedly: {errors[0]}"
                logger.error("%s", self._publish_alarm)
                self._note_health()
            for error in errors:
                if not isinstance(error, BrokerError):
                    logger.error("unexpected error publishing an event", exc_info=error)
            delay = backoff.next_delay()
            logger.warning(
                "%d of %d event(s) not acknowledged (%s); retrying in %.2f s",
                len(errors),
                len(batch),
                errors[0],
                delay,
            )
            await asyncio.sleep(delay)

    async def _send(self, client: MqttClient, entry: OutboxEntry) -> None:
        remaining_s = entry.remaining_expiry_s(self._clock())
        if remaining_s is not None and remaining_s <= 0:
            # Expired between fetch and send: "success" removes it unsent.
            if self._outbox is not None:
                self._outbox.expired_count += 1
            return
        await client.publish(entry.topic, entry.payload, qos=1, expiry_s=remaining_s)
        self._latency.add((self._clock() - entry.created_s) * 1000.0)

    async def _state_loop(self) -> None:
        client, _outbox = self._require_open()
        while True:
            await asyncio.sleep(self._state_interval_s)
            if not client.connected:
                continue
            for patient_id in sorted(self._dirty):
                state = self._states[patient_id]
                self._dirty.discard(patient_id)
                try:
                    await client.publish(
                        self._topics.state(patient_id), state.to_json(), qos=0, retain=True
                    )
                except BrokerError:
                    self._dirty.add(patient_id)  # after a reconnect all are re-sent anyway
                    break
                self._states_published += 1

    async def _status_loop(self) -> None:
        client, outbox = self._require_open()
        next_check_s = asyncio.get_running_loop().time() + self._integrity_check_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._status_interval_s):
                    await self._status_now.wait()
            self._status_now.clear()
            outbox.drop_expired()
            if asyncio.get_running_loop().time() >= next_check_s:
                next_check_s += self._integrity_check_interval_s
                outbox.check()
            if client.connected:
                try:
                    await self._publish_status(GatewayState.ONLINE)
                except BrokerError as exc:
                    logger.debug("periodic status not published: %s", exc)

    def _warn_protocol_limits(self, client: MqttClient) -> None:
        """Say once, at the first connection, what MQTT 3.1.1 cannot do for us
        (NATS and RabbitMQ speak only 3.1.1; so does the demo's amqtt).

        A warning when MQTT 5 was asked for and the broker fell back (the site
        may not know); information when 3.1.1 was chosen (the demo's broker).
        """
        level = logging.WARNING if self._settings.protocol == "5" else logging.INFO
        logger.log(
            level,
            "MQTT broker at %s speaks MQTT %s, not 5: (1) slouch events carry no message "
            "expiry, so a subscriber away longer than %g s still receives them late (the "
            "outbox here still drops them after %g s); (2) the 'offline' Last Will has no "
            "%d s delay, so a network blip shows gateway %s offline until it reconnects. "
            "Fall alerts, QoS 1, retained states and sessions are unaffected.",
            client.address,
            client.protocol,
            self._slouch_expiry_s,
            self._slouch_expiry_s,
            self._will_delay_s,
            self._gateway_id,
        )

    def _status_payload(self, status: GatewayState, *, with_metrics: bool = True) -> bytes:
        metrics = self.metrics.as_dict() if with_metrics else {}
        if with_metrics:
            self._reported_degraded = metrics["degraded"]
        return GatewayStatus(
            self._gateway_id, status, utc_from_timestamp(self._clock()), metrics
        ).to_json()

    async def _publish_status(self, status: GatewayState) -> None:
        client, _outbox = self._require_open()
        await client.publish(
            self._topics.status(self._gateway_id), self._status_payload(status), qos=1, retain=True
        )
