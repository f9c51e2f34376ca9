"""Reading any message under the root through the one contract, and counting what is dropped.

``read_message`` turns a received MQTT message into a typed contract object
(:class:`Inbound`) or raises :class:`alerts.wire.PayloadError` with a
:class:`DropReason`; it checks the limits of each payload kind, that the id in
the payload is the topic's, and the sender's clock (:mod:`alerts.clock`).
:class:`DropCounter` counts drops per reason and per source, logs them at a
limited rate and renders them for an administrator. :class:`PatientCap`
bounds how many patients one gateway (and all together) may make a receiver
remember. Used by the dashboard, ``watch``, ``status`` and ``report``.

No paho here: this module parses bytes, so it stays light to import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from alerts.acks import Ack, EscalationMessage
from alerts.clock import DEFAULT_CLOCK_POLICY, ClockPolicy
from alerts.events import AlertEvent
from alerts.open_falls import OpenFalls
from alerts.state import GatewayStatus, PatientState
from alerts.summary import DailySummary
from alerts.topics import TopicInfo, TopicKind, Topics
from alerts.wire import DropReason, PayloadError
from common.ids import mask_id

__all__ = [
    "DropCounter",
    "Inbound",
    "PatientCap",
    "Payload",
    "read_message",
]

Payload = (
    PatientState | AlertEvent | OpenFalls | Ack | EscalationMessage | GatewayStatus | DailySummary
)
# Kinds whose retained message may be cleared with an empty payload.
_CLEARABLE = frozenset(
    {
        TopicKind.STATE,
        TopicKind.STATUS,
        TopicKind.SUMMARY,
        TopicKind.SUMMARY_ARCHIVE,
        TopicKind.ALERTS,
    }
)


@dataclass(frozen=True)
class Inbound:
    """One received message, parsed and judged.

    Attributes:
        topic: what the topic says (kind, id, day).
        payload: the contract object; None for a cleared retained message.
        retained: replayed by the broker from its retained store.
        received_s: the receiver's clock at receipt, POSIX s.
        at_s: when to file it, POSIX s: the sender's time when credible,
            else ``received_s`` (see ``alerts.clock``).
        clock_trusted: False when ``at_s`` fell back to the receipt time.
    """

    topic: TopicInfo
    payload: Payload | None
    retained: bool
    received_s: float
    at_s: float
    clock_trusted: bool


def _mismatch(what: str) -> PayloadError:
    return PayloadError(f"{what} does not match the topic", DropReason.TOPIC_MISMATCH)


def read_message(
    topics: Topics,
    topic: str,
    payload: bytes,
    *,
    retained: bool,
    received_s: float,
    policy: ClockPolicy = DEFAULT_CLOCK_POLICY,
) -> Inbound | None:
    """Parse and check one message; None when the topic is not one of ours.

    State, status and summaries dated beyond ``policy.max_future_s`` ahead of
    ``received_s`` are refused; events, acks and escalations never are (an
    alert or its handling must not be lost to a clock): they are filed at
    their receipt time instead.

    Raises:
        PayloadError: the payload breaks the contract (its ``reason`` says how).
    """
    info = topics.parse(topic)
    if info is None:
        return None
    kind = info.kind

    def inbound(obj: Payload | None, *times_s: float | None, live: bool = False) -> Inbound:
        at_s, trusted = policy.effective_s(received_s, times_s=times_s, live=live)
        return Inbound(info, obj, retained, received_s, at_s, trusted)

    if not payload and kind in _CLEARABLE:
        return inbound(None)
    if kind is TopicKind.STATE:
        state = PatientState.from_json(payload)
        if state.patient_id != info.id:
            raise _mismatch("patient_id")
        _check_future(state.time_s, received_s, policy)
        return inbound(state, state.mono_time_s, state.time_s, live=not retained)
    if kind is TopicKind.STATUS:
        status = GatewayStatus.from_json(payload)
        if status.gateway_id != info.id:
            raise _mismatch("gateway_id")
        _check_future(status.time.timestamp(), received_s, policy)
        return inbound(status, status.time.timestamp())
    if kind is TopicKind.EVENTS:
        event = AlertEvent.from_json(payload)
        if event.patient_id != info.id:
            raise _mismatch("patient_id")
        return inbound(event, event.mono_time_s, event.time_s)
    if kind is TopicKind.ACKS:
        ack = Ack.from_json(payload)
        return inbound(ack, ack.time_s)
    if kind is TopicKind.ESCALATIONS:
        escalation = EscalationMessage.from_json(payload, info.id)
        return inbound(escalation, escalation.time_s)
    if kind in (TopicKind.SUMMARY, TopicKind.SUMMARY_ARCHIVE):
        summary = DailySummary.from_json(
            payload, now_s=received_s, max_future_s=policy.max_future_s
        )
        if summary.patient_id != info.id or (
            info.day is not None and summary.day.isoformat() != info.day
        ):
            raise _mismatch("summary patient or day")
        return inbound(summary, summary.updated_s)
    # ALERTS: the gateway's retained open falls; like events, never refused for a clock.
    open_falls = OpenFalls.from_json(payload)
    if open_falls.patient_id != info.id:
        raise _mismatch("patient_id")
    return inbound(open_falls, open_falls.time.timestamp())


def _check_future(sent_s: float, received_s: float, policy: ClockPolicy) -> None:
    if sent_s > received_s + policy.max_future_s:
        raise PayloadError(
            f"time {sent_s - received_s:.0f} s ahead of this clock "
            f"(limit {policy.max_future_s:g} s)",
            DropReason.FUTURE_TIME,
        )


def _source(info: TopicInfo | None) -> str:
    if info is None:
        return "other"
    group = "gateway" if info.kind is TopicKind.STATUS else "patient"
    return f"{group}:{info.id}"


class DropCounter:
    """Messages dropped, per reason and per source, with rate-limited logging.

    Args:
        logger: where drops are logged (WARNING), at most once per reason
            every ``log_interval_s`` with the count since the last line.
        max_sources: distinct sources counted by name; the rest as "other"
            (a flood of made-up ids must not grow this).
        clock: monotonic seconds, for the log rate.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        max_sources: int = 200,
        log_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._max_sources = max_sources
        self._log_interval_s = log_interval_s
        self._clock = clock
        self.by_reason: dict[str, int] = {}
        self.by_source: dict[str, int] = {}
        # Kept, but filed at their receipt time: the sender's clock was off
        # (a stepped-back gateway's states, an event from the future).
        self.clock_untrusted = 0
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    @property
    def total(self) -> int:
        """All drops so far."""
        return sum(self.by_reason.values())

    def drop(self, reason: DropReason | str, info: TopicInfo | None, detail: str) -> None:
        """Count one dropped message and maybe log it (ids pseudonymised)."""
        key = str(reason)
        self.by_reason[key] = self.by_reason.get(key, 0) + 1
        source = _source(info)
        if source not in self.by_source and len(self.by_source) >= self._max_sources:
            source = "other"
        self.by_source[source] = self.by_source.get(source, 0) + 1
        self._unlogged[key] = self._unlogged.get(key, 0) + 1
        now = self._clock()
        last = self._logged_at.get(key)
        if last is None or now - last >= self._log_interval_s:
            count, self._unlogged[key] = self._unlogged[key], 0
            self._logged_at[key] = now
            where = "other" if info is None else f"{info.kind} of {mask_id(info.id)}"
            self._logger.warning(
                "dropped %d message(s) (%s) since the last report; latest on %s: %s",
                count,
                key,
                where,
                detail[:200],
            )

    def untrusted_clock(self, info: TopicInfo) -> None:
        """Count a message kept but filed at its receipt time (its sender's clock is off)."""
        self.clock_untrusted += 1
        now = self._clock()
        last = self._logged_at.get("clock_untrusted")
        if last is None or now - last >= self._log_interval_s:
            self._logged_at["clock_untrusted"] = now
            self._logger.warning(
                "%d message(s) so far filed at their receipt time: the sender's clock is "
                "off (latest: %s of %s)",
                self.clock_untrusted,
                info.kind,
                mask_id(info.id),
            )

    def as_dict(self) -> dict[str, object]:
        """For an administrator's JSON: total, per reason, the 20 top sources, and
        how many kept messages had an untrusted clock."""
        top = sorted(self.by_source.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
        return {
            "total": self.total,
            "by_reason": dict(sorted(self.by_reason.items())),
            "top_sources": dict(top),
            "clock_untrusted": self.clock_untrusted,
        }

    def line(self) -> str:
        """One line for a footer, e.g. ``3 bad messages dropped (too_large 2, future_time 1)``;
        empty when nothing was dropped."""
        parts = ", ".join(
            f"{reason} {count}"
            for reason, count in sorted(self.by_reason.items(), key=lambda kv: -kv[1])
        )
        text = f"{self.total} bad message(s) dropped ({parts})" if self.by_reason else ""
        if self.clock_untrusted:
            clock = f"{self.clock_untrusted} filed at receipt (sender clock off)"
            text = f"{text}; {clock}" if text else clock
        return text


class PatientCap:
    """How many patients a receiver remembers: per gateway and in total.

    A patient once admitted stays admitted; a new one beyond either cap is
    refused (the caller drops it as OVER_CAPACITY). This bounds the memory a
    buggy or hostile gateway can make a dashboard spend on made-up ids. A
    fall is the exception: ``admit(..., fall=True)`` always admits, because
    shedding a real fall to save memory is the one trade this product never
    makes; those admissions are counted in ``over_cap_for_falls``.
    """

    def __init__(self, max_patients: int = 2000, max_per_gateway: int = 500) -> None:
        if max_patients < 1 or max_per_gateway < 1:
            raise ValueError(
                f"max_patients and max_per_gateway must be >= 1, got {max_patients}, "
                f"{max_per_gateway}"
            )
        self.max_patients = max_patients
        self.max_per_gateway = max_per_gateway
        self._gateway_of: dict[str, str] = {}
        self._per_gateway: dict[str, int] = {}
        self.over_cap_for_falls = 0

    def __len__(self) -> int:
        return len(self._gateway_of)

    def admit(self, patient_id: str, gateway_id: str, *, fall: bool = False) -> bool:
        """True when the patient is known or fits under both caps (then it is known).

        ``fall``: the message reports a fall, which is admitted beyond the caps.
        """
        if patient_id in self._gateway_of:
            return True
        count = self._per_gateway.get(gateway_id, 0)
        if len(self._gateway_of) >= self.max_patients or count >= self.max_per_gateway:
            if not fall:
                return False
            self.over_cap_for_falls += 1
        self._gateway_of[patient_id] = gateway_id
        self._per_gateway[gateway_id] = count + 1
        return True

    def knows(self, patient_id: str) -> bool:
        """True once the patient was admitted."""
        return patient_id in self._gateway_of
