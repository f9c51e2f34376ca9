"""What ``posture-monitor watch`` shows: :class:`WatchModel`, built from received messages.

It consumes ``alerts.Message`` objects and renders strings (the CLI and the
live loop are in :mod:`physio.watch`). Events are de-duplicated by
``event_id`` (QoS 1 is at-least-once). Every message is read through the one
contract (``alerts.intake``): what breaks it is dropped, counted per reason
(a footer line) and never shown as a patient, alert or gateway; a bug while
applying one message is logged and skipped. Retained open falls
(``{root}/patients/{id}/alerts``) show as RESTORED; escalations and new falls
owe a terminal bell.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from alerts.acks import Ack, EscalationMessage
from alerts.events import AlertEvent, EventType, Severity
from alerts.intake import DropCounter, Inbound, PatientCap, read_message
from alerts.open_falls import OpenFalls
from alerts.settings import Message
from alerts.state import GatewayStatus, PatientState
from alerts.topics import TopicKind, Topics
from alerts.wire import DropReason, PayloadError, format_utc_ms, utc_from_timestamp

__all__ = ["WatchModel"]

logger = logging.getLogger(__name__)

_RESET, _BOLD, _DIM = "\x1b[0m", "\x1b[1m", "\x1b[2m"
_SEVERITY_STYLE = {
    Severity.HIGH: "\x1b[1;97;41m",
    Severity.MEDIUM: "\x1b[33m",
    Severity.LOW: "\x1b[36m",
    Severity.INFO: _DIM,
}
_SEEN_IDS = 10_000  # event ids remembered for de-duplication
_MAX_GATEWAYS = 500


@dataclass
class _FeedItem:
    event: AlertEvent
    ack: str = ""  # "acknowledged by X" / "resolved by X"
    cancelled: bool = False
    restored: bool = False  # from the retained open falls, not seen live
    escalation_level: int = 0


_DETAIL_FORMATS = {
    "peak_acc_g": "impact {:.1f} g",
    "duration_s": "for {:.0f} s",
    "battery_pct": "battery {:.0f}%",
}


def _angle(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}°"


def _age(now_s: float, then_s: float) -> str:
    age_s = max(0.0, now_s - then_s)
    return f"{age_s:.0f}s" if age_s < 120 else f"{age_s / 60:.0f}m"


class WatchModel:
    """What the watch view shows, built from received messages.

    Args:
        topics: the topic layout (root) to interpret.
        max_events: alert feed length kept and shown.
        clock: wall clock, POSIX s (for "updated ... ago").

    Counters ``ignored`` (not our topics) and ``drops`` (payloads that
    break the contract, per reason) are shown in the footer; nothing bad
    crashes it. Patients are capped per gateway and in total.
    """

    def __init__(
        self,
        topics: Topics | None = None,
        *,
        max_events: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topics = topics or Topics()
        self.max_events = max_events
        self._clock = clock
        self.states: dict[str, PatientState] = {}
        self._state_at_s: dict[str, float] = {}  # when each state is filed (alerts.clock)
        self.gateways: dict[str, GatewayStatus] = {}
        self.feed: list[_FeedItem] = []
        self._seen: OrderedDict[str, _FeedItem | None] = OrderedDict()
        self.ignored = 0
        self.duplicates = 0
        self.drops = DropCounter(logger)
        self.patients = PatientCap()
        self.bells = 0  # bells owed: one per new fall and per escalation
        self._lines: list[str] = []

    @property
    def malformed(self) -> int:
        """Messages dropped for breaking the contract (all reasons)."""
        return self.drops.total

    # ---------------------------------------------------------------- input

    def handle(self, message: Message) -> bool:
        """Take one message; return True if the view changed. Never raises for data."""
        info = self.topics.parse(message.topic)
        if info is None:
            self.ignored += 1
            return False
        try:
            inbound = read_message(
                self.topics,
                message.topic,
                message.payload,
                retained=message.retain,
                received_s=self._clock(),
            )
            if inbound is None:
                return False
            if not inbound.clock_trusted and inbound.payload is not None:
                self.drops.untrusted_clock(inbound.topic)
            return self._apply(inbound)
        except PayloadError as exc:
            self.drops.drop(exc.reason, info, str(exc))
        except Exception:  # the view must outlive any one message
            logger.exception("bug while applying a message on %s; skipped", info.kind)
            self.drops.drop(DropReason.HANDLER_ERROR, info, "see the traceback above")
        total = self.drops.total
        if total & (total - 1) == 0:  # a line at 1, 2, 4, 8... drops, not one per message
            self._lines.append(f"DROPPED {self.drops.line()}")
        return False

    def _apply(self, inbound: Inbound) -> bool:
        info, obj = inbound.topic, inbound.payload
        if info.kind is TopicKind.STATE:
            if obj is None:  # a cleared retained state: the patient left
                self._state_at_s.pop(info.id, None)
                return self.states.pop(info.id, None) is not None
            assert isinstance(obj, PatientState)  # read_message's contract
            return self._on_state(obj, inbound.at_s)
        if info.kind is TopicKind.STATUS:
            if obj is None:
                return self.gateways.pop(info.id, None) is not None
            assert isinstance(obj, GatewayStatus)
            return self._on_status(obj)
        if isinstance(obj, AlertEvent):
            self._admit(obj.patient_id, obj.gateway_id, fall=obj.type is EventType.FALL_DETECTED)
            return self._on_event(obj, inbound.at_s)
        if isinstance(obj, OpenFalls):
            self._admit(obj.patient_id, obj.gateway_id, fall=bool(obj.open))
            return self._on_open_falls(obj, restored=inbound.retained)
        if isinstance(obj, EscalationMessage):
            return self._on_escalation(obj)
        if isinstance(obj, Ack):
            return self._on_ack(obj)
        return False  # a cleared open-falls list, summaries: nothing to show

    def _admit(self, patient_id: str, gateway_id: str, *, fall: bool = False) -> None:
        # A fall is admitted beyond the cap: it is never shed (alerts.intake.PatientCap).
        if not self.patients.admit(patient_id, gateway_id, fall=fall):
            raise PayloadError("patient cap reached", DropReason.OVER_CAPACITY)

    def _on_state(self, state: PatientState, at_s: float) -> bool:
        patient_id = state.patient_id
        if at_s < self._state_at_s.get(patient_id, -float("inf")):
            return False  # older than what is shown: never overwrites it
        self._admit(patient_id, state.gateway_id)
        old = self.states.get(patient_id)
        self.states[patient_id] = state
        self._state_at_s[patient_id] = at_s
        key = (state.activity, state.slouching, state.device_connected, state.calibrated)
        if old is None or key != (
            old.activity,
            old.slouching,
            old.device_connected,
            old.calibrated,
        ):
            self._lines.append(
                f"{format_utc_ms(utc_from_timestamp(at_s))} STATE {patient_id} "
                f"activity={state.activity} "
                f"slouching={'yes' if state.slouching else 'no'} "
                f"device={'connected' if state.device_connected else 'DISCONNECTED'} "
                f"flexion={_angle(state.flexion_deg)} lateral={_angle(state.lateral_deg)}"
            )
        return True

    def _on_status(self, status: GatewayStatus) -> bool:
        gateway_id = status.gateway_id
        old = self.gateways.get(gateway_id)
        if old is None and len(self.gateways) >= _MAX_GATEWAYS:
            raise PayloadError("gateway cap reached", DropReason.OVER_CAPACITY)
        self.gateways[gateway_id] = status
        if old is None or old.status != status.status:
            self._lines.append(
                f"{format_utc_ms(status.time)} GATEWAY {gateway_id} {status.status.upper()}"
            )
        return True

    def _on_event(self, event: AlertEvent, at_s: float) -> bool:
        # The feed shows the event's own time unless its clock is not credible.
        if abs(at_s - event.time_s) > 1.0:
            event = replace(event, time=utc_from_timestamp(at_s))
        if event.event_id in self._seen:
            self.duplicates += 1
            return False
        item = _FeedItem(event)
        self._add(item)
        return True

    def _add(self, item: _FeedItem) -> None:
        event = item.event
        patient_id = event.patient_id
        self._remember(event.event_id, item)
        if event.type is EventType.FALL_DETECTED:
            self.bells += 1
        if event.type is EventType.FALL_CANCELLED:
            for earlier in reversed(self.feed):
                if (
                    earlier.event.patient_id == patient_id
                    and earlier.event.type is EventType.FALL_DETECTED
                    and earlier.event.time <= event.time
                ):
                    earlier.cancelled = True
                    break
        self.feed.append(item)
        self.feed.sort(key=lambda i: i.event.time)
        self._trim_feed()
        label = "RESTORED" if item.restored else "EVENT"
        self._lines.append(f"{label} " + self._event_line(item, color=False, iso_time=True))

    def _trim_feed(self) -> None:
        # Open falls are never trimmed away: only what nobody must act on goes.
        excess = len(self.feed) - self.max_events
        for item in list(self.feed):
            if excess <= 0:
                break
            if item.event.type is EventType.FALL_DETECTED and not (item.ack or item.cancelled):
                continue
            self.feed.remove(item)
            excess -= 1

    def _on_open_falls(self, open_falls: OpenFalls, *, restored: bool) -> bool:
        """A patient's open falls. ``restored``: replayed from the broker's retained
        store at subscription, so open before this view started; a list that
        arrives live (the gateway just added a fall, often before the fall's own
        event arrives) is news, not a restoration."""
        changed = False
        for event in open_falls.open:
            if event.event_id in self._seen:
                continue
            self._add(_FeedItem(event, restored=restored))
            changed = True
        return changed

    def _on_escalation(self, escalation: EscalationMessage) -> bool:
        item = self._seen.get(escalation.event_id)
        level = escalation.level
        if (
            item is None
            or item.event.patient_id != escalation.patient_id
            or level <= item.escalation_level
        ):
            return False
        item.escalation_level = level
        if not (item.ack or item.cancelled):
            self.bells += 1
        self._lines.append(f"ESCALATED {item.event.event_id} level {level}")
        return True

    def take_bells(self) -> int:
        """Bells owed since the last call (one per new fall and per escalation)."""
        bells, self.bells = self.bells, 0
        return bells

    def _on_ack(self, ack: Ack) -> bool:
        item = self._seen.get(ack.event_id)
        if item is None:
            return False
        item.ack = f"{ack.action} by {ack.by[:24]}"
        self._lines.append(f"ACK {ack.event_id} {item.ack}")
        return True

    def _remember(self, event_id: str, item: _FeedItem) -> None:
        self._seen[event_id] = item
        while len(self._seen) > _SEEN_IDS:
            self._seen.popitem(last=False)

    # --------------------------------------------------------------- output

    def take_lines(self) -> list[str]:
        """Plain-text lines for changes since the last call (non-TTY output)."""
        lines, self._lines = self._lines, []
        return lines

    def _event_line(self, item: _FeedItem, *, color: bool, iso_time: bool = False) -> str:
        """One feed line; the screen shows local wall time, logs ISO UTC."""
        event = item.event
        severity = event.severity or Severity.INFO
        when = (
            format_utc_ms(event.time) if iso_time else event.time.astimezone().strftime("%H:%M:%S")
        )
        parts = [
            when,
            f"{severity.upper():6}",
            f"{event.type.replace('_', ' ').upper():19}",
            f"{event.patient_id:10}",
            f"gw {event.gateway_id}",
        ]
        if event.flexion_deg is not None:
            parts.append(f"flexion {_angle(event.flexion_deg)}")
        # What a physiotherapist reads; the engine's internals stay in the JSON.
        parts += [
            _DETAIL_FORMATS[key].format(value)
            for key, value in sorted(event.details.items())
            if key in _DETAIL_FORMATS
        ]
        if item.restored:
            parts.append("(RESTORED: open before this view started)")
        if item.escalation_level:
            parts.append(f"(ESCALATED level {item.escalation_level})")
        if item.cancelled:
            parts.append("(CANCELLED)")
        if item.ack:
            parts.append(f"({item.ack})")
        line = "  ".join(parts)
        if color:
            style = _SEVERITY_STYLE[severity]
            if item.cancelled or item.ack:
                style = _DIM
            line = f"{style}{line}{_RESET}"
        return line

    def render(self, *, color: bool = False, header: str = "", width: int = 120) -> str:
        """The whole screen as text: patients table, then the alert feed.

        The feed lists falls that are neither cancelled nor acknowledged
        first, then everything by severity, newest first within a severity.
        """
        now_s = self._clock()
        bold = (lambda s: f"{_BOLD}{s}{_RESET}") if color else (lambda s: s)
        online = sum(1 for g in self.gateways.values() if g.online)
        lines = [
            bold(f"Posture monitor {header}".rstrip()),
            f"{len(self.states)} patient(s), {online}/{len(self.gateways)} gateway(s) online"
            f"   {utc_from_timestamp(now_s).astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}",
            "",
        ]
        lines.append(
            bold(
                f"{'PATIENT':12}{'GATEWAY':12}{'GW':9}{'DEVICE':8}{'BATT':6}"
                f"{'FLEXION':9}{'LATERAL':9}{'ACTIVITY':10}{'SLOUCH':8}UPDATED"
            )
        )
        for patient_id in sorted(self.states):
            s = self.states[patient_id]
            gateway = self.gateways.get(s.gateway_id)
            gw_text = "?" if gateway is None else str(gateway.status)
            row = (
                f"{patient_id[:11]:12}{s.gateway_id[:11]:12}{gw_text:9}"
                f"{'yes' if s.device_connected else 'NO':8}"
                f"{'-' if s.battery_pct is None else f'{s.battery_pct}%':6}"
                f"{_angle(s.flexion_deg):9}{_angle(s.lateral_deg):9}{s.activity[:9]:10}"
                f"{'YES' if s.slouching else 'no':8}"
                f"{_age(now_s, self._state_at_s.get(patient_id, s.time_s))} ago"
            )
            if color and (s.slouching or not s.device_connected or gw_text != "online"):
                row = f"\x1b[33m{row}{_RESET}"
            lines.append(row[:width] if not color else row)
        if not self.states:
            lines.append("(no patient state yet)")
        lines += ["", bold("ALERTS (open falls first, then by severity, newest first)")]

        def order(item: _FeedItem) -> tuple[bool, int, float]:
            open_fall = item.event.type is EventType.FALL_DETECTED and not (
                item.cancelled or item.ack
            )
            rank = (item.event.severity or Severity.INFO).rank
            return (not open_fall, -rank, -item.event.time.timestamp())

        feed = sorted(self.feed, key=order)
        lines += [self._event_line(item, color=color) for item in feed] or ["(no alerts)"]
        footer = []
        if self.drops.line():
            footer.append(self.drops.line())
        if self.duplicates:
            footer.append(f"{self.duplicates} duplicate event(s) suppressed")
        if footer:
            lines += ["", ", ".join(footer)]
        return "\n".join(lines) + "\n"
