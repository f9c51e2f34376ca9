"""Fall escalation logic, pure and time-injected (physio/dashboard/escalation.py)."""

from __future__ import annotations

import pytest

from physio.dashboard.escalation import EscalationPolicy, Escalator


def levels(escalator: Escalator, now_s: float, *, issue: bool = True) -> list[tuple[str, int]]:
    """Due (event_id, level) pairs; marks them published like the service does."""
    due = escalator.due(now_s)
    if issue:
        for item in due:
            escalator.mark_issued(item.event_id, item.level)
    return [(item.event_id, item.level) for item in due]


def test_unacknowledged_fall_escalates_at_both_levels_once() -> None:
    escalator = Escalator(EscalationPolicy(120.0, 240.0))
    escalator.on_fall("f1", "p-001", fall_time_s=1000.0, received_s=1000.4)
    assert levels(escalator, 1119.9) == []
    assert levels(escalator, 1120.0) == [("f1", 1)]
    assert levels(escalator, 1121.0) == []
    assert escalator.next_due_s() == 1240.0
    assert levels(escalator, 1239.0) == []
    assert levels(escalator, 1240.0) == [("f1", 2)]
    assert levels(escalator, 5000.0) == []
    assert escalator.level("f1") == 2 and escalator.next_due_s() is None


def test_acknowledged_fall_never_escalates() -> None:
    escalator = Escalator()
    escalator.on_fall("f1", "p-001", 0.0, 0.0)
    assert escalator.on_handled("f1", "acknowledged") is True
    assert levels(escalator, 10_000.0) == []
    assert not escalator.is_open("f1")


def test_ack_after_level_one_stops_level_two() -> None:
    escalator = Escalator()
    escalator.on_fall("f1", "p-001", 0.0, 0.0)
    assert levels(escalator, 130.0) == [("f1", 1)]
    escalator.on_handled("f1", "resolved")
    assert levels(escalator, 300.0) == []


def test_ack_that_overtakes_its_fall_still_counts() -> None:
    escalator = Escalator()
    assert escalator.on_handled("f1", "acknowledged") is False
    escalator.on_fall("f1", "p-001", 0.0, 0.0)
    assert levels(escalator, 1000.0) == []


def test_late_delivery_escalates_at_once_and_in_order() -> None:
    escalator = Escalator()
    escalator.on_fall("f1", "p-001", fall_time_s=0.0, received_s=300.0)
    assert levels(escalator, 300.0) == [("f1", 1), ("f1", 2)]


def test_a_gateway_clock_ahead_cannot_postpone_escalation() -> None:
    escalator = Escalator()
    escalator.on_fall("f1", "p-001", fall_time_s=5000.0, received_s=0.0)
    assert levels(escalator, 120.0) == [("f1", 1)]


def test_failed_publish_is_retried() -> None:
    escalator = Escalator()
    escalator.on_fall("f1", "p-001", 0.0, 0.0)
    assert levels(escalator, 120.0, issue=False) == [("f1", 1)]
    assert levels(escalator, 121.0) == [("f1", 1)]
    assert levels(escalator, 122.0) == []


def test_level_published_by_another_dashboard_is_not_repeated() -> None:
    escalator = Escalator()
    escalator.on_fall("f1", "p-001", 0.0, 0.0)
    escalator.on_escalation_seen("f1", 1)
    assert levels(escalator, 130.0) == []
    assert levels(escalator, 240.0) == [("f1", 2)]


def test_duplicate_fall_delivery_does_not_restart_the_clock() -> None:
    escalator = Escalator()
    escalator.on_fall("f1", "p-001", 0.0, 0.0)
    escalator.on_fall("f1", "p-001", 100.0, 100.0)
    assert levels(escalator, 120.0) == [("f1", 1)]


def test_wearable_cancellation_stops_only_that_patients_latest_earlier_fall() -> None:
    escalator = Escalator()
    escalator.on_fall("f0", "p-001", 0.0, 0.0)
    escalator.on_fall("f1", "p-001", 10.0, 10.0)
    escalator.on_fall("f2", "p-002", 10.0, 10.0)
    assert escalator.on_cancelled("p-001", 20.0) == ["f1"]
    assert escalator.on_cancelled("p-003", 20.0) == []
    escalator.on_fall("f3", "p-001", 30.0, 30.0)
    assert levels(escalator, 150.0) == [("f0", 1), ("f2", 1), ("f3", 1)]


def test_several_falls_are_escalated_oldest_first() -> None:
    escalator = Escalator()
    escalator.on_fall("late", "p-002", 50.0, 50.0)
    escalator.on_fall("early", "p-001", 10.0, 10.0)
    assert levels(escalator, 200.0) == [("early", 1), ("late", 1)]


@pytest.mark.parametrize(
    ("first", "again"), [(0.0, 10.0), (-1.0, 10.0), (120.0, 120.0), (120.0, 60.0)]
)
def test_policy_refuses_nonsense(first: float, again: float) -> None:
    with pytest.raises(ValueError, match="escalate"):
        EscalationPolicy(first, again)
