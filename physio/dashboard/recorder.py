"""What the dashboard service writes to its alert record, and what it reads back at start.

:class:`Recorder` turns the parsed MQTT messages the service handles (events,
acks, escalations, summaries) into queued record writes, restores the open
alerts into the model and the escalator when the dashboard starts, and claims
escalation levels in the record so that several dashboard instances on one
database send each level exactly once.

"From where" is recorded as a short text: ``gateway ward-3`` for an event,
``dashboard <instance> from 10.0.0.7`` for an ack clicked on this instance,
``mqtt`` for what another dashboard published (its own row, written by that
instance, replaces it), ``retained open alerts of gateway ward-3`` for a fall
learnt from the gateway's retained open-alerts topic.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import timedelta

from alerts.acks import Ack, EscalationMessage
from alerts.events import AlertEvent, EventType
from alerts.summary import DailySummary, FallRecord
from alerts.wire import PayloadError, utc_from_timestamp
from common.ids import mask_id
from physio.dashboard import record_ops as ops
from physio.dashboard.escalation import Escalation, Escalator
from physio.dashboard.model import DashboardModel, Update
from physio.dashboard.record import AlertRecord
from physio.dashboard.store import SqlStore
from physio.dashboard.summary_book import SummaryBook

__all__ = ["Recorder"]

_log = logging.getLogger(__name__)

# Open non-fall alerts older than this are not brought back to the feed at start.
_RESTORE_OTHERS_S = 24 * 3600.0
# How often an instance measures its clock against the record's again (hosts'
# clocks drift and get stepped), and from what offset it warns the operator.
_CLOCK_RESYNC_S = 3600.0
_CLOCK_WARN_S = 2.0
_NOTES = {
    "fall_detected": "cancelled by the wearable (patient got up)",
    "slouch_started": "slouch ended",
    "device_disconnected": "reconnected",
}


# Info events that close or annotate an earlier alert instead of being one.
_FOLLOW_UPS = frozenset(
    {EventType.FALL_CANCELLED, EventType.SLOUCH_ENDED, EventType.DEVICE_CONNECTED}
)


class Recorder:
    """The service's link to its :class:`AlertRecord`.

    Args:
        record: the open record.
        instance: this dashboard instance's id (client id plus a random part),
            the owner of its escalation claims.
        clock: wall clock, POSIX s.
    """

    def __init__(self, record: AlertRecord, instance: str, clock: Callable[[], float]) -> None:
        self.record = record
        self.instance = instance
        self._clock = clock
        # The record's clock minus ours, and when (monotonic s) it was
        # measured (never yet: measured before the first claim).
        self._offset_s = 0.0
        self._offset_at = -math.inf

    # -- writes (queued, in order, never dropped) --------------------------------

    def on_event(self, event: AlertEvent, at_s: float, received_s: float, source: str) -> None:
        """An event received from the broker (or from a retained open-falls list),
        filed at ``at_s`` (its own time, or its receipt when its clock is off)."""
        now_s = self._clock()
        if event.type not in _FOLLOW_UPS:
            data = event.to_dict()
            self.record.write(
                lambda s: ops.add_event(
                    s,
                    data,
                    time_s=at_s,
                    received_s=received_s,
                    severity=str(event.severity),
                    source=source,
                    recorded_s=now_s,
                )
            )
            return
        self.record.write(
            lambda s: ops.add_follow_up(
                s,
                event_id=event.event_id,
                event_type=str(event.type),
                patient_id=event.patient_id,
                time_s=at_s,
                source=source,
                recorded_s=now_s,
            )
        )

    def on_restored_fall(self, patient_id: str, fall: FallRecord, received_s: float) -> None:
        """A fall brought back from a retained daily summary (never seen as an event here)."""
        event = AlertEvent(
            type=EventType.FALL_DETECTED,
            patient_id=patient_id,
            gateway_id="unknown",  # the summary does not name it
            time=utc_from_timestamp(fall.time_s),
            event_id=fall.event_id,
        )
        self.on_event(event, fall.time_s, received_s, "retained daily summary")
        if fall.acknowledged_by is not None and fall.acknowledged_s is not None:
            ack = Ack.at(fall.event_id, "acknowledged", fall.acknowledged_by, fall.acknowledged_s)
            self.on_ack(patient_id, ack)
        if fall.escalation_level:
            self.on_escalation(
                EscalationMessage.at(fall.event_id, patient_id, fall.escalation_level, received_s)
            )

    def on_ack(self, patient_id: str, ack: Ack, source: str = ops.MQTT_SOURCE) -> None:
        """An ack or resolution, clicked here (``source`` says from where) or seen on MQTT."""
        now_s = self._clock()
        self.record.write(
            lambda s: ops.add_ack(
                s,
                event_id=ack.event_id,
                patient_id=patient_id,
                action=str(ack.action),
                by=ack.by,
                time_s=ack.time_s,
                source=source,
                recorded_s=now_s,
            )
        )

    def on_escalation(self, escalation: EscalationMessage, source: str = ops.MQTT_SOURCE) -> None:
        """An escalation level that was sent (by this instance after its claim, or seen)."""
        now_s = self._clock()
        self.record.write(
            lambda s: ops.finish_escalation(
                s,
                event_id=escalation.event_id,
                patient_id=escalation.patient_id,
                level=escalation.level,
                time_s=escalation.time_s,
                source=source,
                recorded_s=now_s,
            )
        )

    def on_summary(self, summary: DailySummary) -> None:
        """A patient's daily summary as published (for reports and CSV)."""
        text = summary.to_json().decode()
        self.record.write(
            lambda s: ops.put_summary(
                s,
                patient_id=summary.patient_id,
                day_iso=summary.day.isoformat(),
                updated_s=summary.updated_s,
                summary_json=text,
            )
        )

    # -- escalation claims ---------------------------------------------------------

    async def sync_clock(self) -> float:
        """Measure how far this host's clock is from the record's (the database
        server's) and keep it: escalation leases are then stated in the
        record's time, which every instance shares. Instances on hosts whose
        clocks disagree would otherwise hold a dead instance's lease longer (or
        shorter) by the difference: a level of a fall sent minutes late.

        Returns:
            The record's clock minus this host's, s.

        Raises:
            StoreError: the database failed (nothing is kept then).
        """
        clock = self._clock

        def offset(store: SqlStore) -> float:
            before = clock()
            record_s = ops.database_time_s(store)
            return record_s - (before + clock()) / 2.0

        offset_s = await self.record.call(offset)
        self._offset_s, self._offset_at = offset_s, time.monotonic()
        if abs(offset_s) >= _CLOCK_WARN_S:
            _log.warning(
                "this host's clock is %.0f s %s the alert record's database; escalation"
                " leases are kept in the record's time (check NTP on both)",
                abs(offset_s),
                "ahead of" if offset_s < 0.0 else "behind",
            )
        return offset_s

    async def claim(self, due: Escalation, lease_s: float) -> ops.Claim:
        """Claim ``due`` in the record, the lease in the record's time
        (:meth:`sync_clock`, measured again every hour).

        Raises:
            StoreError: the database failed.
        """
        if time.monotonic() - self._offset_at >= _CLOCK_RESYNC_S:
            await self.sync_clock()
        now_s = self._clock() + self._offset_s
        return await self.record.call(
            lambda s: ops.claim_escalation(
                s, due.event_id, due.level, self.instance, now_s, lease_s
            )
        )

    # -- restore at start ------------------------------------------------------------

    async def restore(
        self, model: DashboardModel, escalator: Escalator, book: SummaryBook
    ) -> list[Update]:
        """Bring every open alert of the record back into the feed, the escalator
        and the day's summary (so the summaries this dashboard publishes keep it).

        Raises:
            StoreError: the database failed.
        """
        since_s = self._clock() - _RESTORE_OTHERS_S
        stored = await self.record.call(lambda s: ops.open_alerts(s, since_s=since_s))
        updates: list[Update] = []
        falls = 0
        for alert in stored:
            try:
                event = AlertEvent.from_json(alert.payload)
            except (PayloadError, ValueError) as exc:  # written by us, so a bug or a hand edit
                _log.error("alert record: alert %s unreadable, skipped: %s", alert.event_id, exc)
                continue
            closed_s = alert.cancelled_s if alert.type == "fall_detected" else alert.ended_s
            acks = [Ack.at(alert.event_id, a, by, t) for a, by, t in alert.acks]
            updates += model.restore_alert(
                event,
                alert.time_s,
                alert.received_s,
                acks=acks,
                escalation_level=alert.escalated_level,
                note=_NOTES.get(alert.type, "") if closed_s is not None else "",
            )
            if alert.type != "fall_detected":
                continue
            book.on_event(event, alert.time_s)
            for ack in acks:
                book.on_ack(alert.patient_id, ack)
            if alert.escalated_level:
                book.on_escalation(alert.patient_id, alert.event_id, alert.escalated_level)
            falls += 1
            escalator.on_fall(alert.event_id, alert.patient_id, alert.time_s, alert.received_s)
            if alert.escalated_level:
                escalator.on_escalation_seen(alert.event_id, alert.escalated_level)
            for action, _by, _t in alert.acks:
                escalator.on_handled(alert.event_id, action)
            if alert.cancelled_s is not None and math.isfinite(alert.cancelled_s):
                escalator.on_cancelled(alert.patient_id, alert.cancelled_s)
            _log.warning(
                "restored an open fall of %s from the alert record (%s old)",
                mask_id(alert.patient_id),
                timedelta(seconds=round(max(0.0, self._clock() - alert.time_s))),
            )
        if stored:
            _log.info("alert record: %d open alert(s) restored, %d fall(s)", len(stored), falls)
        return updates
