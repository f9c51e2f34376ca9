"""AlertPublisher end to end against a private mosquitto (and amqtt).

What a physiotherapist's subscriber sees: events on the contract topics,
retained state and status, the Last Will after a crash, and no event lost
through a broker restart or a gateway kill -9.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from brokers import HANG_S, Collector, EmbeddedTestBroker, MosquittoBroker, Received

from alerts import Activity, AlertEvent, AlertPublisher, EventType, Outbox, PatientState
from common.errors import ConfigError

MakeCollector = Callable[..., Awaitable[Collector]]
REPO = Path(__file__).resolve().parent.parent
GW = "ward-3"


def fall(patient: str = "p-001") -> AlertEvent:
    return AlertEvent(
        EventType.FALL_DETECTED,
        patient,
        GW,
        datetime.now(UTC),
        flexion_deg=78.1,
        lateral_deg=-4.0,
        device_time_s=41.02,
        details={"peak_acc_g": 5.1},
    )


def slouch(patient: str = "p-001") -> AlertEvent:
    return AlertEvent(
        EventType.SLOUCH_STARTED, patient, GW, datetime.now(UTC), flexion_deg=31.0, lateral_deg=2.0
    )


def state(patient: str = "p-001", flexion_deg: float = 12.0) -> PatientState:
    return PatientState(
        patient,
        GW,
        datetime.now(UTC),
        flexion_deg,
        -1.5,
        Activity.UPRIGHT,
        False,
        True,
        87,
        True,
        25.0,
    )


def event_ids(messages: list[Received]) -> list[str]:
    return [json.loads(m.payload)["event_id"] for m in messages if m.topic.endswith("/events")]


async def until(condition: Callable[[], bool], timeout_s: float = HANG_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@contextmanager
def python(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run a Python snippet in a child process (killed with -9 at the end)."""
    with subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ) as p:
        try:
            yield p
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait(10)


@asynccontextmanager
async def publisher(
    broker: MosquittoBroker | EmbeddedTestBroker, **kwargs: object
) -> AsyncIterator[AlertPublisher]:
    options: dict[str, object] = {
        "gateway_id": GW,
        "state_interval_s": 0.1,
        "shutdown_grace_s": 2.0,
    }
    options.update(kwargs)
    async with AlertPublisher(broker.settings(), **options) as pub:  # type: ignore[arg-type]
        yield pub


async def test_events_state_and_status_follow_the_contract(
    broker: MosquittoBroker, collector: MakeCollector
) -> None:
    if not isinstance(broker, MosquittoBroker):
        pytest.skip("message expiry needs MQTT 5")
    live = await collector(broker, ["posture/v1/#"])
    the_fall, the_slouch = fall(), slouch()
    async with publisher(broker) as pub:
        await pub.publish_event(the_fall)
        await pub.publish_event(the_slouch)
        pub.update_state(state(flexion_deg=10.0))
        pub.update_state(state(flexion_deg=14.0))  # only the latest is published
        pub.set_device_metrics("p-001", {"packets_dropped": 3, "malformed": 1})
        await live.wait_for(
            lambda ms: len(event_ids(ms)) == 2 and any(m.topic.endswith("/state") for m in ms)
        )
        await until(lambda: pub.metrics.events_pending == 0)
        events = live.on_topic("posture/v1/patients/p-001/events")
        assert [json.loads(m.payload) for m in events] == [the_fall.to_dict(), the_slouch.to_dict()]
        assert all(m.qos == 1 and not m.retain for m in events)
        assert "MessageExpiryInterval" not in events[0].properties  # falls never expire
        assert 295 <= events[1].properties["MessageExpiryInterval"] <= 300
        assert pub.metrics.events_published == 2 and pub.metrics.events_pending == 0
        assert pub.metrics.publish_latency_last_ms is not None
    # A subscriber arriving later gets the retained latest state and status, and
    # the fall nobody answered (alerts.open_alerts).
    late = await collector(broker, ["posture/v1/#"])
    retained = await late.wait_for(lambda ms: len(ms) >= 3)
    by_topic = {m.topic: m for m in retained}
    assert set(by_topic) == {
        "posture/v1/patients/p-001/state",
        "posture/v1/gateways/ward-3/status",
        "posture/v1/patients/p-001/alerts",
    }
    still_open = json.loads(by_topic["posture/v1/patients/p-001/alerts"].payload)
    assert still_open["open"] == [the_fall.to_dict()]
    assert all(m.retain for m in retained)
    assert json.loads(by_topic["posture/v1/patients/p-001/state"].payload)["flexion_deg"] == 14.0
    status = json.loads(by_topic["posture/v1/gateways/ward-3/status"].payload)
    assert status["status"] == "offline"  # the clean exit said so
    online = [json.loads(m.payload) for m in live.on_topic("posture/v1/gateways/+/status")]
    assert online[0]["status"] == "online"
    assert status["metrics"]["devices"] == {"p-001": {"packets_dropped": 3, "malformed": 1}}
    assert status["metrics"]["events_published"] == 2


