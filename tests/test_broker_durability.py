"""The documented Mosquitto set-up survives ``kill -9`` with nothing lost.

A real Mosquitto runs with deploy/mosquitto/conf.d (the durability settings
the deployment guide installs, used verbatim) plus a loopback listener. A
physiotherapist's persistent subscriber is offline while a gateway publishes
36 events and every patient's retained state; the broker is killed with -9
and restarted; the subscriber comes back and gets all 36, and a new client
gets every retained state. (With ``persistence true`` alone, the same run lost
36 of 36 events and every retained message: issue 14, finding 8.)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from brokers import MOSQUITTO, Collector, MosquittoBroker, Received

from alerts import Activity, AlertEvent, AlertPublisher, EventType, PatientState, Topics

MakeCollector = Callable[..., Awaitable[Collector]]
CONF_D = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "conf.d"
TOPICS = Topics()
GW = "ward-1"
PATIENTS = [f"p-{i:03d}" for i in range(1, 7)]

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")


class DeployedBroker(MosquittoBroker):
    """A private Mosquitto with the deployment's durability settings."""

    def _config(self) -> str:
        return super()._config() + f"include_dir {CONF_D}\n"


def events(messages: list[Received]) -> set[str]:
    return {json.loads(m.payload)["event_id"] for m in messages if m.topic.endswith("/events")}


async def test_kill_9_with_a_subscriber_offline_loses_no_event_and_no_retained_state(
    tmp_path: Path, collector: MakeCollector
) -> None:
    assert sorted(p.name for p in CONF_D.glob("*.conf")) == ["posture-durability.conf"]
    broker = DeployedBroker(tmp_path / "mosquitto", persistence=True)
    await broker.start()
    try:
        physio = await collector(
            broker,
            [TOPICS.all_events],
            client_id="physio-1",
            clean_start=False,
            session_expiry_s=3600,
        )
        await physio.stop()  # offline: the broker queues for this session
        sent: set[str] = set()
        async with AlertPublisher(
            broker.settings(), gateway_id=GW, state_interval_s=0.05, shutdown_grace_s=5.0
        ) as pub:
            now = datetime.now(UTC)
            for index in range(36):
                kind = EventType.FALL_DETECTED if index % 3 == 0 else EventType.SLOUCH_STARTED
                event = AlertEvent(kind, PATIENTS[index % 6], GW, now, flexion_deg=35.0)
                await pub.publish_event(event)
                sent.add(event.event_id)
            for patient in PATIENTS:
                pub.update_state(
                    PatientState(
                        patient, GW, now, 12.0, -1.0, Activity.UPRIGHT, False, True, 80, True, 25.0
                    )
                )
        # The clean exit waited for every PUBACK: the broker holds it all now.
        assert pub.metrics.events_published == 36
        await broker.kill()
        await broker.start()
        back = await collector(
            broker,
            [TOPICS.all_events],
            client_id="physio-1",
            clean_start=False,
            session_expiry_s=3600,
        )
        await back.wait_for(lambda ms: events(ms) >= sent, 15.0)
        assert events(back.snapshot()) == sent
        newcomer = await collector(broker, [TOPICS.all_states])
        await newcomer.wait_for(
            lambda ms: {m.topic for m in ms if m.retain} >= {TOPICS.state(p) for p in PATIENTS},
            10.0,
        )
    finally:
        await broker.stop()
