"""What the dashboard shows, kept current from contract objects (pure, time injected).

:class:`DashboardModel` holds the tiles (latest state and a short flexion
history per patient), gateway status, the alert feed with its acks and
escalation levels, and summary totals. Each ``apply_*`` method returns the
updates to push to browsers as ``(sse_event_name, json_object)`` pairs;
:meth:`DashboardModel.snapshot` is what a newly connected browser gets.

Alerts are de-duplicated by event id (QoS 1 may deliver twice; several
dashboards publish the same acks). An open fall is never dropped from the
feed, whatever its size.

Times: each message comes with ``at_s``, the time the contract's clock rule
(``alerts.clock``) files it under; a patient's state older than the newest
seen never replaces it. Memory is bounded: history points per patient,
gateways, early acks; the number of patients is the caller's cap
(``alerts.intake.PatientCap``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from alerts.acks import Ack, AckAction, EscalationMessage
from alerts.events import AlertEvent, EventType, Severity
from alerts.state import GatewayStatus, PatientState
from alerts.summary import DailySummary, FallRecord, format_time
from alerts.wire import utc_from_timestamp

__all__ = ["FEED_TYPES", "SEVERITY_RANK", "DashboardModel", "Update"]

Update = tuple[str, dict[str, Any]]

SEVERITY_RANK = {Severity.HIGH: 0, Severity.MEDIUM: 1, Severity.LOW: 2, Severity.INFO: 3}
# Types that become feed items; the info types annotate an earlier item instead.
FEED_TYPES = frozenset(
    {
        EventType.FALL_DETECTED,
        EventType.DEVICE_DISCONNECTED,
        EventType.BATTERY_LOW,
        EventType.SLOUCH_STARTED,
    }
)
# info type -> (the feed type it ends, the note it leaves there)
_ANNOTATES = {
    EventType.SLOUCH_ENDED: (EventType.SLOUCH_STARTED, "slouch ended"),
    EventType.FALL_CANCELLED: (
        EventType.FALL_DETECTED,
        "cancelled by the wearable (patient got up)",
    ),
    EventType.DEVICE_CONNECTED: (EventType.DEVICE_DISCONNECTED, "reconnected"),
}
_MAX_HISTORY_POINTS = 2000  # a flood of states must not grow a tile's chart
_MAX_EARLY_ACKS = 1000


@dataclass
class _Alert:
    event: AlertEvent
    at_s: float  # the event's time as filed (its own, or its receipt when its clock is off)
    received_s: float
    status: str = "open"  # open | acknowledged | resolved
    acks: list[Ack] = field(default_factory=list)
    escalation_level: int = 0
    note: str = ""  # e.g. "cancelled by wearable", "slouch ended"
    gateway_id: str | None = None  # overrides the event's (a restored fall has none)
    # "level:channel" -> delivery status of an escalation notice (notify.py)
    notifications: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        e = self.event
        return {
            "event_id": e.event_id,
            "type": str(e.type),
            "patient_id": e.patient_id,
            "gateway_id": e.gateway_id if self.gateway_id is None else self.gateway_id,
            "time": format_time(self.at_s),
            "time_s": self.at_s,
            "severity": str(e.severity),
            "flexion_deg": e.flexion_deg,
            "lateral_deg": e.lateral_deg,
            "details": dict(e.details),
            "received_s": self.received_s,
            "status": self.status,
            "acks": [
                {"action": str(a.action), "by": a.by, "time": format_time(a.time_s)}
                for a in self.acks
            ],
            "escalation_level": self.escalation_level,
            "note": self.note,
            "notifications": [self.notifications[k] for k in sorted(self.notifications)],
        }


def _state_dict(state: PatientState, at_s: float, received_s: float) -> dict[str, Any]:
    return {
        "patient_id": state.patient_id,
        "gateway_id": state.gateway_id,
        "time": format_time(at_s),
        "time_s": at_s,
        "sent_time": format_time(state.time_s),
        "received_s": received_s,
        "flexion_deg": state.flexion_deg,
        "lateral_deg": state.lateral_deg,
        "activity": str(state.activity),
        "slouching": state.slouching,
        "device_connected": state.device_connected,
        "battery_pct": state.battery_pct,
        "calibrated": state.calibrated,
        "slouch_threshold_deg": state.slouch_threshold_deg,
    }


class DashboardModel:
    """Tiles, gateways, alert feed and summary totals.

    Args:
        history_s: seconds of flexion history kept per patient for the chart.
        max_alerts: feed length; handled and non-fall items go first.
        max_gateways: gateways remembered; a status from one more is refused.
        directory: patient id -> ``{"name", "room", "bed", "location"}``
            from the dashboard's patients file (sent to browsers only).
    """

    def __init__(
        self,
        history_s: float = 300.0,
        max_alerts: int = 500,
        directory: dict[str, dict[str, str]] | None = None,
        max_gateways: int = 500,
    ) -> None:
        if history_s <= 0 or max_alerts < 1 or max_gateways < 1:
            raise ValueError(
                f"history_s must be > 0, max_alerts and max_gateways >= 1, got {history_s}, "
                f"{max_alerts}, {max_gateways}"
            )
        self.history_s = history_s
        self.max_alerts = max_alerts
        self.max_gateways = max_gateways
        self._states: dict[str, dict[str, Any]] = {}
        self._history: dict[str, deque[tuple[float, float | None]]] = {}
        # patient -> (sender's time of the shown state, whether it was mono_time)
        self._order: dict[str, tuple[float, bool]] = {}
        self._gateways: dict[str, dict[str, Any]] = {}
        self._alerts: dict[str, _Alert] = {}
        self._early_acks: dict[str, list[Ack]] = {}
        self._summaries: dict[str, dict[str, Any]] = {}
        self.broker_connected = False
        self.intake: dict[str, Any] = {"total": 0, "by_reason": {}, "top_sources": {}}
        self.directory = dict(directory or {})

    # -- inputs ----------------------------------------------------------

    def apply_state(self, state: PatientState, at_s: float, received_s: float) -> list[Update]:
        """A patient's latest state, filed at ``at_s`` (POSIX s); an older one
        than we have is ignored.

        Newer means filed later, or from the same gateway and later on that
        gateway's own clock (``mono_time`` when both have it): a gateway whose
        clock became credible again continues its tile instead of freezing it
        behind the receipt times it was filed under meanwhile.
        """
        current = self._states.get(state.patient_id)
        sender_s = state.mono_time_s if state.mono_time_s is not None else state.time_s
        has_mono = state.mono_time_s is not None
        if current is not None and at_s < current["time_s"]:
            last_sender_s, last_has_mono = self._order[state.patient_id]
            if not (
                current["gateway_id"] == state.gateway_id
                and has_mono == last_has_mono
                and sender_s > last_sender_s
            ):
                return []
        data = _state_dict(state, at_s, received_s)
        self._states[state.patient_id] = data
        self._order[state.patient_id] = (sender_s, has_mono)
        history = self._history.setdefault(state.patient_id, deque(maxlen=_MAX_HISTORY_POINTS))
        if not history or at_s > history[-1][0]:
            history.append((at_s, state.flexion_deg))
        while history and history[0][0] < at_s - self.history_s:
            history.popleft()
        return [("state", data)]

    def apply_gateway(self, status: GatewayStatus, received_s: float) -> list[Update]:
        """A gateway went online or offline.

        Raises:
            OverflowError: a new gateway beyond ``max_gateways`` (the caller
                counts it as a drop).
        """
        previous = self._gateways.get(status.gateway_id)
        if previous is None and len(self._gateways) >= self.max_gateways:
            raise OverflowError(f"more than {self.max_gateways} gateways")
        since_s = received_s
        if previous is not None and previous["online"] == status.online:
            since_s = previous["since_s"]
        data = {"gateway_id": status.gateway_id, "online": status.online, "since_s": since_s}
        # Why the gateway's delivery is impaired (a damaged outbox moved aside,
        # publishing refused again and again): the page shows it as a warning.
        degraded = status.metrics.get("degraded")
        data["degraded"] = str(degraded)[:300] if degraded else None
        self._gateways[status.gateway_id] = data
        return [("gateway", data)]

    def apply_event(self, event: AlertEvent, at_s: float, received_s: float) -> list[Update]:
        """A new event filed at ``at_s``: a feed item, or an annotation of an earlier one."""
        if event.event_id in self._alerts:
            return []  # duplicate delivery
        if event.type in FEED_TYPES:
            alert = _Alert(event, at_s, received_s)
            for ack in self._early_acks.pop(event.event_id, []):
                self._apply_ack_to(alert, ack)
            self._alerts[event.event_id] = alert
            self._trim()
            return [("alert", alert.to_dict())]
        return [("alert", a.to_dict()) for a in self._annotate(event, at_s)]

    def apply_ack(self, ack: Ack) -> list[Update]:
        """An ack or resolve from any dashboard (ours included, echoed by the broker)."""
        alert = self._alerts.get(ack.event_id)
        if alert is None:
            pending = self._early_acks.setdefault(ack.event_id, [])
            if len(self._early_acks) > _MAX_EARLY_ACKS:
                self._early_acks.pop(next(iter(self._early_acks)))
            if ack not in pending and len(pending) < 8:
                pending.append(ack)
            return []
        if not self._apply_ack_to(alert, ack):
            return []
        return [("alert", alert.to_dict())]

    def apply_escalation(self, escalation: EscalationMessage) -> list[Update]:
        """Show the level a fall reached (published by us or another dashboard)."""
        alert = self._alerts.get(escalation.event_id)
        if alert is None or escalation.level <= alert.escalation_level:
            return []
        alert.escalation_level = escalation.level
        return [("alert", alert.to_dict())]

    def apply_summary(self, summary: DailySummary) -> list[Update]:
        """Show the newest day's totals of a patient."""
        current = self._summaries.get(summary.patient_id)
        if current is not None and current["day"] > summary.day.isoformat():
            return []
        data = {
            "patient_id": summary.patient_id,
            "day": summary.day.isoformat(),
            "totals": summary.totals().__dict__,
        }
        if data == current:
            return []
        self._summaries[summary.patient_id] = data
        return [("summary", data)]

    def restore_fall(self, patient_id: str, record: FallRecord, received_s: float) -> list[Update]:
        """Bring back an unresolved fall we never saw, from a retained daily summary.

        After a dashboard restart this is the only record of falls that were
        still open; without it they would vanish from every screen.
        """
        if record.event_id in self._alerts or record.cancelled or record.resolved_s is not None:
            return []
        event = AlertEvent(
            type=EventType.FALL_DETECTED,
            patient_id=patient_id,
            gateway_id="unknown",  # not in the summary; shown as ""
            time=utc_from_timestamp(record.time_s),
            event_id=record.event_id,
        )
        alert = _Alert(
            event,
            record.time_s,
            received_s,
            escalation_level=record.escalation_level,
            note="restored from the daily summary",
            gateway_id="",
        )
        if record.acknowledged_by is not None and record.acknowledged_s is not None:
            self._apply_ack_to(
                alert,
                Ack.at(
                    record.event_id,
                    AckAction.ACKNOWLEDGED,
                    record.acknowledged_by,
                    record.acknowledged_s,
                ),
            )
        for ack in self._early_acks.pop(record.event_id, []):
            self._apply_ack_to(alert, ack)
        self._alerts[record.event_id] = alert
        self._trim()
        return [("alert", alert.to_dict())]

    def restore_alert(
        self,
        event: AlertEvent,
        at_s: float,
        received_s: float,
        *,
        acks: list[Ack],
        escalation_level: int,
        note: str,
    ) -> list[Update]:
        """Bring back an alert from the alert record (a restarted dashboard)."""
        if event.event_id in self._alerts:
            return []
        alert = _Alert(event, at_s, received_s, escalation_level=escalation_level, note=note)
        for ack in [*acks, *self._early_acks.pop(event.event_id, [])]:
            self._apply_ack_to(alert, ack)
        self._alerts[event.event_id] = alert
        self._trim()
        return [("alert", alert.to_dict())]

    def apply_notification(self, event_id: str, status: dict[str, Any]) -> list[Update]:
        """Show where an escalation notice stands (``notify.DeliveryStatus.to_dict()``)."""
        alert = self._alerts.get(event_id)
        if alert is None:
            return []
        alert.notifications[f"{status['level']}:{status['channel']}"] = dict(status)
        return [("alert", alert.to_dict())]

    def set_broker_connected(self, connected: bool) -> list[Update]:
        """Whether our MQTT link is up (a dashboard without it shows stale data)."""
        if connected == self.broker_connected:
            return []
        self.broker_connected = connected
        return [("broker", {"connected": connected})]

    # -- outputs ---------------------------------------------------------

    def alert(self, event_id: str) -> dict[str, Any] | None:
        """One feed item as sent to browsers, or None."""
        alert = self._alerts.get(event_id)
        return None if alert is None else alert.to_dict()

    def patient_of(self, event_id: str) -> str | None:
        """The patient an alert belongs to, or None if unknown."""
        alert = self._alerts.get(event_id)
        return None if alert is None else alert.event.patient_id

    def snapshot(self) -> dict[str, Any]:
        """Everything a newly connected browser needs."""
        return {
            "broker_connected": self.broker_connected,
            "history_s": self.history_s,
            "patients": [
                {**state, "history": [[t, f] for t, f in self._history.get(pid, ())]}
                for pid, state in sorted(self._states.items())
            ],
            "gateways": sorted(self._gateways.values(), key=lambda g: g["gateway_id"]),
            "alerts": [a.to_dict() for a in self._alerts.values()],
            "summaries": dict(sorted(self._summaries.items())),
            "intake": self.intake,
            "directory": self.directory,
        }

    def set_intake(self, counters: dict[str, Any]) -> list[Update]:
        """The drop counters an administrator sees (``DropCounter.as_dict()``)."""
        if counters == self.intake:
            return []
        self.intake = counters
        return [("intake", counters)]

    # -- internals -------------------------------------------------------

    def _apply_ack_to(self, alert: _Alert, ack: Ack) -> bool:
        if any(a.action == ack.action and a.by == ack.by for a in alert.acks):
            return False
        if len(alert.acks) >= 16:  # a flood of made-up names must not grow an alert
            return False
        alert.acks.append(ack)
        if ack.action is AckAction.RESOLVED:
            alert.status = "resolved"
        elif alert.status == "open":
            alert.status = "acknowledged"
        return True

    def _annotate(self, event: AlertEvent, at_s: float) -> list[_Alert]:
        # The info types refer to the patient's latest matching feed item.
        wanted, note = _ANNOTATES[event.type]
        for alert in reversed(self._alerts.values()):
            if (
                alert.event.patient_id == event.patient_id
                and alert.event.type is wanted
                and alert.at_s <= at_s
            ):
                if alert.note == note:
                    return []
                alert.note = note
                if wanted is EventType.SLOUCH_STARTED and alert.status == "open":
                    # A slouch that ended was handled by the patient: nobody
                    # needs to click it away. Falls never close themselves.
                    alert.status = "resolved"
                return [alert]
        return []

    def _trim(self) -> None:
        # Trimmed in batches (down to max_alerts once it is 10 % over): sorting
        # the whole feed for every new item made a 100,000-event backlog cost
        # minutes of CPU.
        if len(self._alerts) <= self.max_alerts + max(1, self.max_alerts // 10):
            return
        excess = len(self._alerts) - self.max_alerts
        # Drop the oldest items that nobody needs to act on; an unresolved fall stays.
        order = sorted(
            self._alerts.values(),
            key=lambda a: (
                a.event.type is EventType.FALL_DETECTED and a.status != "resolved",
                a.status == "open",
                a.at_s,
            ),
        )
        for alert in order[:excess]:
            if alert.event.type is EventType.FALL_DETECTED and alert.status != "resolved":
                break
            del self._alerts[alert.event.event_id]
