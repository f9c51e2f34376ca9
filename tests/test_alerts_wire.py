"""Wire formats, topics, id validation and settings (no broker needed)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts import (
    Activity,
    AlertEvent,
    EventType,
    GatewayState,
    GatewayStatus,
    MqttSettings,
    PatientState,
    Severity,
    TopicKind,
    Topics,
    format_utc_ms,
    mask_id,
    parse_utc,
)
from common.backoff import Backoff
from common.errors import ConfigError

T0 = datetime(2026, 11, 24, 8, 15, 2, 120_456, tzinfo=UTC)

HOSTILE_IDS = [
    "",
    "a/b",
    "p+",
    "#",
    "$SYS",
    "p 1",
    "p\t1",
    "p\n1",
    "x" * 65,
    "p\x00",
    "é",
    "../p",
    "p/+/#",
]


def test_fall_event_json_matches_the_contract() -> None:
    event = AlertEvent(
        EventType.FALL_DETECTED,
        "p-001",
        "ward-3",
        T0,
        flexion_deg=78.1,
        lateral_deg=-4.0,
        device_time_s=41.02,
        details={"peak_acc_g": 5.1},
    )
    obj = json.loads(event.to_json())
    assert obj == {
        "event_id": event.event_id,
        "type": "fall_detected",
        "patient_id": "p-001",
        "gateway_id": "ward-3",
        "time": "2026-11-24T08:15:02.120Z",
        "severity": "high",
        "flexion_deg": 78.1,
        "lateral_deg": -4.0,
        "device_time_s": 41.02,
        "details": {"peak_acc_g": 5.1},
    }
    assert len(event.event_id) == 32 and int(event.event_id, 16) >= 0  # uuid4 hex
    assert AlertEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    ("event_type", "severity"),
    [
        (EventType.FALL_DETECTED, Severity.HIGH),
        (EventType.DEVICE_DISCONNECTED, Severity.MEDIUM),
        (EventType.BATTERY_LOW, Severity.MEDIUM),
        (EventType.SLOUCH_STARTED, Severity.LOW),
        (EventType.SLOUCH_ENDED, Severity.INFO),
        (EventType.FALL_CANCELLED, Severity.INFO),
        (EventType.DEVICE_CONNECTED, Severity.INFO),
    ],
)
def test_severity_follows_the_type(event_type: EventType, severity: Severity) -> None:
    assert AlertEvent(event_type, "p-1", "gw", T0).severity is severity
    assert len(EventType) == 7


def test_angles_that_do_not_apply_are_null_and_nan_never_reaches_json() -> None:
    event = AlertEvent(
        EventType.DEVICE_DISCONNECTED,
        "p-1",
        "gw",
        T0,
        flexion_deg=math.nan,
        details={"rssi_dbm": -70, "bad": math.inf},
    )
    obj = json.loads(event.to_json())
    assert obj["flexion_deg"] is None and obj["lateral_deg"] is None
    assert obj["details"] == {"rssi_dbm": -70.0}


def test_mono_time_is_an_optional_field_old_payloads_still_parse() -> None:
    stepped = T0 - timedelta(hours=1)  # the wall clock stepped back; the monotonic one did not
    event = AlertEvent(EventType.FALL_DETECTED, "p-1", "gw", stepped, mono_time=T0)
    obj = json.loads(event.to_json())
    assert obj["mono_time"] == "2026-11-24T08:15:02.120Z"
    assert AlertEvent.from_json(event.to_json()) == event
    del obj["mono_time"]  # what a gateway of the previous version sends
    assert AlertEvent.from_json(json.dumps(obj)).mono_time is None
    assert "mono_time" not in json.loads(
        AlertEvent(EventType.FALL_DETECTED, "p", "g", T0).to_json()
    )


def test_expiry_only_for_slouch_events() -> None:
    assert AlertEvent(EventType.SLOUCH_STARTED, "p", "g", T0).default_expiry_s() == 300
    assert AlertEvent(EventType.SLOUCH_ENDED, "p", "g", T0).default_expiry_s(60) == 60
    for kind in (EventType.FALL_DETECTED, EventType.FALL_CANCELLED, EventType.BATTERY_LOW):
        assert AlertEvent(kind, "p", "g", T0).default_expiry_s() is None


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    )
)
def test_time_is_iso_utc_with_milliseconds_and_z(time: datetime) -> None:
    text = format_utc_ms(time)
    assert len(text) == 24 and text.endswith("Z") and text[19] == "."
    assert timedelta(0) <= time - parse_utc(text) < timedelta(milliseconds=1)


def test_time_from_another_zone_is_converted_and_naive_is_refused() -> None:
    cet = datetime(2026, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_utc_ms(cet) == "2026-01-01T08:00:00.000Z"
    with pytest.raises(ValueError, match="naive"):
        AlertEvent(EventType.FALL_DETECTED, "p", "g", datetime(2026, 1, 1))


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_ids_are_rejected_with_the_id_named(bad: str) -> None:
    topics = Topics()
    with pytest.raises(ConfigError, match="patient id") as info:
        topics.events(bad)
    assert repr(bad)[:20] in str(info.value)
    with pytest.raises(ValueError, match="gateway id"):
        topics.status(bad)
    with pytest.raises(ValueError):
        AlertEvent(EventType.FALL_DETECTED, bad, "gw", T0)


@pytest.mark.parametrize(
    "root",
    ["", "/posture", "posture/", "a//b", "posture/+", "p/#", "$SYS/x", "a b", "x/" * 9 + "x"],
)
def test_bad_topic_roots_are_rejected(root: str) -> None:
    with pytest.raises(ConfigError, match="topic root"):
        Topics(root)


def test_topics_build_and_parse() -> None:
    topics = Topics("site.a/posture/v1")
    assert topics.events("p-001") == "site.a/posture/v1/patients/p-001/events"
    assert topics.status("ward-3") == "site.a/posture/v1/gateways/ward-3/status"
    assert topics.all_states == "site.a/posture/v1/patients/+/state"
    info = topics.parse("site.a/posture/v1/patients/p-001/state")
    assert info is not None and info.kind is TopicKind.STATE and info.id == "p-001"
    assert topics.parse("site.a/posture/v1/patients/p-001/other") is None
    assert topics.parse("posture/v1/patients/p-001/state") is None
    assert topics.parse("site.a/posture/v1/patients/a b/state") is None


def test_state_and_status_round_trip_and_reject_contract_breaks() -> None:
    state = PatientState("p-1", "gw", T0, 12.5, None, Activity.WALKING, False, True, 81, True, 25.0)
    obj = json.loads(state.to_json())
    assert set(obj) == {
        "patient_id",
        "gateway_id",
        "time",
        "flexion_deg",
        "lateral_deg",
        "activity",
        "slouching",
        "device_connected",
        "battery_pct",
        "calibrated",
        "slouch_threshold_deg",
    }
    assert PatientState.from_json(state.to_json()) == state
    with pytest.raises(ValueError, match="slouching"):
        PatientState.from_json(json.dumps({**obj, "slouching": "yes"}))
    with pytest.raises(ValueError, match="battery"):
        PatientState("p-1", "gw", T0, 1.0, 1.0, Activity.UPRIGHT, False, True, 140, True, 25.0)
    status = GatewayStatus("gw", GatewayState.ONLINE, T0, {"events_pending": 0})
    assert GatewayStatus.from_json(status.to_json()) == status
    with pytest.raises(ValueError, match="status"):
        GatewayStatus.from_json(b'{"gateway_id": "gw", "status": "maybe", "time": "x"}')


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"type": "nope"}',
        b'{"type": "fall_detected", "patient_id": "p/1"}',
    ],
)
def test_malformed_event_payloads_raise_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        AlertEvent.from_json(payload)


def test_settings_from_url_and_the_password_never_shows() -> None:
    settings = MqttSettings.from_url(
        "mqtts://nurse:s3cr%40t@broker.example:8884", ca_file="/tmp/ca.pem"
    )
    assert (settings.host, settings.port, settings.tls) == ("broker.example", 8884, True)
    assert settings.username == "nurse" and settings.password == "s3cr@t"
    assert "s3cr" not in repr(settings) and "password='***'" in repr(settings)
    assert settings.display_url == "mqtts://nurse:***@broker.example:8884"
    plain = MqttSettings.from_url("mqtt://127.0.0.1", protocol="3.1.1")
    assert (plain.port, plain.tls, plain.protocol) == (1883, False, "3.1.1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://u:hunter2@host", "scheme"),
        ("mqtt://u:hunter2@host:99999", "port"),
        ("mqtt://u:hunter2@:1883", "host"),
        ("mqtt://u:hunter2@host/topic", "path"),
        ("mqtt://u:hunter2@host:abc", "port"),
    ],
)
def test_bad_urls_give_config_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        MqttSettings.from_url(url)
    assert "hunter2" not in str(info.value)
    assert info.value.__cause__ is None or "hunter2" not in str(info.value.__cause__)


def test_unknown_override_is_named() -> None:
    with pytest.raises(ConfigError, match="protocl"):
        MqttSettings.from_url("mqtt://h", protocl="5")
    with pytest.raises(ConfigError, match="protocol"):
        MqttSettings.from_url("mqtt://h", protocol="4")


def test_backoff_is_capped_jittered_and_resets() -> None:
    draws = iter([0.0, 1.0, 0.5] + [0.99] * 20)
    backoff = Backoff(0.5, 4.0, rng=lambda: next(draws))
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays[0] == pytest.approx(0.25)  # min/2 with jitter 0
    assert delays[1] == pytest.approx(1.0)  # 1.0 nominal, full
    assert all(d <= 4.0 for d in delays) and delays[-1] > 3.9
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_mask_id_is_stable_and_hides_the_id() -> None:
    assert mask_id("p-001") == mask_id("p-001") != mask_id("p-002")
    assert "p-001" not in mask_id("p-001")
