"""The dashboard service: MQTT in, browsers out, escalations and summaries back to MQTT.

:class:`DashboardService` is an async context manager that owns the MQTT
client (``alerts.mqtt.MqttClient``, the one adapter around paho), the HTTP
server (aiohttp) and a task group with two tasks: the receive loop, which
parses every broker message and updates the model, the escalator and the
summary book; and a ticker, which hands due escalations to the notifier
(physio/dashboard/notify.py: MQTT, webhooks, Apprise, each retried on its
own), publishes the broker link status and, every ``summary_interval_s``, the
changed daily summaries.

The dashboard subscribes with a persistent session (fixed client id, clean
start off, one hour session expiry on MQTT 5), so falls published while it was
restarting are delivered when it comes back.

Every message is read through the one contract (``alerts.intake``): what
breaks it is dropped and counted per reason and source (``drops``, shown in
``/healthz``, the snapshot and the page footer), never shown as a patient,
alert or gateway; an error while applying one message is logged and that
message skipped. Patients are capped per gateway and in total
(``alerts.intake.PatientCap``) so made-up ids cannot exhaust memory.

Beyond the one-hour session, the alert record (:mod:`physio.dashboard.record`,
SQLite or PostgreSQL) brings back every alert still open at start, and the
gateways' retained open falls (``{root}/patients/+/alerts``) bring back every
fall still open that the record never saw. Several instances may share one
PostgreSQL record and one broker: each escalation level is claimed in the
record first, so exactly one instance hands it to its notifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from types import TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo

from aiohttp import web

from alerts.acks import Ack, EscalationMessage
from alerts.events import AlertEvent, EventType
from alerts.intake import DropCounter, Inbound, PatientCap, read_message
from alerts.mqtt import Message, MqttClient
from alerts.open_falls import OpenFalls
from alerts.state import GatewayState, GatewayStatus, PatientState
from alerts.summary import DailySummary
from alerts.topics import TopicKind, Topics
from alerts.wire import DropReason, PayloadError, utc_from_timestamp
from common.errors import BrokerError, ConfigError
from common.ids import mask_id
from physio.dashboard.auth import SessionStore
from physio.dashboard.broadcast import Broadcaster
from physio.dashboard.config import DashboardConfig
from physio.dashboard.escalation import Escalation, Escalator
from physio.dashboard.model import DashboardModel, Update
from physio.dashboard.notify import DeliveryStatus, EscalationNotice, Notifier
from physio.dashboard.record import AlertRecord
from physio.dashboard.record_ops import Claim
from physio.dashboard.recorder import Recorder
from physio.dashboard.server import create_app
from physio.dashboard.store import StoreError
from physio.dashboard.summary_book import SummaryBook

__all__ = ["DashboardConfig", "DashboardService"]

_log = logging.getLogger(__name__)

_TICK_S = 0.25
_ACK_TIMEOUT_S = 10.0
_SESSION_EXPIRY_S = 3600
# Patients a restored summary may bring in (no gateway named there).
_SUMMARY_SOURCE = "(summaries)"
_BROKER_WAIT_S = 30.0  # an escalation's MQTT copy waits this long for the broker per try
# An instance that claimed an escalation level and died before recording it
# loses the claim after this long; another instance then sends the level.
_CLAIM_LEASE_S = 10.0


class DashboardService:
    """The running dashboard (also the :class:`physio.dashboard.server.Backend`).

    Args:
        config: validated settings.
        clock: wall clock in POSIX seconds (tests may pass their own).

    Raises:
        BrokerError: from ``__aenter__`` only on a permanent broker refusal
            (bad credentials, TLS); an unreachable broker is retried while the
            page says so.
        OSError: the listen address is in use.
        ConfigError, StoreError: the alert record cannot be opened.
    """

    def __init__(self, config: DashboardConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self.topics = Topics(config.topic_root)
        self.model = DashboardModel(history_s=config.history_s, directory=config.patients.to_dict())
        self.broadcaster = Broadcaster()
        self.escalator = Escalator(config.escalation)
        self.book = SummaryBook(ZoneInfo(config.timezone))
        self.drops = DropCounter(_log)
        self.patients = PatientCap(config.max_patients, config.max_patients_per_gateway)
        self.escalations_published = 0
        self.ticks = 0
        """Rounds of the ticker done (escalations checked): lets a test or an
        embedder wait for "the deadline has been looked at" without sleeping."""
        self._mqtt: MqttClient | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: web.AppRunner | None = None
        self._running: list[asyncio.Task[None]] = []
        self._archive_cleared: set[tuple[str, date]] = set()
        self._port = config.listen_port
        self.notifier = Notifier(
            config.notify.channels(self._publish_escalation),
            retry=config.notify.retry,
            on_status=self._on_notify_status,
            clock=clock,
        )
        self.client_id = config.client_id or _default_client_id(config.listen_port)
        self.instance = f"{self.client_id}#{uuid.uuid4().hex[:8]}"
        self.record = AlertRecord(config.database)
        self.recorder = Recorder(self.record, self.instance, clock)
        self._record_open = False
        self._reanswered: set[str] = set()

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        config = self.config
        await self.record.__aenter__()
        self._record_open = True
        try:
            # Leases of escalation claims in the record's time, not this host's.
            await self.recorder.sync_clock()
            # Before MQTT: what the record knows is on screen before anything new.
            self.broadcaster.publish(
                await self.recorder.restore(self.model, self.escalator, self.book)
            )
        except BaseException:
            await self._shutdown()
            raise
        self._mqtt = MqttClient(
            config.broker,
            client_id=self.client_id,
            clean_start=False,
            session_expiry_s=_SESSION_EXPIRY_S,
            wait_for_connection=False,
        )
        await self._mqtt.__aenter__()
        try:
            await self.notifier.__aenter__()
            for topic_filter in (
                self.topics.all_status,
                self.topics.all_states,
                self.topics.all_events,
                self.topics.all_acks,
                self.topics.all_escalations,
                self.topics.all_summaries,
                self.topics.all_alerts,
            ):
                await self._mqtt.subscribe(topic_filter, qos=1)
            app = create_app(
                self,
                config.credentials,
                SessionStore(lifetime_s=config.session_lifetime_s),
                listen_host=config.listen_host,
                allowed_hosts=config.allowed_hosts,
            )
            self._runner = web.AppRunner(
                app, handle_signals=False, shutdown_timeout=2.0, access_log=None
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, config.listen_host, config.listen_port)
            try:
                await site.start()
            except OSError as exc:
                raise _listen_error(config.listen_host, config.listen_port, exc) from None
            self._port = int(self._runner.addresses[0][1])
            self._tasks = asyncio.TaskGroup()
            await self._tasks.__aenter__()
            self._running = [
                self._tasks.create_task(self._receive(), name="dashboard-receive"),
                self._tasks.create_task(self._tick(), name="dashboard-tick"),
            ]
        except BaseException:
            await self._shutdown()
            raise
        _log.info("dashboard at %s (broker %s)", self.url, config.broker.address)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        self.broadcaster.close_all()
        if self._tasks is not None:
            tasks, self._tasks = self._tasks, None
            for task in self._running:
                task.cancel()
            await tasks.__aexit__(None, None, None)
        await self.notifier.__aexit__(None, None, None)
        if self._mqtt is not None and self._mqtt.connected:
            with contextlib.suppress(BrokerError):
                await self._publish_summaries()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._mqtt is not None:
            mqtt, self._mqtt = self._mqtt, None
            await mqtt.__aexit__(None, None, None)
        if self._record_open:
            self._record_open = False
            await self.record.__aexit__(None, None, None)

    @property
    def url(self) -> str:
        """``http://host:port/`` of the page."""
        host = self.config.listen_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._port}/"

    async def run_forever(self) -> None:
        """Serve until cancelled."""
        await asyncio.Event().wait()

    # -- Backend (used by server.py) -----------------------------------------

    def now_s(self) -> float:
        """Wall clock, POSIX seconds."""
        return self._clock()

    def record_health(self) -> dict[str, Any]:
        """The alert record's health for ``/healthz`` (no path, host or patient)."""
        return {
            "ok": self.record.healthy,
            "kind": self.record.kind,
            "pending_writes": self.record.pending,
            "failures": self.record.failures,
        }

    def summary(self, patient_id: str, day: date | None) -> DailySummary | None:
        """A patient's summary of one day (default: the latest)."""
        return self.book.summary(patient_id, day)

    async def acknowledge(
        self, event_id: str, action: str, by: str, source: str = ""
    ) -> dict[str, Any]:
        """Publish an ack (QoS 1, waits for the broker), record it and apply it here.

        ``source`` is where the person clicked (the browser's address).

        Raises:
            KeyError: no such alert.
            BrokerError: not published; nothing changed.
        """
        patient_id = self.model.patient_of(event_id)
        if patient_id is None or self._mqtt is None:
            raise KeyError(event_id)
        ack = Ack.at(event_id, action, by, self._clock())
        try:
            # A person is waiting on the button: say "not sent" rather than hang.
            async with asyncio.timeout(_ACK_TIMEOUT_S):
                await self._mqtt.publish(self.topics.acks(patient_id), ack.to_json(), qos=1)
        except TimeoutError:
            raise BrokerError(f"no PUBACK within {_ACK_TIMEOUT_S:g} s") from None
        _log.info("%s %s an alert of %s", by, action, mask_id(patient_id))
        self.recorder.on_ack(
            patient_id, ack, f"dashboard {self.instance} from {source or 'an unknown address'}"
        )
        self._apply_ack(patient_id, ack)
        alert = self.model.alert(event_id)
        if alert is None:
            raise KeyError(event_id)
        return alert

    # -- receiving -----------------------------------------------------------

    async def _receive(self) -> None:
        assert self._mqtt is not None  # set in __aenter__
        async for message in self._mqtt.messages():
            self.handle_message(message, self._clock())

    def handle_message(self, message: Message, received_s: float) -> None:
        """Apply one broker message; a bad one is dropped and counted, never raised.

        A bug while applying a valid message is logged with its traceback and
        counted as ``handler_error``: one message must not stop the dashboard.
        """
        info = self.topics.parse(message.topic)
        try:
            inbound = read_message(
                self.topics,
                message.topic,
                message.payload,
                retained=message.retain,
                received_s=received_s,
                policy=self.config.clock_policy,
            )
            if inbound is not None:
                self._apply(inbound)
                if not inbound.clock_trusted and inbound.payload is not None:
                    self.drops.untrusted_clock(inbound.topic)
        except PayloadError as exc:
            self.drops.drop(exc.reason, info, str(exc))
        except Exception:  # the receive loop must outlive any one message
            _log.exception("bug while applying a message on %s; skipped", info and info.kind)
            self.drops.drop(DropReason.HANDLER_ERROR, info, "see the traceback above")

    def _admit(self, patient_id: str, source: str, *, fall: bool = False) -> None:
        if not self.patients.admit(patient_id, source, fall=fall):
            raise PayloadError(
                f"patient cap reached ({self.patients.max_patients} in total, "
                f"{self.patients.max_per_gateway} per gateway)",
                DropReason.OVER_CAPACITY,
            )

    def _apply(self, inbound: Inbound) -> None:
        kind, ident, obj = inbound.topic.kind, inbound.topic.id, inbound.payload
        received_s, at_s = inbound.received_s, inbound.at_s
        updates: list[Update] = []
        if isinstance(obj, PatientState):
            self._admit(ident, obj.gateway_id)
            updates += self.model.apply_state(obj, at_s, received_s)
            self.book.on_state(obj, at_s)
        elif isinstance(obj, AlertEvent):
            self._admit(ident, obj.gateway_id, fall=obj.type is EventType.FALL_DETECTED)
            updates += self.model.apply_event(obj, at_s, received_s)
            self.recorder.on_event(obj, at_s, received_s, f"gateway {obj.gateway_id}")
            self.book.on_event(obj, at_s)
            if obj.type is EventType.FALL_DETECTED:
                self.escalator.on_fall(obj.event_id, obj.patient_id, at_s, received_s)
                _log.warning("fall of %s received", mask_id(obj.patient_id))
            elif obj.type is EventType.FALL_CANCELLED:
                self.escalator.on_cancelled(obj.patient_id, at_s)
        elif isinstance(obj, Ack):
            self.recorder.on_ack(ident, obj)
            updates += self._apply_ack(ident, obj, publish=False)
        elif isinstance(obj, EscalationMessage):
            self.recorder.on_escalation(obj)
            self.escalator.on_escalation_seen(obj.event_id, obj.level)
            self.book.on_escalation(ident, obj.event_id, obj.level)
            updates += self.model.apply_escalation(obj)
        elif isinstance(obj, DailySummary) and kind is TopicKind.SUMMARY:
            if not self.patients.knows(ident):
                self._admit(ident, _SUMMARY_SOURCE)
            self.book.on_remote(obj)
            mine = self.book.summary(ident, obj.day)
            if mine is not None:
                updates += self.model.apply_summary(mine)
                updates += self._restore_falls(mine, received_s)
        elif isinstance(obj, OpenFalls):
            self._admit(ident, obj.gateway_id, fall=bool(obj.open))
            updates += self._apply_open_falls(obj, at_s, received_s)
        elif isinstance(obj, GatewayStatus) or (obj is None and kind is TopicKind.STATUS):
            # A cleared retained status: the gateway is gone, shown offline.
            status = obj or GatewayStatus(
                ident, GatewayState.OFFLINE, utc_from_timestamp(received_s)
            )
            try:
                updates += self.model.apply_gateway(status, received_s)
            except OverflowError as exc:
                raise PayloadError(str(exc), DropReason.OVER_CAPACITY) from None
        self.broadcaster.publish(updates)

    def _apply_open_falls(self, listed: OpenFalls, at_s: float, received_s: float) -> list[Update]:
        """A gateway's retained list of a patient's open falls (``{root}/patients/+/alerts``).

        A fall we never saw (its event lost in a broker crash, or older than our
        session) is added like an event; a fall we know was answered is answered
        again on MQTT, because the gateway missed that ack and keeps it open.
        """
        updates: list[Update] = []
        for event in listed.open:
            known = self.model.alert(event.event_id)
            if known is None:
                # Filed as received now: a late fall escalates sooner, never later.
                fall_s = min(event.time_s, received_s)
                updates += self.model.apply_event(event, fall_s, received_s)
                self.recorder.on_event(
                    event, fall_s, received_s, f"retained open falls of gateway {listed.gateway_id}"
                )
                self.book.on_event(event, fall_s)
                self.escalator.on_fall(event.event_id, event.patient_id, fall_s, received_s)
                _log.warning(
                    "fall of %s learnt from its retained open falls", mask_id(event.patient_id)
                )
            elif known["acks"] and event.event_id not in self._reanswered:
                self._reanswered.add(event.event_id)
                self._reanswer(event.patient_id, known)
        return updates

    def _reanswer(self, patient_id: str, alert: dict[str, Any]) -> None:
        if self._tasks is None or self._mqtt is None:
            return
        mqtt, topic = self._mqtt, self.topics.acks(patient_id)
        acks = [
            Ack.from_json(json.dumps({"event_id": alert["event_id"], **a})) for a in alert["acks"]
        ]

        async def reanswer() -> None:
            for ack in acks:
                try:
                    await mqtt.publish(topic, ack.to_json(), qos=1)
                except BrokerError as exc:
                    self._reanswered.discard(ack.event_id)  # again with the next list
                    _log.warning("could not repeat an ack to the gateway: %s", exc)
                    return

        self._tasks.create_task(reanswer(), name=f"reanswer-{alert['event_id']}")

    def _restore_falls(self, summary: DailySummary, received_s: float) -> list[Update]:
        updates: list[Update] = []
        for fall in summary.falls:
            restored = self.model.restore_fall(summary.patient_id, fall, received_s)
            if not restored:
                continue
            updates += restored
            _log.warning(
                "restored an unresolved fall of %s from the daily summary",
                mask_id(summary.patient_id),
            )
            self.escalator.on_fall(fall.event_id, summary.patient_id, fall.time_s, received_s)
            self.escalator.on_escalation_seen(fall.event_id, fall.escalation_level)
            if fall.acknowledged_s is not None:
                self.escalator.on_handled(fall.event_id, "acknowledged")
            self.recorder.on_restored_fall(summary.patient_id, fall, received_s)
        return updates

    def _apply_ack(self, patient_id: str, ack: Ack, publish: bool = True) -> list[Update]:
        self.escalator.on_handled(ack.event_id, ack.action)
        self.notifier.stop(ack.event_id, f"fall {ack.action} on a dashboard")
        self.book.on_ack(patient_id, ack)
        updates = self.model.apply_ack(ack)
        if publish:
            self.broadcaster.publish(updates)
            return []
        return updates

    # -- ticking -------------------------------------------------------------

    async def _tick(self) -> None:
        assert self._mqtt is not None  # set in __aenter__
        next_summary_s = time.monotonic() + self.config.summary_interval_s
        while True:
            self.broadcaster.publish(self.model.set_broker_connected(self._mqtt.connected))
            self.broadcaster.publish(self.model.set_intake(self.drops.as_dict()))
            # Escalations go out even with the broker down: webhooks and
            # Apprise do not need it, and the MQTT copy is retried.
            await self._publish_escalations()
            if self._mqtt.connected and time.monotonic() >= next_summary_s:
                next_summary_s = time.monotonic() + self.config.summary_interval_s
                try:
                    await self._publish_summaries()
                except BrokerError as exc:
                    _log.warning("summaries not published (retrying): %s", exc)
            self.ticks += 1
            await asyncio.sleep(_TICK_S)

    async def _claim(self, due: Escalation) -> bool:
        """True if this instance is the one to send ``due`` (claimed in the record)."""
        try:
            claim = await self.recorder.claim(due, _CLAIM_LEASE_S)
        except StoreError as exc:
            # A duplicate escalation beats a missing one: send it unclaimed.
            _log.error("escalation claim failed (sending anyway): %s", exc)
            return True
        if claim is Claim.MISSING and not self.record.pending:
            # Nobody recorded this fall and nothing is on its way to the record
            # (a bug or a hand-edited database): send it unclaimed, never never.
            _log.error("escalation of a fall missing from the record: sending it unclaimed")
            return True
        if claim is Claim.DONE or claim is Claim.CLOSED:
            # Another instance sent it, or someone handled the fall there.
            self.escalator.mark_issued(due.event_id, due.level)
            if claim is Claim.DONE:
                message = EscalationMessage.at(
                    due.event_id, due.patient_id, due.level, self._clock()
                )
                self.broadcaster.publish(self.model.apply_escalation(message))
        return claim is Claim.CLAIMED

    async def _publish_escalations(self) -> None:
        held_back: set[str] = set()
        for due in self.escalator.due(self._clock()):  # a fall's level 1 before its level 2
            # A level goes out only after the one below it: sending level 2
            # marks level 1 issued here and in the record, so it would never go out.
            if due.event_id in held_back or not await self._claim(due):
                if self.escalator.level(due.event_id) < due.level:  # not sent by anyone yet
                    held_back.add(due.event_id)
                continue  # another instance's, or not recorded yet: asked again next tick
            now_s = self._clock()
            # Marked issued at once: from here the notifier owns the delivery
            # (MQTT included, and the retries), so a dead recipient or a
            # broker outage cannot hold back the page, the record or level 2.
            self.escalator.mark_issued(due.event_id, due.level)
            self.book.on_escalation(due.patient_id, due.event_id, due.level)
            self.escalations_published += 1
            _log.warning(
                "fall of %s not acknowledged: escalated to level %d",
                mask_id(due.patient_id),
                due.level,
            )
            message = EscalationMessage.at(due.event_id, due.patient_id, due.level, now_s)
            self.recorder.on_escalation(message, f"dashboard {self.instance}")
            self.broadcaster.publish(self.model.apply_escalation(message))
            self.notifier.submit(self._notice(due, now_s))

    def _notice(self, due: Escalation, now_s: float) -> EscalationNotice:
        alert = self.model.alert(due.event_id) or {}
        return EscalationNotice(
            event_id=due.event_id,
            patient_id=due.patient_id,
            gateway_id=str(alert.get("gateway_id") or ""),
            level=due.level,
            fall_time_s=float(alert.get("time_s", due.due_s)),
            due_s=due.due_s,
            issued_s=now_s,
            patient=self.config.patients.get(due.patient_id),
        )

    async def _publish_escalation(self, notice: EscalationNotice) -> None:
        """The notifier's MQTT channel: the per-patient message and the bridge copy."""
        if self._mqtt is None:
            raise BrokerError("the dashboard is stopping")
        if not self._mqtt.connected:
            # Wait for the broker instead of sleeping a backoff: the copy goes
            # out the moment the link is back.
            try:
                async with asyncio.timeout(_BROKER_WAIT_S):
                    await self._mqtt.wait_connected()
            except TimeoutError:
                raise BrokerError("broker unreachable") from None
        message = EscalationMessage.at(
            notice.event_id, notice.patient_id, notice.level, notice.issued_s
        )
        await self._mqtt.publish(
            self.topics.escalations(notice.patient_id), message.to_json(), qos=1
        )
        await self._mqtt.publish(
            self.topics.escalation_bridge, notice.to_json(with_patient=False), qos=1
        )

    def _on_notify_status(self, status: DeliveryStatus) -> None:
        self.broadcaster.publish(self.model.apply_notification(status.event_id, status.to_dict()))

    async def _publish_summaries(self) -> None:
        assert self._mqtt is not None  # set in __aenter__
        pending = self.book.take_dirty()
        for index, (patient_id, day) in enumerate(pending):
            summary = self.book.summary(patient_id, day)
            if summary is None:
                continue
            self.recorder.on_summary(summary)
            payload = summary.to_json()
            try:
                await self._mqtt.publish(
                    self.topics.summary_archive(patient_id, day.isoformat()),
                    payload,
                    qos=1,
                    retain=True,
                )
                if day == self.book.latest_day(patient_id):
                    await self._mqtt.publish(
                        self.topics.summary(patient_id), payload, qos=1, retain=True
                    )
                    old = day - timedelta(days=self.config.keep_archive_days)
                    if (patient_id, old) not in self._archive_cleared:
                        # An empty retained message deletes the oldest archived day.
                        await self._mqtt.publish(
                            self.topics.summary_archive(patient_id, old.isoformat()),
                            b"",
                            qos=1,
                            retain=True,
                        )
                        self._archive_cleared.add((patient_id, old))
            except BrokerError:
                for again in pending[index:]:
                    self.book.mark_dirty(*again)
                raise
            self.broadcaster.publish(self.model.apply_summary(summary))


def _default_client_id(port: int) -> str:
    # Stable across restarts (the broker keeps our session and queues falls),
    # distinct per dashboard (two clients with one id kick each other off).
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40]
    suffix = str(port) if port else uuid.uuid4().hex[:8]
    return f"pm-dashboard-{host}-{suffix}"


def _listen_error(host: str, port: int, exc: OSError) -> ConfigError:
    """One clear line for an HTTP address that cannot be bound (aiohttp's
    message is a raw ``[Errno 98] error while attempting to bind ...``)."""
    reasons = {
        errno.EADDRINUSE: "the port is in use (another dashboard running?)",
        errno.EADDRNOTAVAIL: "that is not an address of this machine",
        errno.EACCES: "permission denied (ports below 1024 need privileges)",
    }
    reason = reasons.get(exc.errno or 0, (exc.strerror or str(exc)).lower())
    shown = f"[{host}]" if ":" in host else host
    return ConfigError(
        f"cannot listen on {shown}:{port}: {reason}; choose another with --listen HOST:PORT"
    )
