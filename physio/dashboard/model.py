"""What the dashboard shows, kept current from parsed MQTT messages (pure, time injected).

:class:`DashboardModel` holds the tiles (latest state and a short flexion
history per patient), gateway status, the alert feed with its acks and
escalation levels, and summary totals. Each ``apply_*`` method returns the
updates to push to browsers as ``(sse_event_name, json_object)`` pairs;
:meth:`DashboardModel.snapshot` is what a newly connected browser gets.

Alerts are de-duplicated by event id (QoS 1 may deliver twice; several
dashboards publish the same acks). An open fall is never dropped from the
feed, whatever its size.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from physio.dashboard.summary import DailySummary, FallRecord
from physio.dashboard.wire import (
    AckMessage,
    EscalationMessage,
    EventMessage,
    GatewayStatusMessage,
    StateMessage,
    format_time,
)

__all__ = ["FEED_TYPES", "SEVERITY_RANK", "DashboardModel", "Update"]

Update = tuple[str, dict[str, Any]]

SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2, "info": 3}
# Types that become feed items; the info types annotate an earlier item instead.
FEED_TYPES = frozenset({"fall_detected", "device_disconnected", "battery_low", "slouch_started"})


@dataclass
class _Alert:
    event: EventMessage
    received_s: float
    status: str = "open"  # open | acknowledged | resolved
    acks: list[AckMessage] = field(default_factory=list)
    escalation_level: int = 0
    note: str = ""  # e.g. "cancelled by wearable", "slouch ended"
    # "level:channel" -> delivery status of an escalation notice (notify.py)
    notifications: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        e = self.event
        return {
            "event_id": e.event_id,
            "type": e.type,
            "patient_id": e.patient_id,
            "gateway_id": e.gateway_id,
            "time": format_time(e.time_s),
            "time_s": e.time_s,
            "severity": e.severity,
            "flexion_deg": e.flexion_deg,
            "lateral_deg": e.lateral_deg,
            "details": dict(e.details),
            "received_s": self.received_s,
            "status": self.status,
            "acks": [
                {"action": a.action, "by": a.by, "time": format_time(a.time_s)} for a in self.acks
            ],
            "escalation_level": self.escalation_level,
            "note": self.note,
            "notifications": [self.notifications[k] for k in sorted(self.notifications)],
        }


def _state_dict(state: StateMessage, received_s: float) -> dict[str, Any]:
    return {
        "patient_id": state.patient_id,
        "gateway_id": state.gateway_id,
        "time": format_time(state.time_s),
        "time_s": state.time_s,
        "received_s": received_s,
        "flexion_deg": state.flexion_deg,
        "lateral_deg": state.lateral_deg,
        "activity": state.activity,
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
        directory: patient id -> ``{"name", "room", "bed", "location"}``
            from the dashboard's patients file (sent to browsers only).
    """

    def __init__(
        self,
        history_s: float = 300.0,
        max_alerts: int = 500,
        directory: dict[str, dict[str, str]] | None = None,
    ) -> None:
        if history_s <= 0 or max_alerts < 1:
            raise ValueError(
                f"history_s must be > 0 and max_alerts >= 1, got {history_s}, {max_alerts}"
            )
        self.history_s = history_s
        self.max_alerts = max_alerts
        self._states: dict[str, dict[str, Any]] = {}
        self._history: dict[str, deque[tuple[float, float | None]]] = {}
        self._gateways: dict[str, dict[str, Any]] = {}
        self._alerts: dict[str, _Alert] = {}
        self._early_acks: dict[str, list[AckMessage]] = {}
        self._summaries: dict[str, dict[str, Any]] = {}
        self.broker_connected = False
        self.directory = dict(directory or {})

    # -- inputs ----------------------------------------------------------

    def apply_state(self, state: StateMessage, received_s: float) -> list[Update]:
        """A patient's latest state; an older one than we have is ignored."""
        current = self._states.get(state.patient_id)
        if current is not None and state.time_s < current["time_s"]:
            return []
        data = _state_dict(state, received_s)
        self._states[state.patient_id] = data
        history = self._history.setdefault(state.patient_id, deque())
        if not history or state.time_s > history[-1][0]:
            history.append((state.time_s, state.flexion_deg))
        while history and history[0][0] < state.time_s - self.history_s:
            history.popleft()
        return [("state", data)]

    def apply_gateway(self, status: GatewayStatusMessage, received_s: float) -> list[Update]:
        """A gateway went online or offline."""
        previous = self._gateways.get(status.gateway_id)
        since_s = received_s
        if previous is not None and previous["online"] == status.online:
            since_s = previous["since_s"]
        data = {"gateway_id": status.gateway_id, "online": status.online, "since_s": since_s}
        self._gateways[status.gateway_id] = data
        return [("gateway", data)]

    def apply_event(self, event: EventMessage, received_s: float) -> list[Update]:
        """A new event: a feed item, or an annotation of an earlier one."""
        if event.event_id in self._alerts:
            return []  # duplicate delivery
        if event.type in FEED_TYPES or event.type not in (
            "slouch_ended",
            "fall_cancelled",
            "device_connected",
        ):
            alert = _Alert(event, received_s)
            for ack in self._early_acks.pop(event.event_id, []):
                self._apply_ack_to(alert, ack)
            self._alerts[event.event_id] = alert
            self._trim()
            return [("alert", alert.to_dict())]
        return [("alert", a.to_dict()) for a in self._annotate(event)]

    def apply_ack(self, ack: AckMessage) -> list[Update]:
        """An ack or resolve from any dashboard (ours included, echoed by the broker)."""
        alert = self._alerts.get(ack.event_id)
        if alert is None:
            pending = self._early_acks.setdefault(ack.event_id, [])
            if len(self._early_acks) > 1000:
                self._early_acks.pop(next(iter(self._early_acks)))
            if ack not in pending:
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
        event = EventMessage(
            event_id=record.event_id,
            type="fall_detected",
            patient_id=patient_id,
            gateway_id="",
            time_s=record.time_s,
            severity="high",
            flexion_deg=None,
            lateral_deg=None,
            device_time_s=None,
            details={},
        )
        alert = _Alert(
            event,
            received_s,
            escalation_level=record.escalation_level,
            note="restored from the daily summary",
        )
        if record.acknowledged_by is not None and record.acknowledged_s is not None:
            self._apply_ack_to(
                alert,
                AckMessage(
                    record.event_id, "acknowledged", record.acknowledged_by, record.acknowledged_s
                ),
            )
        for ack in self._early_acks.pop(record.event_id, []):
            self._apply_ack_to(alert, ack)
        self._alerts[record.event_id] = alert
        self._trim()
        return [("alert", alert.to_dict())]

    def restore_alert(
        self,
        event: EventMessage,
        received_s: float,
        *,
        acks: list[AckMessage],
        escalation_level: int,
        note: str,
    ) -> list[Update]:
        """Bring back an alert from the alert record (a restarted dashboard)."""
        if event.event_id in self._alerts:
            return []
        alert = _Alert(event, received_s, escalation_level=escalation_level, note=note)
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
            "directory": self.directory,
        }

    # -- internals -------------------------------------------------------

    def _apply_ack_to(self, alert: _Alert, ack: AckMessage) -> bool:
        if any(a.action == ack.action and a.by == ack.by for a in alert.acks):
            return False
        alert.acks.append(ack)
        if ack.action == "resolved":
            alert.status = "resolved"
        elif alert.status == "open":
            alert.status = "acknowledged"
        return True

    def _annotate(self, event: EventMessage) -> list[_Alert]:
        # The info types refer to the patient's latest matching feed item.
        wanted, note = {
            "slouch_ended": ("slouch_started", "slouch ended"),
            "fall_cancelled": ("fall_detected", "cancelled by the wearable (patient got up)"),
            "device_connected": ("device_disconnected", "reconnected"),
        }[event.type]
        for alert in reversed(self._alerts.values()):
            if (
                alert.event.patient_id == event.patient_id
                and alert.event.type == wanted
                and alert.event.time_s <= event.time_s
            ):
                if alert.note == note:
                    return []
                alert.note = note
                if wanted == "slouch_started" and alert.status == "open":
                    # A slouch that ended was handled by the patient: nobody
                    # needs to click it away. Falls never close themselves.
                    alert.status = "resolved"
                return [alert]
        return []

    def _trim(self) -> None:
        excess = len(self._alerts) - self.max_alerts
        if excess <= 0:
            return
        # Drop the oldest items that nobody needs to act on; an unresolved fall stays.
        order = sorted(
            self._alerts.values(),
            key=lambda a: (
                a.event.type == "fall_detected" and a.status != "resolved",
                a.status == "open",
                a.event.time_s,
            ),
        )
        for alert in order[:excess]:
            if alert.event.type == "fall_detected" and alert.status != "resolved":
                break
            del self._alerts[alert.event.event_id]
