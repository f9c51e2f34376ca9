"""Fuzzing the MQTT contract's parsers: no input escapes as anything but a counted drop.

Like tests/test_protocol.py does for BLE packets: arbitrary bytes, and valid
payloads with fields replaced by arbitrary JSON (huge and non-finite numbers,
deep nesting, wrong types, hostile strings), on every topic kind. What must
hold: ``read_message`` raises nothing but ``PayloadError``; the dashboard's
and ``watch``'s handlers raise nothing; a message that is dropped changes
nothing a user sees; and each keeps applying the valid message that follows.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts import (
    Activity,
    AlertEvent,
    EventType,
    GatewayState,
    GatewayStatus,
    Message,
    MqttSettings,
    PatientState,
    Topics,
    read_message,
    utc_from_timestamp,
)
from alerts.acks import Ack, EscalationMessage
from alerts.wire import DropReason, PayloadError
from physio.dashboard.service import DashboardConfig, DashboardService
from physio.watch import WatchModel

TOPICS = Topics("fz/posture/v1")
NOW_S = time.time()
NOW = utc_from_timestamp(NOW_S)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid() -> dict[str, tuple[str, dict[str, Any]]]:
    """One valid payload per topic kind (as a dict, so fields can be replaced)."""
    state = PatientState(
        "p-1", "gw-1", NOW, 10.0, 1.0, Activity.UPRIGHT, False, True, 80, True, 25.0
    )
    event = AlertEvent(EventType.FALL_DETECTED, "p-1", "gw-1", NOW, 70.0, 2.0, 3.0, {"g": 4.0})
    status = GatewayStatus("gw-1", GatewayState.ONLINE, NOW, {"devices": {"p-1": {"lost": 0}}})
    ack = Ack.at(event.event_id, "acknowledged", "Ann", NOW_S)
    escalation = EscalationMessage.at(event.event_id, "p-1", 1, NOW_S)
    return {
        "state": (TOPICS.state("p-1"), state.to_dict()),
        "events": (TOPICS.events("p-1"), event.to_dict()),
        "status": (TOPICS.status("gw-1"), status.to_dict()),
        "acks": (TOPICS.acks("p-1"), ack.to_dict()),
        "escalations": (TOPICS.escalations("p-1"), escalation.to_dict()),
    }


VALID = _valid()
# Hostile JSON values: huge ints, floats at the edges, deep nesting, odd strings.
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59+00:00",
            "2100-01-01T00:00:00Z",
            "p/+/#",
            "$SYS",
            "",
            "fall_detected",
            "unknown_kind",
        ]
    ),
)
JSON = st.recursive(
    LEAF,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _encode(obj: Any) -> bytes:
    # json.dumps writes 10**400 as 400 digits: exactly the hostile number.
    return json.dumps(obj).encode()


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@FUZZ
@given(kind=st.sampled_from(sorted(VALID)), payload=st.binary(max_size=512))
def test_arbitrary_bytes_are_a_payload_error_or_valid(kind: str, payload: bytes) -> None:
    topic = VALID[kind][0]
    try:
        read_message(TOPICS, topic, payload, retained=False, received_s=NOW_S)
    except PayloadError as exc:  # anything else fails the test
        assert isinstance(exc.reason, DropReason)


@FUZZ
@given(
    kind=st.sampled_from(sorted(VALID)),
    field=st.text(max_size=12) | st.sampled_from(["time", "patient_id", "type", "details"]),
    value=JSON,
    depth=st.sampled_from([0, 0, 0, 50, 5000]),
)
def test_mutated_payloads_are_a_payload_error_or_valid(
    kind: str, field: str, value: Any, depth: int
) -> None:
    topic, obj = VALID[kind]
    mutated = {**obj}
    for key in list(mutated):
        if key == field or not field:
            mutated[key] = value
    payload = _encode(mutated)
    if depth:
        payload = payload[:-1] + b', "deep": ' + _deep(depth) + b"}"
    try:
        read_message(TOPICS, topic, payload, retained=True, received_s=NOW_S)
    except PayloadError as exc:  # anything else fails the test
        assert isinstance(exc.reason, DropReason)


def _service() -> DashboardService:
    """A dashboard that has not connected (its alert record is opened by the caller)."""
    config = DashboardConfig(
        broker=MqttSettings.from_url("mqtt://127.0.0.1:1"),
        listen_port=0,
        topic_root=TOPICS.root,
    )
    return DashboardService(config, clock=lambda: NOW_S)


async def _survives(topic: str, payload: bytes) -> None:
    service = _service()
    async with service.record:  # an in-memory SQLite record, as a dashboard has
        for k in ("status", "state", "events"):
            valid_topic, obj = VALID[k]
            service.handle_message(Message(valid_topic, _encode(obj), 1, k != "events"), NOW_S)
        assert service.drops.total == 0
        watch = WatchModel(TOPICS, clock=lambda: NOW_S)
        for k in ("status", "state", "events"):
            valid_topic, obj = VALID[k]
            watch.handle(Message(valid_topic, _encode(obj), 1, k != "events"))
        before, watch_before = json.dumps(service.model.snapshot()), watch.render()
        service.handle_message(Message(topic, payload, 1, True), NOW_S)  # never raises
        watch.handle(Message(topic, payload, 1, True))
        if service.drops.total:
            assert json.dumps(service.model.snapshot()) == before
        if watch.drops.total:  # the same screen, apart from the drop counter's footer line
            assert watch.render().replace(f"\n{watch.drops.line()}\n", "") == watch_before
        assert "handler_error" not in service.drops.by_reason
        assert "handler_error" not in watch.drops.by_reason
        # Both still apply the next valid message.
        follow = AlertEvent(EventType.BATTERY_LOW, "p-1", "gw-1", NOW)
        service.handle_message(Message(TOPICS.events("p-1"), follow.to_json(), 1, False), NOW_S)
        assert service.model.alert(follow.event_id) is not None
        assert "handler_error" not in service.drops.by_reason
        assert watch.handle(Message(TOPICS.events("p-1"), follow.to_json(), 1, False))


@FUZZ
@given(
    kind=st.sampled_from(sorted(VALID)),
    field=st.sampled_from(["", "time", "patient_id", "gateway_id", "type", "details", "level"]),
    value=JSON,
    raw=st.none() | st.binary(max_size=64),
)
def test_dashboard_and_watch_survive_and_a_dropped_message_changes_nothing(
    kind: str, field: str, value: Any, raw: bytes | None
) -> None:
    topic, obj = VALID[kind]
    payload = raw if raw is not None else _encode({**obj, **({field: value} if field else {})})
    asyncio.run(_survives(topic, payload))
