"""Open falls on the gateway's retained ``.../alerts`` topic: nothing open is lost.

A real Mosquitto without persistence is killed with SIGKILL (retained messages
and sessions gone) and restarted; the gateway (a real AlertPublisher with an
outbox file) is restarted; the dashboard learns of every open fall from the
retained topic alone, and an ack the gateway missed is answered again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from brokers import Collector, MosquittoBroker, Received

from alerts import AlertEvent, AlertPublisher, EventType, Outbox
from alerts.acks import Ack
from alerts.open_alerts import OpenFallKeeper, answered_event
from alerts.open_falls import OpenFalls
from physio.dashboard.record_ops import alerts_of
from physio.dashboard.service import DashboardConfig, DashboardService
from physio.dashboard.store import SqlStore

MakeCollector = Callable[..., Awaitable[Collector]]
ALERTS = "posture/v1/patients/p-001/alerts"


def fall(patient: str = "p-001") -> AlertEvent:
    return AlertEvent(
        EventType.FALL_DETECTED, patient, "ward-3", datetime.now(UTC), details={"peak_acc_g": 4.8}
    )


def slouch(patient: str = "p-001") -> AlertEvent:
    return AlertEvent(EventType.SLOUCH_STARTED, patient, "ward-3", datetime.now(UTC))


def open_ids(messages: list[Received]) -> list[str] | None:
    """Event ids of the latest retained open-alerts list seen (None: none seen)."""
    lists = [m for m in messages if m.topic == ALERTS]
    if not lists:
        return None
    return [e["event_id"] for e in json.loads(lists[-1].payload)["open"]]


def test_the_open_set_lives_in_the_outbox_file_and_closes_on_an_answer(tmp_path: Path) -> None:
    first, second = fall(), fall()
    with Outbox(tmp_path / "outbox.db") as outbox:
        kept = OpenFallKeeper(outbox)
        assert kept.add(first) and not kept.add(first) and kept.add(second)
        assert not kept.add(slouch())  # only falls are kept open
        ack = Ack.at(first.event_id, "acknowledged", "Dr Müller", time.time())
        closed = answered_event(ack.to_json())
        assert closed == first.event_id and kept.close(closed) == "p-001"
        assert answered_event(b'{"event_id": "x", "action": "deleted"}') is None
    with Outbox(tmp_path / "outbox.db") as outbox:  # the gateway restarted
        again = OpenFallKeeper(outbox)
        assert again.dirty == {"p-001"}  # republished at the next connection
        payload = again.retained("p-001", "ward-3", datetime.now(UTC))
    listed = OpenFalls.from_json(payload)  # the contract's own parser
    assert [e.event_id for e in listed.open] == [second.event_id]
    assert listed.open[0] == second and listed.gateway_id == "ward-3"


@pytest.mark.timeout(90)
async def test_every_open_fall_outlives_a_broker_kill_and_a_gateway_restart(
    broker: MosquittoBroker, collector: MakeCollector, tmp_path: Path
) -> None:
    if not isinstance(broker, MosquittoBroker):
        pytest.skip("needs mosquitto (killed with SIGKILL)")
    outbox = tmp_path / "outbox.db"

    def gateway() -> AlertPublisher:
        return AlertPublisher(
            broker.settings(), gateway_id="ward-3", outbox_path=outbox, shutdown_grace_s=2.0
        )

    first, second = fall(), fall()
    async with gateway() as publisher:
        live = await collector(broker, ["posture/v1/#"])
        await publisher.publish_event(first)
        await live.wait_for(lambda ms: open_ids(ms) == [first.event_id])
        # SIGKILL, no persistence: the retained list and every session are gone.
        await broker.kill()
        await publisher.publish_event(second)  # queued in the outbox meanwhile
        await broker.start()
        late = await collector(broker, ["posture/v1/#"])
        await late.wait_for(lambda ms: open_ids(ms) == [first.event_id, second.event_id], 15)
        assert publisher.open_falls == 2

    # A dashboard that starts now never saw either event: the retained list tells it.
    record = str(tmp_path / "record.sqlite3")
    config = DashboardConfig(broker=broker.settings(), listen_port=0, database=record)
    async with DashboardService(config) as dashboard:
        watcher = await collector(broker, [ALERTS])
        await watcher.wait_for(lambda ms: open_ids(ms) is not None)
        async with gateway():
            async with asyncio.timeout(10):
                while not all(dashboard.model.alert(e.event_id) for e in (first, second)):
                    await asyncio.sleep(0.02)
            await dashboard.acknowledge(first.event_id, "acknowledged", "anna", source="::1")
            await watcher.wait_for(lambda ms: open_ids(ms) == [second.event_id], 10)
        # The gateway is down and misses this resolution (a new session when it returns) ...
        await dashboard.acknowledge(second.event_id, "resolved", "anna", source="::1")
        async with gateway() as publisher:
            # ... and the dashboard answers again when it sees the fall still listed.
            await watcher.wait_for(lambda ms: open_ids(ms) == [], 10)
            assert publisher.open_falls == 0
        await dashboard.record.flush()
    store = SqlStore(record)
    try:
        stored = {a.event_id: a for a in alerts_of(store, "p-001", 0, 4e9)}
    finally:
        store.close()
    assert stored[first.event_id].status == "acknowledged"
    assert stored[second.event_id].status == "resolved"
