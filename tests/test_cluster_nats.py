"""The product on a three-node NATS cluster with MQTT listeners (MQTT 3.1.1 only).

Each test starts its own cluster (tests/nats_cluster.py: free loopback
ports, own JetStream stores, ready once a retained round trip crosses it).
What the product relies on is checked where a nurse's subscriber would see
it: QoS 1 events, retained states and status, a persistent session that
survives moving to another node, the MQTT 5 -> 3.1.1 fallback with a clear
warning of what is lost, the Last Will of a killed gateway process, and a
gateway that moves to another node when its own is killed in the middle of a
fall, losing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import pytest_asyncio
from brokers import Collector, Received
from nats_cluster import NATS_SERVER, NatsCluster
from test_sigterm import GATEWAY_TOML, program
from ward import gateway_running

from alerts import Activity, AlertEvent, AlertPublisher, EventType, MqttClient, PatientState
from common.errors import BrokerError
from posture_monitor.demo import demo_config
from simulator import SimulatedWorld, builtin_scenario_path, demo_scenario

# One cluster for the module (starting one costs 8-10 s here); a test that
# kills a node gets it back before the next test (the ``cluster`` fixture).
pytestmark = [
    pytest.mark.skipif(NATS_SERVER is None, reason="nats-server not installed"),
    pytest.mark.asyncio(loop_scope="module"),
]

MakeCollector = Callable[..., Awaitable[Collector]]
GW = "ward-7"
WILL_GW = "ward-8"
EVENTS = "posture/v1/patients/+/events"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsCluster]:
    instance = NatsCluster(tmp_path_factory.mktemp("nats"))
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def cluster(shared_cluster: NatsCluster) -> AsyncIterator[NatsCluster]:
    """The module's cluster with every node up (a killed node is restarted after the test)."""
    yield shared_cluster
    for index, node in enumerate(shared_cluster.nodes):
        if not node.running:
            await shared_cluster.start_node(index)


def event_ids(messages: list[Received]) -> list[str]:
    return [json.loads(m.payload)["event_id"] for m in messages if m.topic.endswith("/events")]


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def nurse(cluster: NatsCluster, node: int, client_id: str) -> Collector:
    """A persistent-session (clean_session=False) 3.1.1 subscriber on ``node``
    (a client id of its own per test: the cluster outlives each test)."""
    return Collector(
        cluster.nodes[node],
        ["posture/v1/#"],
        client_id=client_id,
        clean_start=False,
        protocol=mqtt.MQTTv311,
    )


def fall(patient: str) -> AlertEvent:
    return AlertEvent(
        EventType.FALL_DETECTED,
        patient,
        GW,
        datetime.now(UTC),
        flexion_deg=80.0,
        lateral_deg=3.0,
        device_time_s=12.5,
        details={"peak_acc_g": 5.2},
    )


