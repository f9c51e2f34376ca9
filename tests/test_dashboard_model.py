"""What the dashboard shows, from contract objects (physio/dashboard/model.py)."""

from __future__ import annotations

import json

import pytest

from alerts.acks import Ack
from alerts.events import AlertEvent, EventType, Severity
from alerts.state import PatientState
from alerts.summary import FallRecord, format_time
from alerts.topics import TopicInfo, TopicKind, Topics
from alerts.wire import DropReason, PayloadError, utc_from_timestamp
from physio.dashboard.model import DashboardModel

T0_S = 1_790_000_000.0  # 2026-09-21, the contract refuses times before 2000


def fall(
    event_id: str,
    t_s: float,
    patient_id: str = "p-001",
    kind: str = "fall_detected",
) -> AlertEvent:
    return AlertEvent(
        EventType(kind),
        patient_id,
        "ward-3",
        utc_from_timestamp(T0_S + t_s),
        70.0,
        1.0,
        3.0,
        event_id=event_id,
    )


def ack(event_id: str, action: str, by: str, t_s: float) -> Ack:
    return Ack.at(event_id, action, by, T0_S + t_s)


def apply(model: DashboardModel, event: AlertEvent, received_s: float) -> list:
    return model.apply_event(event, event.time_s, T0_S + received_s)


def test_events_are_deduplicated_and_acks_may_come_first() -> None:
    model = DashboardModel()
    assert model.apply_ack(ack("f1", "acknowledged", "Ben", 5.0)) == []
    assert len(apply(model, fall("f1", 1.0), 2.0)) == 1
    assert apply(model, fall("f1", 1.0), 3.0) == []
    alert = model.alert("f1")
    assert alert is not None and alert["status"] == "acknowledged"
    assert model.apply_ack(ack("f1", "acknowledged", "Ben", 5.0)) == []  # duplicate
    [(_, updated)] = model.apply_ack(ack("f1", "resolved", "Ann", 9.0))
    assert updated["status"] == "resolved"
    model.apply_ack(ack("f1", "acknowledged", "Cy", 10.0))
    assert model.alert("f1")["status"] == "resolved"  # type: ignore[index]


def test_info_events_annotate_the_item_they_end() -> None:
    model = DashboardModel()
    apply(model, fall("f1", 1.0), 1.0)
    apply(model, fall("s1", 2.0, kind="slouch_started"), 2.0)
    [(_, cancelled)] = apply(model, fall("c1", 3.0, kind="fall_cancelled"), 3.0)
    assert cancelled["event_id"] == "f1" and cancelled["note"].startswith("cancelled")
    apply(model, fall("e1", 4.0, kind="slouch_ended"), 4.0)
    assert model.alert("s1")["note"] == "slouch ended"  # type: ignore[index]
    assert model.alert("c1") is None and len(model.snapshot()["alerts"]) == 2


def test_a_full_feed_never_drops_an_unresolved_fall() -> None:
    model = DashboardModel(max_alerts=5)
    apply(model, fall("old-fall", 0.0), 0.0)
    for i in range(20):
        apply(model, fall(f"s{i}", 10.0 + i, kind="slouch_started"), 10.0)
    ids = [a["event_id"] for a in model.snapshot()["alerts"]]
    assert "old-fall" in ids and len(ids) == 5 and "s19" in ids


def test_older_state_does_not_replace_a_newer_one() -> None:
    model = DashboardModel(history_s=60.0)
    for t in (100.0, 130.0, 170.0):
        model.apply_state(_state(t), T0_S + t, T0_S + t)
    assert model.apply_state(_state(120.0), T0_S + 120.0, T0_S + 171.0) == []
    [patient] = model.snapshot()["patients"]
    assert patient["time_s"] == T0_S + 170.0
    assert [t - T0_S for t, _ in patient["history"]] == [130.0, 170.0]  # 60 s kept


