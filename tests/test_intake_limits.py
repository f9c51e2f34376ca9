"""Bounded memory per source and rate-limited drop reporting (alerts/intake.py).

Made-up patient ids from one gateway fill at most its share of the
dashboard (500 by default) and never push out another gateway's patients;
what is shed is counted. Drop counting itself is bounded (sources beyond
200 are "other") and logs at most one line per reason per interval.
"""

from __future__ import annotations

import logging
import time

import pytest

from alerts import (
    Activity,
    AlertEvent,
    DropCounter,
    DropReason,
    EventType,
    Message,
    MqttSettings,
    PatientCap,
    PatientState,
    TopicInfo,
    TopicKind,
    Topics,
    utc_from_timestamp,
)
from physio.dashboard.service import DashboardConfig, DashboardService
from physio.watch import WatchModel

TOPICS = Topics()
NOW_S = time.time()


def _state(patient_id: str, gateway_id: str) -> Message:
    state = PatientState(
        patient_id,
        gateway_id,
        utc_from_timestamp(NOW_S),
        20.0,
        0.0,
        Activity.UPRIGHT,
        False,
        True,
        70,
        True,
        25.0,
    )
    return Message(TOPICS.state(patient_id), state.to_json(), 0, False)


async def test_made_up_patients_of_one_gateway_fill_only_its_share() -> None:
    config = DashboardConfig(
        broker=MqttSettings.from_url("mqtt://127.0.0.1:1"),
        listen_port=0,
        max_patients=60,
        max_patients_per_gateway=40,
    )
    service = DashboardService(config, clock=lambda: NOW_S)
    async with service.record:  # not connected: messages are handed in directly
        _flood(service)


def _flood(service: DashboardService) -> None:
    service.handle_message(_state("real-1", "ward-3"), NOW_S)
    for i in range(1000):
        service.handle_message(_state(f"fake-{i}", "evil-gw"), NOW_S)
    service.handle_message(_state("real-2", "ward-3"), NOW_S)
    tiles = [p["patient_id"] for p in service.model.snapshot()["patients"]]
    assert len(tiles) == 42 and "real-1" in tiles and "real-2" in tiles
    assert service.drops.by_reason == {"over_capacity": 960}
    assert len(service.book.patients()) == 42
    # An admitted patient (even a made-up one, within the cap) still raises its fall.
    fall = AlertEvent(EventType.FALL_DETECTED, "fake-3", "evil-gw", utc_from_timestamp(NOW_S))
    service.handle_message(Message(TOPICS.events("fake-3"), fall.to_json(), 1, False), NOW_S)
    assert service.model.alert(fall.event_id) is not None
    assert service.drops.by_reason == {"over_capacity": 960}
    # A fall of a patient beyond its gateway's cap is still shown: never shed for memory.
    late = AlertEvent(EventType.FALL_DETECTED, "new-1", "evil-gw", utc_from_timestamp(NOW_S))
    service.handle_message(Message(TOPICS.events("new-1"), late.to_json(), 1, False), NOW_S)
    assert service.model.alert(late.event_id) is not None
    assert service.drops.by_reason == {"over_capacity": 960}


def test_watch_caps_patients_too() -> None:
    watch = WatchModel(TOPICS, clock=lambda: NOW_S)
    for i in range(700):
        watch.handle(_state(f"fake-{i}", "evil-gw"))
    assert len(watch.states) == 500
    assert watch.drops.by_reason == {"over_capacity": 200}


def test_patient_cap_counts_per_gateway_and_in_total() -> None:
    cap = PatientCap(max_patients=3, max_per_gateway=2)
    assert cap.admit("a", "g1") and cap.admit("b", "g1") and not cap.admit("c", "g1")
    assert cap.admit("c", "g2") and not cap.admit("d", "g3")  # the total is reached
    assert cap.admit("a", "g9") and len(cap) == 3  # known stays known
    # A fall is never shed for memory: admitted beyond both caps, and counted.
    assert not cap.admit("e", "g3") and cap.admit("e", "g3", fall=True)
    assert cap.knows("e") and cap.over_cap_for_falls == 1
    with pytest.raises(ValueError, match="max_patients"):
        PatientCap(0, 1)


def test_drop_counter_bounds_sources_and_logs_at_a_limited_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    counter = DropCounter(
        logging.getLogger("t.drops"), max_sources=3, log_interval_s=10.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, "t.drops"):
        for i in range(1000):
            counter.drop(DropReason.TOO_LARGE, TopicInfo(TopicKind.STATE, f"p-{i}"), "big")
        now[0] = 11.0
        counter.drop(DropReason.TOO_LARGE, None, "big")
    assert counter.total == 1001 and counter.by_reason == {"too_large": 1001}
    assert len(counter.by_source) == 4 and counter.by_source["other"] == 998
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "dropped 1 message(s)",
        "dropped 1000 message(s)",
    ]
    assert "p-5" not in caplog.text  # ids are pseudonymised in logs
    assert counter.line() == "1001 bad message(s) dropped (too_large 1001)"