@pytest.mark.timeout(120)
async def test_events_retained_state_sessions_and_the_fallback_hold_on_nats(
    cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    station = await nurse(cluster, 2, "nurse-fallback").start()
    first, second = fall("p-001"), fall("p-002")
    try:
        # Asked for MQTT 5 (the default), given every node.
        async with AlertPublisher(
            cluster.settings(protocol="5"), gateway_id=GW, state_interval_s=0.1
        ) as publisher:
            await until(lambda: publisher.connected)
            await publisher.publish_event(first)
            publisher.update_state(
                PatientState(
                    "p-001",
                    GW,
                    datetime.now(UTC),
                    31.0,
                    2.0,
                    Activity.UPRIGHT,
                    True,
                    True,
                    80,
                    True,
                    25.0,
                )
            )
            await station.wait_for(lambda ms: first.event_id in event_ids(ms), 20.0)
            # The nurse's station goes away; a fall happens meanwhile.
            await station.stop()
            await publisher.publish_event(second)
            await until(lambda: publisher.metrics.events_pending == 0)
            await until(lambda: publisher.metrics.states_published >= 1)
        # The broker told the gateway it speaks 3.1.1; the gateway said what that costs.
        text = caplog.text
        assert "refuses protocol 5" in text
        assert "no message expiry" in text and "slouch events" in text and "Last Will" in text
        # Back on another node with the same client id: the session kept the fall.
        back = await nurse(cluster, 1, "nurse-fallback").start()
        try:
            await back.wait_for(lambda ms: second.event_id in event_ids(ms), 20.0)
            # ...and a late subscriber on a third node gets the retained state and status.
            late = await Collector(
                cluster.nodes[0], ["posture/v1/#"], protocol=mqtt.MQTTv311
            ).start()
            try:
                retained = await late.wait_for(
                    lambda ms: (
                        {m.topic for m in ms if m.retain}
                        >= {"posture/v1/patients/p-001/state", f"posture/v1/gateways/{GW}/status"}
                    ),
                    20.0,
                )
            finally:
                await late.stop()
        finally:
            await back.stop()
        events = [m for m in station.snapshot() + back.snapshot() if m.topic.endswith("/events")]
        assert all(m.qos == 1 for m in events)
        by_topic = {m.topic: json.loads(m.payload) for m in retained if m.retain}
        assert by_topic["posture/v1/patients/p-001/state"]["flexion_deg"] == 31.0
        assert by_topic[f"posture/v1/gateways/{GW}/status"]["status"] == "offline"
    finally:
        await station.stop()


@pytest.mark.timeout(150)
async def test_killing_the_gateways_node_mid_fall_loses_nothing(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    scenario = demo_scenario(3)
    config = demo_config(scenario)
    station = await nurse(cluster, 2, "nurse-failover").start()  # the station, on node 3
    queued: list[AlertEvent] = []
    try:
        async with (
            SimulatedWorld(scenario, seed=7, speed=10.0) as world,
            AlertPublisher(
                cluster.settings(),
                gateway_id=config.gateway_id,
                outbox_path=tmp_path / "outbox.sqlite",
            ) as publisher,
        ):
            original = publisher.publish_event

            async def recording(event: AlertEvent) -> None:
                queued.append(event)
                await original(event)

            publisher.publish_event = recording  # type: ignore[method-assign]
            async with gateway_running(config, publisher, world):
                await until(lambda: publisher.connected)
                assert publisher.broker_address == cluster.nodes[0].address
                # The faller falls at 35 s (impact ~35.75 s): kill the
                # gateway's node just before, so the fall is raised while
                # the gateway is moving and the cluster re-electing.
                await world.sleep_until(33.0)
                await cluster.kill(0)
                await world.sleep_until(60.0)
                # The gateway is on another node (NATS may drop a connection
                # once more while it re-elects, so it may have moved twice).
                await until(lambda: publisher.connected, 60.0)
                assert publisher.broker_address != cluster.nodes[0].address
            await until(lambda: publisher.metrics.events_pending == 0, 60.0)
            faller = scenario.patients[1]
            truth = world.truth(faller.wearable.address)
        sent = {e.event_id for e in queued}
        await station.wait_for(lambda ms: sent <= set(event_ids(ms)), 60.0)
        received = event_ids(station.snapshot())
        counts = Counter(received)
        # Every queued event arrived; after dedupe by event_id each counts once.
        assert set(received) == sent
        assert len(set(received)) == len(queued)
        duplicates = sum(n - 1 for n in counts.values())
        falls = [e for e in queued if e.type == EventType.FALL_DETECTED]
        assert [e.patient_id for e in falls] == [faller.id]
        (impact_s,) = truth.fall_impact_s
        impact_device_s = float(np.interp(impact_s, truth.t_s, truth.device_t_s))
        assert falls[0].device_time_s is not None
        assert 0.0 <= falls[0].device_time_s - impact_device_s <= 5.0
        print(f"events {len(sent)}, received {len(received)}, duplicates {duplicates}")
    finally:
        await station.stop()


@pytest.mark.timeout(120)
async def test_a_killed_gateway_process_gets_its_last_will_on_nats(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    urls = ", ".join(f'"{url}"' for url in cluster.urls)
    config.write_text(
        GATEWAY_TOML.format(
            gw=WILL_GW, outbox=tmp_path / "outbox.sqlite", url=cluster.urls[0]
        ).replace(f'url = "{cluster.urls[0]}"', f'urls = [{urls}]\nprotocol = "3.1.1"')
    )
    station = await nurse(cluster, 2, "nurse-will").start()
    status_topic = f"posture/v1/gateways/{WILL_GW}/status"

    def statuses() -> list[dict[str, object]]:
        return [json.loads(m.payload) for m in station.on_topic(status_topic) if m.payload]

    try:
        async with program(
            "run", "--config", str(config), "--simulate", str(builtin_scenario_path("demo"))
        ) as gateway:
            await station.wait_for(lambda _ms: any(s["status"] == "online" for s in statuses()), 60)
            gateway.send_signal(signal.SIGKILL)
            await gateway.wait()
        # The broker (a node that stayed up) published the Will: no metrics.
        await station.wait_for(lambda _ms: statuses()[-1]["status"] == "offline", 30)
        assert statuses()[-1]["metrics"] == {}
    finally:
        await station.stop()


@pytest.mark.timeout(120)
async def test_a_subscriber_whose_node_dies_gets_its_subscription_back(
    cluster: NatsCluster,
) -> None:
    # Moved to another node with no session, the subscriber must subscribe
    # again while JetStream re-elects, when NATS refuses new QoS 1
    # subscriptions for a few seconds: a single refused attempt would leave
    # it deaf to every fall until its next reconnection.
    async with MqttClient(cluster.settings(), client_id="nurse-tablet") as tablet:
        await tablet.subscribe(EVENTS, qos=1)
        assert tablet.address == cluster.nodes[0].address
        await cluster.kill(0)
        await until(lambda: tablet.connected and tablet.connect_count == 2, 30.0)
        async with MqttClient(cluster.nodes[2].settings()) as gateway:

            async def first_event() -> bytes:
                async for message in tablet.messages():
                    return message.payload
                return b""

            waiting = asyncio.create_task(first_event())
            async with asyncio.timeout(60):
                while not waiting.done():
                    # NATS may drop this connection too while it re-elects.
                    with contextlib.suppress(BrokerError):
                        await gateway.publish(
                            "posture/v1/patients/p-009/events", b'{"fell": true}', qos=1
                        )
                    await asyncio.wait([waiting], timeout=1.0)
            assert waiting.result() == b'{"fell": true}'