_PUBLISH_THEN_HANG = """
import asyncio, sys
from alerts import AlertPublisher, MqttSettings
async def main():
    settings = MqttSettings.from_url(sys.argv[1], reconnect_min_s=0.1)
    async with AlertPublisher(settings, gateway_id="ward-3", will_delay_s=int(sys.argv[2])) as p:
        while not p.connected:
            await asyncio.sleep(0.01)
        print("connected", flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_last_will_marks_the_gateway_offline_only_after_the_will_delay(
    broker: MosquittoBroker, collector: MakeCollector
) -> None:
    if not isinstance(broker, MosquittoBroker):
        pytest.skip("will delay needs MQTT 5")
    status_topic = "posture/v1/gateways/ward-3/status"
    live = await collector(broker, [status_topic])

    def statuses(ms: list[Received]) -> list[str]:
        return [json.loads(m.payload)["status"] for m in ms]

    # Killed, and back within the will delay (60 s: a restart on a loaded
    # machine is far quicker): the gateway never flaps to offline. Had the will
    # gone out at once, "offline" would come before the second "online".
    with python(_PUBLISH_THEN_HANG, broker.url, "60") as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "connected"
        await live.wait_for(lambda ms: statuses(ms) == ["online"])
        child.send_signal(signal.SIGKILL)
    with python(_PUBLISH_THEN_HANG, broker.url, "1") as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "connected"
        await live.wait_for(lambda ms: len(statuses(ms)) >= 2)
        assert statuses(live.snapshot()) == ["online", "online"]
        child.send_signal(signal.SIGKILL)  # not back this time: offline after the delay
        await live.wait_for(lambda ms: len(statuses(ms)) >= 3, timeout_s=30.0)
        assert statuses(live.snapshot()) == ["online", "online", "offline"]
    late = await collector(broker, [status_topic])
    retained = await late.wait_for(lambda ms: len(ms) == 1)
    assert retained[0].retain and statuses(retained) == ["offline"]


async def test_no_event_is_lost_when_the_broker_restarts_mid_stream(
    persistent_broker: MosquittoBroker, collector: MakeCollector, tmp_path: Path
) -> None:
    broker = persistent_broker
    physio = await collector(
        broker,
        ["posture/v1/patients/+/events"],
        client_id="physio-1",
        clean_start=False,
        session_expiry_s=300,
    )
    sent: list[AlertEvent] = []
    async with publisher(broker, outbox_path=tmp_path / "outbox.sqlite") as pub:
        for i in range(10):
            sent.append(fall("p-1") if i == 5 else slouch("p-1"))
            await pub.publish_event(sent[-1])
        await broker.stop()  # some of those may be in flight right now
        backlog = [slouch("p-2") for _ in range(8)] + [fall("p-2")]
        for ev in backlog:
            sent.append(ev)
            await pub.publish_event(ev)  # the broker is down: queued on disk
        assert pub.metrics.events_pending >= len(backlog)
        await broker.start()
        for _ in range(10):
            sent.append(slouch("p-3"))
            await pub.publish_event(sent[-1])
        await physio.wait_for(
            lambda ms: set(event_ids(ms)) >= {e.event_id for e in sent}, timeout_s=10.0
        )
        assert pub.metrics.reconnects == 1
        await until(lambda: pub.metrics.events_pending == 0)
    received = event_ids(physio.snapshot())
    assert set(received) == {e.event_id for e in sent}  # nothing lost, nothing unknown
    # QoS 1 is at-least-once: a duplicate is possible only for the events in
    # flight when the broker stopped; consumers de-duplicate by event_id.
    assert len(received) - len(set(received)) <= 10
    # The backlog went out fall first.
    order = {event_id: received.index(event_id) for event_id in set(received)}
    assert order[backlog[-1].event_id] < min(order[e.event_id] for e in backlog[:-1])


_ENQUEUE_WHILE_BROKER_DOWN = """
import asyncio, sys
from datetime import UTC, datetime
from alerts import AlertEvent, AlertPublisher, EventType, MqttSettings
async def main():
    settings = MqttSettings.from_url(sys.argv[1], connect_timeout_s=1.0)
    async with AlertPublisher(settings, gateway_id="ward-3", outbox_path=sys.argv[2]) as pub:
        ids = []
        for kind in ("slouch_started", "fall_detected", "device_disconnected"):
            event = AlertEvent(EventType(kind), "p-9", "ward-3", datetime.now(UTC))
            await pub.publish_event(event)
            ids.append(event.event_id)
        print(" ".join(ids), flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_events_queued_before_a_kill_9_are_sent_by_the_next_run(
    broker: MosquittoBroker, collector: MakeCollector, tmp_path: Path
) -> None:
    outbox_path = tmp_path / "outbox.sqlite"
    await broker.stop()
    with python(_ENQUEUE_WHILE_BROKER_DOWN, broker.url, str(outbox_path)) as child:
        assert child.stdout is not None
        ids = child.stdout.readline().split()
        assert len(ids) == 3
    # The child is gone (kill -9), its events are on disk only.
    await broker.start()
    physio = await collector(
        broker,
        ["posture/v1/patients/+/events"],
        protocol=mqtt.MQTTv5 if broker.tls is None else mqtt.MQTTv311,
    )
    async with publisher(broker, outbox_path=outbox_path) as pub:
        messages = await physio.wait_for(lambda ms: len(event_ids(ms)) >= 3)
        await until(lambda: pub.metrics.events_pending == 0)  # PUBACKs processed
        assert pub.metrics.events_published == 3
    assert event_ids(messages) == [ids[1], ids[0], ids[2]]  # same ids, fall first
    assert json.loads(messages[0].payload)["type"] == "fall_detected"


async def test_expired_slouch_is_dropped_falls_are_not_and_publish_never_blocks(
    broker: MosquittoBroker, collector: MakeCollector
) -> None:
    now = [time.time()]
    await broker.stop()
    async with publisher(broker, clock=lambda: now[0], slouch_expiry_s=60) as pub:
        old_slouch, old_fall = slouch(), fall()
        # The broker is down (and stays down until after these return): publishing
        # does not wait for it, the events wait in the outbox.
        await pub.publish_event(old_slouch)
        await pub.publish_event(old_fall)
        assert pub.metrics.events_pending == 2
        now[0] += 61.0  # the slouch reminder is stale now
        await broker.start()
        physio = await collector(broker, ["posture/v1/patients/+/events"])
        await physio.wait_for(lambda ms: len(event_ids(ms)) >= 1)
        await until(lambda: pub.metrics.events_pending == 0)
        # A marker sent after them arrives after anything they sent (one
        # publisher, one subscriber, QoS 1: in order); falls never expire.
        marker = fall("p-marker")
        await pub.publish_event(marker)
        await physio.wait_for(lambda ms: marker.event_id in event_ids(ms))
        assert event_ids(physio.snapshot()) == [old_fall.event_id, marker.event_id]
        assert pub.metrics.events_expired == 1


async def test_exit_while_disconnected_keeps_pending_events_for_next_run(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    outbox_path = tmp_path / "outbox.sqlite"
    await broker.stop()
    the_fall = fall()
    # Grace, then gone; never stuck waiting for the broker, which stays down
    # (the guard only catches a hang: a loaded machine may take long).
    async with (
        asyncio.timeout(30.0),
        publisher(broker, outbox_path=outbox_path, shutdown_grace_s=0.3) as pub,
    ):
        await pub.publish_event(the_fall)
    with Outbox(outbox_path) as outbox:
        assert outbox.pending_ids() == [the_fall.event_id]
    with pytest.raises(RuntimeError, match="closed"):
        await pub.publish_event(fall())


async def test_hostile_ids_and_foreign_events_are_rejected(broker: MosquittoBroker) -> None:
    for bad in ("a/b", "+", "#", "$SYS", "ward 3", ""):
        with pytest.raises(ConfigError, match="gateway id"):
            AlertPublisher(broker.settings(), gateway_id=bad)
    with pytest.raises(ConfigError, match="topic root"):
        AlertPublisher(broker.settings(), gateway_id=GW, topic_root="posture/#")
    async with publisher(broker) as pub:
        with pytest.raises(ValueError, match="patient id"):
            pub.set_device_metrics("p/1", {"packets_dropped": 1})
        with pytest.raises(ValueError, match="finite"):
            pub.set_device_metrics("p-1", {"rssi": float("nan")})
        other = AlertEvent(EventType.FALL_DETECTED, "p-1", "ward-4", datetime.now(UTC))
        with pytest.raises(ValueError, match="ward-4"):
            await pub.publish_event(other)


async def test_publisher_works_on_the_embedded_amqtt_broker(
    embedded_broker: EmbeddedTestBroker, collector: MakeCollector
) -> None:
    physio = await collector(embedded_broker, ["posture/v1/#"], protocol=mqtt.MQTTv311)
    async with publisher(embedded_broker) as pub:
        the_fall = fall()
        await pub.publish_event(the_fall)
        pub.update_state(state())
        messages = await physio.wait_for(
            lambda ms: (
                the_fall.event_id in event_ids(ms) and any(m.topic.endswith("/state") for m in ms)
            )
        )
        assert pub._client is not None and pub._client.protocol == "3.1.1"
    status = [json.loads(m.payload)["status"] for m in messages if m.topic.endswith("/status")]
    assert status[0] == "online"
