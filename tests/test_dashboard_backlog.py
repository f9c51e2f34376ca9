"""A dashboard that comes back to a large backlog processes all of it, in order.

Against a real Mosquitto configured to queue without limit (``max_queued_messages
0``; the default of 1000 drops the rest before any client sees them): 30,000
QoS 1 events (three times the client's incoming queue of 10,000) queue for the
dashboard's persistent session while it is stopped, then a fall. The dashboard
must apply every one of them in publish order and show the fall. Before the
receive path held back what its queue could not take on the broker (manual
PUBACK), more than 10,000 queued messages overflowed the client's own queue
after paho had already acknowledged them: lost.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from brokers import MOSQUITTO, MosquittoBroker

from alerts.mqtt import Message
from alerts.summary import format_time
from physio.dashboard.service import DashboardConfig, DashboardService

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto binary not installed")

BACKLOG = 30_000
PATIENTS = 50


def _event(root: str, index: int, t_s: float) -> tuple[str, str, bytes]:
    patient = f"p-{index % PATIENTS:03d}"
    kind = "slouch_started" if (index // PATIENTS) % 2 == 0 else "slouch_ended"
    event_id = f"e{index:06d}"
    body = {
        "event_id": event_id,
        "type": kind,
        "patient_id": patient,
        "gateway_id": "ward-3",
        "time": format_time(t_s),
        "severity": "low" if kind == "slouch_started" else "info",
        "flexion_deg": 31.0,
        "lateral_deg": 1.0,
        "device_time_s": float(index),
        "details": {"duration_s": 40.0} if kind == "slouch_ended" else {},
    }
    return f"{root}/patients/{patient}/events", event_id, json.dumps(body).encode()


def _publish_all(url_port: int, messages: list[tuple[str, str, bytes]]) -> None:
    """Publish with paho directly (QoS 1) and return once every PUBACK is in."""
    done = threading.Event()
    # paho rescans its whole queue on every PUBACK: keep at most this many in it.
    window = threading.Semaphore(500)
    acked = 0

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked == len(messages):
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(500)
    client.on_publish = on_publish
    client.connect("127.0.0.1", url_port)
    client.loop_start()
    try:
        for topic, _event_id, payload in messages:
            if not window.acquire(timeout=60):
                raise AssertionError(f"the broker stopped acknowledging after {acked}")
            client.publish(topic, payload, qos=1)
        if not done.wait(180):
            raise AssertionError(f"only {acked} of {len(messages)} publishes acknowledged")
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.timeout(600)
async def test_a_30k_backlog_is_processed_in_order_and_the_fall_at_its_end_shows(
    tmp_path: Path,
) -> None:
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config=("max_queued_messages 0",))
    await broker.start()
    try:
        root = f"t{uuid.uuid4().hex[:8]}/posture/v1"
        config = DashboardConfig(
            broker=broker.settings(),
            listen_port=0,
            topic_root=root,
            client_id=f"backlog-{uuid.uuid4().hex[:6]}",
            summary_interval_s=3600.0,
        )
        now_s = time.time()
        messages = [_event(root, i, now_s - 60.0 + i * 1e-4) for i in range(BACKLOG)]
        fall_id = uuid.uuid4().hex
        fall = {
            "event_id": fall_id,
            "type": "fall_detected",
            "patient_id": "p-999",
            "gateway_id": "ward-3",
            "time": format_time(now_s),
            "severity": "high",
        }
        messages.append((f"{root}/patients/p-999/events", fall_id, json.dumps(fall).encode()))

        # First run: the persistent session and its subscriptions exist on the broker.
        async with DashboardService(config) as service:
            async with asyncio.timeout(10):
                while not service.model.broker_connected:
                    await asyncio.sleep(0.02)
        # Stopped: everything now queues for it on the broker.
        published = time.monotonic()
        await asyncio.to_thread(_publish_all, broker.port, messages)
        publish_s = time.monotonic() - published

        seen: list[str] = []
        async with DashboardService(config) as service:
            handle = service.handle_message

            def recording(message: Message, received_s: float) -> None:
                seen.append(json.loads(message.payload)["event_id"])
                handle(message, received_s)

            service.handle_message = recording  # type: ignore[method-assign]
            started, started_wall = time.process_time(), time.monotonic()
            async with asyncio.timeout(240):
                while service.model.alert(fall_id) is None:
                    await asyncio.sleep(0.1)
            cpu_s = time.process_time() - started
            wall_s = time.monotonic() - started_wall
            alert = service.model.alert(fall_id)
            assert alert is not None and alert["status"] == "open"
            assert service.drops.total == 0
            summaries = [service.book.summary(f"p-{p:03d}") for p in range(PATIENTS)]
            book_episodes = sum(s.totals().slouch_episodes for s in summaries if s is not None)
        # Every queued message was applied once, in the order it was published.
        assert seen == [event_id for _topic, event_id, _payload in messages]
        assert book_episodes == BACKLOG // 2
        print(
            f"\nbacklog of {len(messages)}: queued in {publish_s:.1f} s, applied in {wall_s:.1f} s "
            f"({cpu_s:.1f} s CPU in the dashboard's process)"
        )
    finally:
        await broker.stop()
