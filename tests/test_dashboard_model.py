"""What the dashboard shows, from parsed messages (physio/dashboard/model.py, wire.py)."""

from __future__ import annotations

import json

import pytest

from physio.dashboard.model import DashboardModel
from physio.dashboard.summary import FallRecord
from physio.dashboard.wire import (
    AckMessage,
    EventMessage,
    TopicKind,
    TopicMap,
    WireFormatError,
    parse_event,
    parse_gateway_status,
    parse_state,
)


def fall(
    event_id: str,
    t_s: float,
    patient_id: str = "p-001",
    kind: str = "fall_detected",
    severity: str = "high",
) -> EventMessage:
    return EventMessage(event_id, kind, patient_id, "ward-3", t_s, severity, 70.0, 1.0, 3.0, {})


def test_events_are_deduplicated_and_acks_may_come_first() -> None:
    model = DashboardModel()
    assert model.apply_ack(AckMessage("f1", "acknowledged", "Ben", 5.0)) == []
    assert len(model.apply_event(fall("f1", 1.0), 2.0)) == 1
    assert model.apply_event(fall("f1", 1.0), 3.0) == []
    alert = model.alert("f1")
    assert alert is not None and alert["status"] == "acknowledged"
    assert model.apply_ack(AckMessage("f1", "acknowledged", "Ben", 5.0)) == []  # duplicate
    [(_, updated)] = model.apply_ack(AckMessage("f1", "resolved", "Ann", 9.0))
    assert updated["status"] == "resolved"
    model.apply_ack(AckMessage("f1", "acknowledged", "Cy", 10.0))
    assert model.alert("f1")["status"] == "resolved"  # type: ignore[index]


def test_info_events_annotate_the_item_they_end() -> None:
    model = DashboardModel()
    model.apply_event(fall("f1", 1.0), 1.0)
    model.apply_event(fall("s1", 2.0, kind="slouch_started", severity="low"), 2.0)
    [(_, cancelled)] = model.apply_event(
        fall("c1", 3.0, kind="fall_cancelled", severity="info"), 3.0
    )
    assert cancelled["event_id"] == "f1" and cancelled["note"].startswith("cancelled")
    model.apply_event(fall("e1", 4.0, kind="slouch_ended", severity="info"), 4.0)
    assert model.alert("s1")["note"] == "slouch ended"  # type: ignore[index]
    assert model.alert("c1") is None and len(model.snapshot()["alerts"]) == 2


def test_a_full_feed_never_drops_an_unresolved_fall() -> None:
    model = DashboardModel(max_alerts=5)
    model.apply_event(fall("old-fall", 0.0), 0.0)
    for i in range(20):
        model.apply_event(fall(f"s{i}", 10.0 + i, kind="slouch_started", severity="low"), 10.0)
    ids = [a["event_id"] for a in model.snapshot()["alerts"]]
    assert "old-fall" in ids and len(ids) == 5 and "s19" in ids


def test_older_state_does_not_replace_a_newer_one() -> None:
    model = DashboardModel(history_s=60.0)
    for t in (100.0, 130.0, 170.0):
        model.apply_state(parse_state(_state(t)), t)
    assert model.apply_state(parse_state(_state(120.0)), 171.0) == []
    [patient] = model.snapshot()["patients"]
    assert patient["time_s"] == 170.0
    assert [t for t, _ in patient["history"]] == [130.0, 170.0]  # 60 s of history kept


def test_restored_fall_keeps_its_handling() -> None:
    model = DashboardModel()
    record = FallRecord("f9", 50.0, escalation_level=1, acknowledged_by="Ann", acknowledged_s=80.0)
    [(_, alert)] = model.restore_fall("p-004", record, 100.0)
    assert (alert["status"], alert["escalation_level"], alert["acks"][0]["by"]) == (
        "acknowledged",
        1,
        "Ann",
    )
    assert model.restore_fall("p-004", record, 101.0) == []
    assert (
        model.restore_fall("p-004", FallRecord("f8", 1.0, resolved_by="x", resolved_s=2.0), 3.0)
        == []
    )


def _state(t_s: float) -> bytes:
    from physio.dashboard.wire import format_time

    return json.dumps(
        {
            "patient_id": "p-001",
            "gateway_id": "ward-3",
            "time": format_time(t_s),
            "flexion_deg": 10.0,
            "lateral_deg": 0.0,
            "activity": 1,
            "slouching": False,
            "device_connected": True,
            "battery_pct": 50,
            "calibrated": True,
            "slouch_threshold_deg": 25.0,
        }
    ).encode()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"[]",
        b'{"event_id": "a/b", "type": "fall_detected", "patient_id": "p",'
        b' "time": "2026-11-24T08:00:00.000Z"}',
        b'{"event_id": "e", "type": "fall_detected", "patient_id": "p", "time": "yesterday"}',
        b'{"event_id": "e", "type": "fall_detected", "patient_id": "p", '
        b'"time": "2026-11-24T08:00:00"}',
        b'{"event_id": "e", "type": "x", "patient_id": "p", "time": "2026-11-24T08:00:00Z",'
        b' "flexion_deg": "NaN"}',
    ],
)
def test_malformed_events_raise_a_clear_error(payload: bytes) -> None:
    with pytest.raises(WireFormatError):
        parse_event(payload)


def test_a_fall_is_always_high_severity_and_unknown_types_are_kept() -> None:
    raw = {
        "event_id": "e1",
        "type": "fall_detected",
        "patient_id": "p-1",
        "gateway_id": "g",
        "time": "2026-11-24T08:15:02.120Z",
        "severity": "low",
    }
    assert parse_event(json.dumps(raw).encode()).severity == "high"
    raw.update(type="skin_temperature_high", severity="medium")
    assert parse_event(json.dumps(raw).encode()).type == "skin_temperature_high"


def test_topics_are_classified_and_foreign_ones_ignored() -> None:
    topics = TopicMap("posture/v1")
    assert topics.classify("posture/v1/patients/p-1/state") == (TopicKind.STATE, "p-1")
    assert topics.classify("posture/v1/patients/p-1/summary/2026-11-24") == (
        TopicKind.SUMMARY_ARCHIVE,
        "p-1",
    )
    assert topics.classify("posture/v1/gateways/ward-3/status") == (
        TopicKind.GATEWAY_STATUS,
        "ward-3",
    )
    assert topics.classify("posture/v1/patients/p-1/other") is None
    assert topics.classify("posture/v1/patients/$bad/state") is None
    assert topics.classify("elsewhere/patients/p-1/state") is None
    assert parse_gateway_status(b"", "ward-3").online is False