def test_restored_fall_keeps_its_handling() -> None:
    model = DashboardModel()
    record = FallRecord(
        "f9", T0_S + 50.0, escalation_level=1, acknowledged_by="Ann", acknowledged_s=T0_S + 80.0
    )
    [(_, alert)] = model.restore_fall("p-004", record, T0_S + 100.0)
    assert (alert["status"], alert["escalation_level"], alert["acks"][0]["by"]) == (
        "acknowledged",
        1,
        "Ann",
    )
    assert alert["gateway_id"] == ""  # the summary does not say
    assert model.restore_fall("p-004", record, T0_S + 101.0) == []
    resolved = FallRecord("f8", T0_S + 1.0, resolved_by="x", resolved_s=T0_S + 2.0)
    assert model.restore_fall("p-004", resolved, T0_S + 3.0) == []


def _state(t_s: float) -> PatientState:
    return PatientState.from_json(
        json.dumps(
            {
                "patient_id": "p-001",
                "gateway_id": "ward-3",
                "time": format_time(T0_S + t_s),
                "flexion_deg": 10.0,
                "lateral_deg": 0.0,
                "activity": "upright",
                "slouching": False,
                "device_connected": True,
                "battery_pct": 50,
                "calibrated": True,
                "slouch_threshold_deg": 25.0,
            }
        ).encode()
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", DropReason.NOT_JSON),
        (b"[]", DropReason.NOT_JSON),
        (
            b'{"event_id": "a/b", "type": "fall_detected", "patient_id": "p",'
            b' "gateway_id": "g", "time": "2026-11-24T08:00:00.000Z"}',
            DropReason.BAD_ID,
        ),
        (
            b'{"event_id": "e", "type": "fall_detected", "patient_id": "p", "gateway_id": "g",'
            b' "time": "yesterday"}',
            DropReason.BAD_TIME,
        ),
        (
            b'{"event_id": "e", "type": "fall_detected", "patient_id": "p", "gateway_id": "g",'
            b' "time": "2026-11-24T08:00:00"}',
            DropReason.BAD_TIME,
        ),
        (
            b'{"event_id": "e", "type": "fall_detected", "patient_id": "p", "gateway_id": "g",'
            b' "time": "2026-11-24T08:00:00Z", "flexion_deg": NaN}',
            DropReason.BAD_NUMBER,
        ),
        (
            b'{"event_id": "e", "type": "skin_temperature_high", "patient_id": "p",'
            b' "gateway_id": "g", "time": "2026-11-24T08:00:00Z"}',
            DropReason.UNKNOWN_TYPE,
        ),
    ],
)
def test_malformed_events_raise_a_clear_error(payload: bytes, reason: DropReason) -> None:
    with pytest.raises(PayloadError) as caught:
        AlertEvent.from_json(payload)
    assert caught.value.reason is reason


def test_a_fall_is_always_high_severity_whatever_the_payload_says() -> None:
    raw = {
        "event_id": "e1",
        "type": "fall_detected",
        "patient_id": "p-1",
        "gateway_id": "g",
        "time": "2026-11-24T08:15:02.120Z",
        "severity": "low",
    }
    assert AlertEvent.from_json(json.dumps(raw).encode()).severity is Severity.HIGH


def test_topics_are_classified_and_foreign_ones_ignored() -> None:
    topics = Topics("posture/v1")
    assert topics.parse("posture/v1/patients/p-1/state") == TopicInfo(TopicKind.STATE, "p-1")
    assert topics.parse("posture/v1/patients/p-1/summary/2026-11-24") == TopicInfo(
        TopicKind.SUMMARY_ARCHIVE, "p-1", "2026-11-24"
    )
    assert topics.parse("posture/v1/gateways/ward-3/status") == TopicInfo(
        TopicKind.STATUS, "ward-3"
    )
    assert topics.parse("posture/v1/patients/p-1/escalations") == TopicInfo(
        TopicKind.ESCALATIONS, "p-1"
    )
    assert topics.parse("posture/v1/patients/p-1/other") is None
    assert topics.parse("posture/v1/patients/p-1/summary/yesterday") is None
    assert topics.parse("posture/v1/patients/$bad/state") is None
    assert topics.parse("elsewhere/patients/p-1/state") is None
