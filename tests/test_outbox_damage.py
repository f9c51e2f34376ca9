"""A damaged outbox file never silences the gateway (issue 14, finding 1).

The file is damaged the three ways seen in the field: truncated, one page
overwritten (header intact), the write-ahead log damaged after a kill -9.
A real AlertPublisher then starts on it against a private mosquitto, and a
raw subscriber checks what a physiotherapist's client would get: every new
fall, each readable old event once (no re-publishing loop), and a retained
status that says ``degraded``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from brokers import MOSQUITTO, MOSQUITTO_PASSWD, Collector, MosquittoBroker, Received
from test_broker_acl import ACL, USERS, AclBroker
from test_dashboard_support import broker_url_fixture, running  # noqa: F401  (fixture by name)

from alerts import (
    AlertEvent,
    AlertPublisher,
    EventType,
    GatewayStatus,
    Outbox,
    Topics,
    format_utc_ms,
)
from alerts.outbox_salvage import inspect_wal
from physio.status import format_statuses

MakeCollector = Callable[..., Awaitable[Collector]]
REPO = Path(__file__).resolve().parent.parent
GW = "ward-9"
PAGE_BYTES = 4096  # SQLite's default page size, which the outbox uses
TOPICS = Topics()

_WRITE_AND_HANG = """
import sys, time
from datetime import UTC, datetime
from alerts import AlertEvent, EventType, Outbox, Topics
outbox = Outbox(sys.argv[1])
ids = []
for i in range(int(sys.argv[2])):
    kind = EventType.FALL_DETECTED if i % 4 == 0 else EventType.SLOUCH_STARTED
    ev = AlertEvent(kind, f"p-{i % 5:03d}", "ward-9", datetime.now(UTC), flexion_deg=30.0)
    outbox.put(ev, Topics().events(ev.patient_id))
    ids.append(ev.event_id)
