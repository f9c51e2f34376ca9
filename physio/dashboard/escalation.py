"""Escalation of falls nobody acknowledged: pure logic, time injected.

A fall that no dashboard acknowledged (or resolved) within
``first_after_s`` of the fall is escalated at level 1, and at level 2 after
``again_after_s``; both are measured from the fall. The clock starts at the
earlier of the fall's own time and the moment we received it: a fall that
reached us late (a broker queue, a dashboard restart) escalates sooner, never
later, and a gateway clock running ahead cannot postpone it.

Only falls escalate; slouch reminders never do. A ``fall_cancelled`` event
from the wearable (the patient got up) stops the escalation of that patient's
latest earlier fall, but the fall stays in the feed until a person handles it.

Several dashboards may run at once. Each escalates on its own, and each also
feeds the escalations it sees on the broker back in with
:meth:`Escalator.on_escalation_seen`, so a level published by one dashboard is
not published again by another that sees it first.

Nothing here reads a clock or sleeps: callers pass POSIX seconds. A level is
marked issued only after the caller published it (:meth:`Escalator.mark_issued`),
so a failed publish is retried on the next :meth:`Escalator.due`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

__all__ = ["Escalation", "EscalationPolicy", "Escalator"]

_log = logging.getLogger(__name__)

_MAX_TRACKED = 10_000  # falls remembered; the oldest handled ones are forgotten first


@dataclass(frozen=True)
class EscalationPolicy:
    """When to escalate, in seconds after the fall.

    Raises:
        ValueError: a time that is not positive, or level 2 not after level 1.
    """

    first_after_s: float = 120.0
    again_after_s: float = 240.0

    def __post_init__(self) -> None:
        if not self.first_after_s > 0:
            raise ValueError(f"escalate-after must be > 0 s, got {self.first_after_s}")
        if not self.again_after_s > self.first_after_s:
            raise ValueError(
                f"escalate-again-after ({self.again_after_s} s) must be later "
                f"than escalate-after ({self.first_after_s} s)"
            )

    def delay_s(self, level: int) -> float:
        """Seconds after the fall at which ``level`` (1 or 2) is due."""
        return self.first_after_s if level == 1 else self.again_after_s


@dataclass(frozen=True)
class Escalation:
    """A level that is due: publish it, then call :meth:`Escalator.mark_issued`."""

    event_id: str
    patient_id: str
    level: int
    due_s: float


@dataclass
class _Fall:
    patient_id: str
    start_s: float
    issued_level: int = 0
    stopped: str | None = None  # "acknowledged", "resolved", "cancelled"
    seen_levels: set[int] = field(default_factory=set)


class Escalator:
    """Tracks open falls and tells which escalation levels are due."""

    def __init__(self, policy: EscalationPolicy | None = None) -> None:
        self.policy = policy or EscalationPolicy()
        self._falls: dict[str, _Fall] = {}
        self._handled_early: set[str] = set()  # acks that came before their fall

    def on_fall(
        self, event_id: str, patient_id: str, fall_time_s: float, received_s: float
    ) -> None:
        """Start tracking a fall (idempotent: a duplicate delivery changes nothing)."""
        if event_id in self._falls:
            return
        fall = _Fall(patient_id=patient_id, start_s=min(fall_time_s, received_s))
        if event_id in self._handled_early:
            fall.stopped = "acknowledged"
            self._handled_early.discard(event_id)
        self._falls[event_id] = fall
        self._forget_old()

    def on_handled(self, event_id: str, action: str) -> bool:
        """An ack or resolve from any dashboard; returns True if it stopped an escalation."""
        fall = self._falls.get(event_id)
        if fall is None:
            # The ack may overtake the fall (two QoS 1 topics are not ordered
            # against each other); remember it so the fall never escalates.
            self._handled_early.add(event_id)
            if len(self._handled_early) > _MAX_TRACKED:
                self._handled_early.pop()
            return False
        was_open = fall.stopped is None
        if fall.stopped != "resolved":
            fall.stopped = action
        return was_open

    def on_cancelled(self, patient_id: str, cancel_time_s: float) -> list[str]:
        """The wearable withdrew its fall: stop the patient's latest open fall before it.

        A ``fall_cancelled`` event does not name its fall; like the feed and
        the summary, this takes the patient's most recent one. Returns the
        event ids whose escalation stopped (zero or one).
        """
        candidates = [
            (fall.start_s, event_id)
            for event_id, fall in self._falls.items()
            if fall.patient_id == patient_id
            and fall.stopped is None
            and fall.start_s <= cancel_time_s
        ]
        if not candidates:
            return []
        _start_s, event_id = max(candidates)
        self._falls[event_id].stopped = "cancelled"
        return [event_id]

    def on_escalation_seen(self, event_id: str, level: int) -> None:
        """Another dashboard (or we) published this level: do not publish it again."""
        fall = self._falls.get(event_id)
        if fall is not None:
            fall.seen_levels.add(level)
            fall.issued_level = max(fall.issued_level, level)

    def due(self, now_s: float) -> list[Escalation]:
        """Levels due at ``now_s`` and not yet issued, oldest fall first, level 1 first."""
        result: list[Escalation] = []
        for event_id, fall in self._falls.items():
            if fall.stopped is not None:
                continue
            for level in (1, 2):
                due_s = fall.start_s + self.policy.delay_s(level)
                if level > fall.issued_level and now_s >= due_s:
                    result.append(Escalation(event_id, fall.patient_id, level, due_s))
        result.sort(key=lambda e: (e.due_s, e.level))
        return result

    def mark_issued(self, event_id: str, level: int) -> None:
        """The caller published ``level`` for this fall."""
        fall = self._falls.get(event_id)
        if fall is not None:
            fall.issued_level = max(fall.issued_level, level)

    def level(self, event_id: str) -> int:
        """Highest level issued so far for a fall (0 if none or unknown)."""
        fall = self._falls.get(event_id)
        return fall.issued_level if fall is not None else 0

    def is_open(self, event_id: str) -> bool:
        """True while the fall may still escalate."""
        fall = self._falls.get(event_id)
        return fall is not None and fall.stopped is None

    def next_due_s(self) -> float | None:
        """The earliest time at which something becomes due, or None."""
        times = [
            fall.start_s + self.policy.delay_s(level)
            for fall in self._falls.values()
            if fall.stopped is None
            for level in (1, 2)
            if level > fall.issued_level
        ]
        return min(times) if times else None

    def _forget_old(self) -> None:
        if len(self._falls) <= _MAX_TRACKED:
            return
        # Forget handled falls first; an open fall is never forgotten.
        for event_id in [k for k, f in self._falls.items() if f.stopped is not None]:
            del self._falls[event_id]
            if len(self._falls) <= _MAX_TRACKED:
                return
        _log.warning("more than %d open falls tracked", _MAX_TRACKED)