print(" ".join(ids), flush=True)
time.sleep(60)
"""


def old_event(index: int) -> AlertEvent:
    kind = EventType.FALL_DETECTED if index % 4 == 0 else EventType.SLOUCH_STARTED
    return AlertEvent(kind, f"p-{index % 5:03d}", GW, datetime.now(UTC), flexion_deg=30.0)


def new_fall(index: int) -> AlertEvent:
    return AlertEvent(
        EventType.FALL_DETECTED, f"p-{100 + index:03d}", GW, datetime.now(UTC), flexion_deg=80.0
    )


def write_and_close(path: Path, count: int) -> list[str]:
    """A previous run that exited cleanly and left ``count`` events pending."""
    events = [old_event(i) for i in range(count)]
    with Outbox(path) as outbox:
        for ev in events:
            outbox.put(ev, TOPICS.events(ev.patient_id))
    return [ev.event_id for ev in events]


def write_and_kill(path: Path, count: int) -> list[str]:
    """A previous run killed with -9: its last commits live only in the WAL."""
    with subprocess.Popen(
        [sys.executable, "-c", _WRITE_AND_HANG, str(path), str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ) as proc:
        try:
            assert proc.stdout is not None
            ids = proc.stdout.readline().split()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    assert len(ids) == count
    return ids


def damage(kind: str, path: Path) -> list[str]:
    """Leave a damaged outbox at ``path``; return the ids of the old events."""
    if kind == "truncated":
        ids = write_and_close(path, 40)
        # The last quarter gone, mid-page: the rows of the pages before stay readable.
        os.truncate(path, path.stat().st_size * 3 // 4)
    elif kind == "page_overwritten":
        ids = write_and_close(path, 40)
        with open(path, "r+b") as f:  # page 2: the root of the outbox table
            f.seek(PAGE_BYTES)
            f.write(bytes(range(256)) * (PAGE_BYTES // 256))
    else:
        ids = write_and_kill(path, 40)
        wal = Path(f"{path}-wal")
        frames = (wal.stat().st_size - 32) // (24 + PAGE_BYTES)
        with open(wal, "r+b") as f:  # garble the page data of a middle frame
            f.seek(32 + (frames // 2) * (24 + PAGE_BYTES) + 24 + 200)
            f.write(b"\xa5" * 64)
        report = inspect_wal(wal)
        assert report is not None and report.damaged
    return ids


def statuses(messages: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith("/status") and m.payload]


def event_ids(messages: list[Received]) -> list[str]:
    return [json.loads(m.payload)["event_id"] for m in messages if m.topic.endswith("/events")]


@pytest.mark.parametrize("kind", ["truncated", "page_overwritten", "wal_damaged"])
async def test_damaged_outbox_delivers_every_new_fall_and_says_degraded(
    kind: str,
    tmp_path: Path,
    broker: MosquittoBroker,
    collector: MakeCollector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "outbox.sqlite"
    old_ids = damage(kind, path)
    watcher = await collector(broker, [TOPICS.all_events, TOPICS.all_status])
    new = [new_fall(i) for i in range(7)]
    with caplog.at_level(logging.ERROR, logger="alerts.outbox"):
        async with AlertPublisher(
            broker.settings(), gateway_id=GW, outbox_path=path, state_interval_s=0.1
        ) as pub:
            for ev in new:
                await pub.publish_event(ev)
            wanted = {ev.event_id for ev in new}
            await watcher.wait_for(lambda ms: wanted <= set(event_ids(ms)), 15.0)
            await watcher.wait_for(
                lambda ms: any(s["metrics"].get("degraded") for s in statuses(ms)), 15.0
            )
            assert pub.metrics.degraded is not None
    seen = watcher.snapshot()
    # Every new fall arrived, and nothing was sent over and over.
    counts = Counter(event_ids(seen))
    assert wanted <= set(counts)
    assert max(counts.values()) == 1
    assert set(counts) <= wanted | set(old_ids)
    status = next(s for s in statuses(seen) if s["metrics"].get("degraded"))
    assert status["status"] == "online"
    reason = status["metrics"]["degraded"]
    table = format_statuses({GW: GatewayStatus.from_json(json.dumps(status).encode())})
    assert "DEGRADED: outbox" in table  # what `posture-monitor status` prints
    if kind == "wal_damaged":
        assert "write-ahead log is damaged" in reason
    else:
        assert "was damaged" in reason and "salvaged" in reason
        assert status["metrics"]["outbox_recoveries"] == 1
        assert len(list(tmp_path.glob("outbox.sqlite.corrupt-*"))) >= 1
    # Some of the old events were read back and sent once (the page case
    # loses only the overwritten interior page, so all of them).
    salvaged = set(counts) & set(old_ids)
    assert salvaged
    if kind == "page_overwritten":
        assert salvaged == set(old_ids)
    # The pending age is a number whenever events are pending.
    for s in statuses(seen):
        if s["metrics"].get("events_pending"):
            assert s["metrics"]["oldest_pending_age_s"] is not None
    # Said once at ERROR, not once per message.
    assert sum("damaged" in r.getMessage() for r in caplog.records) == 1
    # The fresh file is sound and empty after the acks.
    with Outbox(path) as again:
        assert len(again) == 0 and again.degraded is None


def test_damage_found_while_running_is_replaced_from_memory(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        pending = [old_event(i) for i in range(40)]
        for ev in pending:
            outbox.put(ev, TOPICS.events(ev.patient_id))
        assert outbox.check() and outbox.degraded is None
        # Everything into the main file, then a page of it overwritten under us.
        assert outbox._db is not None
        outbox._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with open(path, "r+b") as f:
            f.seek(PAGE_BYTES)
            f.write(b"\x00\xff" * (PAGE_BYTES // 2))
        assert not outbox.check()
        assert outbox.degraded is not None and "none lost" in outbox.degraded
        fall = new_fall(0)
        assert outbox.put(fall, TOPICS.events(fall.patient_id))
        assert outbox.pending_ids()[0] == pending[0].event_id  # falls first, oldest first
        assert set(outbox.pending_ids()) == {ev.event_id for ev in pending} | {fall.event_id}
        assert outbox.check()
    with Outbox(path) as again:
        assert len(again) == 41
    assert len(list(tmp_path.glob("outbox.sqlite.corrupt-*"))) == 1


def test_acknowledged_events_are_not_sent_again_when_deletes_fail(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        events = [old_event(i) for i in range(20)]
        for ev in events:
            outbox.put(ev, TOPICS.events(ev.patient_id))
        assert outbox._db is not None
        outbox._db.execute("PRAGMA query_only = ON")  # every write now fails
        batch = outbox.next_batch(16)
        outbox.remove(*(e.event_id for e in batch))
        assert outbox.db_errors > 0
        again = outbox.next_batch(16)
        assert not {e.event_id for e in batch} & {e.event_id for e in again}
        assert outbox.oldest_created_s() is not None and len(outbox) == 4
        outbox._db.execute("PRAGMA query_only = OFF")
        assert outbox.check()  # the deletes are caught up
    with Outbox(tmp_path / "outbox.sqlite") as reopened:
        assert len(reopened) == 4


@pytest.mark.skipif(MOSQUITTO is None or MOSQUITTO_PASSWD is None, reason="needs mosquitto")
async def test_a_broker_refusing_every_event_raises_the_alarm_and_backs_off(
    tmp_path: Path, collector: MakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    broker = AclBroker(tmp_path / "mosquitto", ACL)
    await broker.start()
    try:
        watcher = await collector(
            broker, [TOPICS.all_status], username="dashboard", password=USERS["dashboard"]
        )
        settings = broker.settings(username="ward-2", password=USERS["ward-2"])
        # ward-2 may not write p-001's events: mosquitto refuses each PUBACK.
        foreign = AlertEvent(EventType.FALL_DETECTED, "p-001", "ward-2", datetime.now(UTC))
        with caplog.at_level(logging.WARNING, logger="alerts.publisher"):
            async with AlertPublisher(settings, gateway_id="ward-2", shutdown_grace_s=0.2) as pub:
                await pub.publish_event(foreign)
                await watcher.wait_for(
                    lambda ms: any(
                        "fails repeatedly" in (s["metrics"].get("degraded") or "")
                        for s in statuses(ms)
                    ),
                    30.0,
                )
                assert pub.metrics.events_pending == 1
                assert pub.metrics.oldest_pending_age_s is not None
        retries = [r for r in caplog.records if "not acknowledged" in r.getMessage()]
        # Backing off: a handful of attempts, not a spin.
        assert 5 <= len(retries) <= 12
        assert sum("fails repeatedly" in r.getMessage() for r in caplog.records) == 1
    finally:
        await broker.stop()


async def test_the_dashboard_warns_about_a_degraded_gateway(broker_url: str) -> None:
    async with running(broker_url) as (service, peer):
        status = {
            "gateway_id": "ward-9",
            "status": "online",
            "time": format_utc_ms(datetime.now(UTC)),
            "metrics": {"degraded": "outbox /var/lib/x was damaged (...); moved to ..."},
        }
        await peer.publish("gateways/ward-9/status", json.dumps(status).encode(), retain=True)
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(5):
                while not service.model.snapshot()["gateways"]:
                    await asyncio.sleep(0.02)
            async with http.get(service.url + "api/snapshot") as response:
                gateway = (await response.json())["gateways"][0]
        assert gateway["online"] is True
        assert gateway["degraded"].startswith("outbox /var/lib/x was damaged")


@pytest.mark.parametrize("kind", ["page_overwritten", "truncated"])
def test_the_gateways_open_falls_are_salvaged_too(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "outbox.sqlite"
    falls = [new_fall(i) for i in range(3)]
    with Outbox(path) as outbox:
        for ev in [old_event(i) for i in range(40)]:
            outbox.put(ev, TOPICS.events(ev.patient_id))
        for fall in falls:
            outbox.keep_open_fall(fall.patient_id, fall.event_id, fall.to_json())
    if kind == "truncated":
        os.truncate(path, path.stat().st_size - PAGE_BYTES // 2)
    else:
        with open(path, "r+b") as f:  # the outbox table's root page
            f.seek(PAGE_BYTES)
            f.write(bytes(range(256)) * (PAGE_BYTES // 256))
    with Outbox(path) as again:
        assert again.degraded is not None and "3 open fall(s) salvaged" in again.degraded
        assert [e for _p, e, _payload in again.open_falls()] == [f.event_id for f in falls]
    with Outbox(path) as third:  # and they are in the fresh file
        assert len(third.open_falls()) == 3 and third.degraded is None
