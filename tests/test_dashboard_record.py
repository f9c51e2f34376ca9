"""The dashboard's alert record end to end: restarts, kill -9, `report`, two instances.

Real parts only: a private Mosquitto, real dashboard processes (``python -m
physio.dashboard``) or services, a SQLite file and a PostgreSQL database.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from record_support import (  # noqa: F401  (fixtures, used by name)
    database_fixture,
    pg_database_fixture,
    pg_url_fixture,
)
from test_dashboard_support import (  # noqa: F401  (the fixture is used by name)
    JumpClock,
    ack_headers,
    broker_url_fixture,
    event_json,
    running,
)

from alerts.events import AlertEvent, EventType
from alerts.mqtt import Message, MqttClient, MqttSettings
from physio.dashboard import record_ops as ops
from physio.dashboard.cli import configure_parser, configure_report_parser, run, run_report
from physio.dashboard.escalation import EscalationPolicy
from physio.dashboard.store import SqlStore
from physio.dashboard.summary_book import SummaryBook

T = TypeVar("T")


async def eventually(check: Callable[[], T], timeout_s: float = 30.0) -> T:
    """Wait until ``check()`` is truthy (an event we cannot subscribe to), then return it."""
    async with asyncio.timeout(timeout_s):
        while not (result := check()):
            await asyncio.sleep(0.05)
    return result


def read_record(database: str, fn: Callable[[SqlStore], T]) -> T:
    store = SqlStore(database)
    try:
        return fn(store)
    finally:
        store.close()


@pytest.mark.timeout(90)
async def test_a_restarted_dashboard_shows_every_open_alert_from_the_record(
    broker_url: str, database: str, tmp_path: Path
) -> None:
    """The second dashboard has a new client id and topic root: nothing comes back over
    MQTT, so what it shows after the restart comes from the record alone."""
    clock = JumpClock()
    t_s = time.time() - 5
    async with running(broker_url, clock, database=database) as (service, peer):
        fall_id, fall = event_json("p-001", "fall_detected", t_s)
        slouch_id, slouch = event_json("p-002", "slouch_started", t_s, severity="low")
        await peer.publish("patients/p-001/events", fall)
        await peer.publish("patients/p-002/events", slouch)
        await eventually(lambda: service.model.alert(fall_id) and service.model.alert(slouch_id))
        await service.acknowledge(slouch_id, "acknowledged", "anna", source="10.1.2.3")
        await service.record.flush()
    async with running(broker_url, clock, database=database) as (again, peer):
        alerts = {a["event_id"]: a for a in again.model.snapshot()["alerts"]}
        assert alerts[fall_id]["status"] == "open" and alerts[fall_id]["type"] == "fall_detected"
        assert alerts[fall_id]["details"] == {"peak_acc_g": 5.1}
        assert alerts[slouch_id]["status"] == "acknowledged"
        assert [a["by"] for a in alerts[slouch_id]["acks"]] == ["anna"]
        # The restored fall still escalates, from this dashboard.
        clock.advance(40)
        (escalation,) = await peer.wait_for("p-001/escalations", 1, timeout_s=30)
        assert escalation["event_id"] == fall_id and escalation["level"] == 1
        await again.record.flush()
    trail = read_record(database, lambda s: ops.actions_of(s, "p-002", 0, time.time() + 100))
    assert [(a.action, a.by, a.source) for a in trail][-1][:2] == ("acknowledged", "anna")
    assert trail[-1].source.endswith("from 10.1.2.3")
    # `report` reads the same record: the day's posture totals and the clinic page.
    days_csv, page = tmp_path / "days.csv", tmp_path / "day.html"
    parser = argparse.ArgumentParser()
    configure_report_parser(parser)
    day = datetime.fromtimestamp(t_s, UTC).date().isoformat()
    args = parser.parse_args(
        [
            *("--patient", "p-001", "--database", database, "--day", day),
            *("--timezone", "UTC", "--days-csv", str(days_csv), "--out", str(page)),
        ]
    )
    assert await asyncio.to_thread(run_report, args) == 0
    with days_csv.open(encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["day"], row["falls"]) == (day, "1")
    assert "escalated (level 1)" in page.read_text(encoding="utf-8")


@asynccontextmanager
async def dashboard_process(
    broker_url: str, database: str, root: str, *extra: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``python -m physio.dashboard dashboard`` on a free port; (process, page URL)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "physio.dashboard",
        "dashboard",
        "--broker",
        broker_url,
        "--listen",
        "127.0.0.1:0",
        "--database",
        database,
        "--topic-root",
        root,
        "--client-id",
        f"pm-test-{uuid.uuid4().hex[:8]}",
        "--timezone",
        "UTC",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "POSTURE_MONITOR_DASHBOARD_TOKEN": ""},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert line.startswith("dashboard: http://"), line
        yield process, line.split()[1]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def snapshot(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "api/snapshot") as response:
        assert response.status == 200
        return dict(await response.json())


async def alert_of(http: aiohttp.ClientSession, url: str, event_id: str) -> dict[str, Any] | None:
    alerts = {a["event_id"]: a for a in (await snapshot(http, url))["alerts"]}
    return alerts.get(event_id)


async def until_shown(
    http: aiohttp.ClientSession, url: str, event_id: str, status: str = "open"
) -> dict[str, Any]:
    async with asyncio.timeout(40):
        while True:
            alert = await alert_of(http, url, event_id)
            if alert is not None and alert["status"] == status:
                return alert
            await asyncio.sleep(0.05)


@asynccontextmanager
async def peer_on(broker_url: str, root: str) -> AsyncIterator[tuple[MqttClient, list[Message]]]:
    received: list[Message] = []
    async with MqttClient(MqttSettings.from_url(broker_url)) as client:
        await client.subscribe(f"{root}/#", qos=1)

        async def record() -> None:
            async for message in client.messages():
                received.append(message)

        task = asyncio.create_task(record())
        try:
            yield client, received
        finally:
            task.cancel()


@pytest.mark.timeout(180)
async def test_the_record_survives_kill_9_and_report_reads_its_audit_trail(
    broker_url: str, database: str
) -> None:
    root = f"t{uuid.uuid4().hex[:8]}/posture/v1"
    fall_id, fall = event_json("p-001", "fall_detected", time.time())
    async with (
        aiohttp.ClientSession() as http,
        peer_on(broker_url, root) as (peer, _received),
    ):
        async with dashboard_process(broker_url, database, root) as (process, url):
            await peer.publish(f"{root}/patients/p-001/events", fall, qos=1)
            await until_shown(http, url, fall_id)
            async with http.post(
                f"{url}api/alerts/{fall_id}/ack",
                json={"action": "acknowledged", "by": "Dr Mueller"},
                headers=await ack_headers(http, url),
            ) as response:
                assert response.status == 200
            # Committed with where the click came from (the broker's echo may come first).
            await eventually(
                lambda: any(
                    a.action == "acknowledged" and "from 127.0.0.1" in a.source
                    for a in read_record(database, lambda s: ops.actions_of(s, "p-001", 0, 4e9))
                )
            )
            process.send_signal(signal.SIGKILL)
            await process.wait()
        (kept,) = read_record(database, lambda s: ops.alerts_of(s, "p-001", 0, time.time() + 1))
        assert (kept.event_id, kept.status, kept.acknowledged_by) == (
            fall_id,
            "acknowledged",
            "Dr Mueller",
        )
        # A new process (new MQTT session) shows it again, from the record.
        async with dashboard_process(broker_url, database, root) as (_process, url):
            shown = await until_shown(http, url, fall_id, "acknowledged")
            assert [a["by"] for a in shown["acks"]] == ["Dr Mueller"]
            async with http.get(url + "healthz") as response:
                record = (await response.json())["record"]
            kind = "postgresql" if database.startswith("postgresql") else "sqlite"
            assert (record["ok"], record["kind"], record["failures"]) == (True, kind, 0)
    report = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "physio.dashboard",
        "report",
        "--patient",
        "p-001",
        "--database",
        database,
        "--audit",
        "--timezone",
        "UTC",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(report.communicate(), 30)
    assert report.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert any("fall_detected" in line and "[gateway ward-3]" in line for line in lines), lines
    (acked,) = [line for line in lines if "acknowledged by Dr Mueller" in line]
    assert "from 127.0.0.1" in acked and fall_id in acked


@pytest.mark.timeout(240)
async def test_two_instances_share_the_record_and_escalate_exactly_once(
    broker_url: str, pg_url: str
) -> None:
    root = f"t{uuid.uuid4().hex[:8]}/posture/v1"
    escalate = ("--escalate-after", "1", "--escalate-again-after", "2")
    old_s = time.time() - 600  # both levels are due at once: the instances race for them
    falls = [event_json(f"p-{n:03d}", "fall_detected", old_s) for n in range(10)]
    async with (
        aiohttp.ClientSession() as http,
        peer_on(broker_url, root) as (peer, received),
        dashboard_process(broker_url, pg_url, root, *escalate) as (first, url_a),
        dashboard_process(broker_url, pg_url, root, *escalate) as (second, url_b),
    ):

        def escalations() -> list[tuple[str, int]]:
            return [
                (json.loads(m.payload)["event_id"], json.loads(m.payload)["level"])
                for m in received
                if m.topic.endswith("/escalations") and "/patients/" in m.topic
            ]

        for n, (_event_id, payload) in enumerate(falls):
            await peer.publish(f"{root}/patients/p-{n:03d}/events", payload, qos=1)
        await eventually(lambda: len(escalations()) >= 20, timeout_s=60)
        # An ack on one instance shows on the other.
        first_id = falls[0][0]
        async with http.post(
            f"{url_a}api/alerts/{first_id}/ack",
            json={"action": "resolved"},
            headers=await ack_headers(http, url_a),
        ) as response:
            assert response.status == 200
        await until_shown(http, url_b, first_id, "resolved")
        # One instance dies; the other still records and escalates what comes next.
        first.send_signal(signal.SIGKILL)
        await first.wait()
        late_id, late = event_json("p-100", "fall_detected", old_s)
        await peer.publish(f"{root}/patients/p-100/events", late, qos=1)
        # Both levels of it, by name: a count would also be met by a level sent twice.
        await eventually(lambda: {(late_id, 1), (late_id, 2)} <= set(escalations()), 60)
        await until_shown(http, url_b, late_id)
        second.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(second.wait(), 20) == 0
        # Everything either instance published has reached us once this marker has.
        await peer.publish(f"{root}/marker", b"end", qos=1)
        await eventually(lambda: any(m.topic.endswith("/marker") for m in received))
        sent = escalations()
    wanted = {(event_id, level) for event_id, _ in [*falls, (late_id, b"")] for level in (1, 2)}
    assert sorted(sent) == sorted(wanted)  # each level of each fall exactly once
    stored = read_record(pg_url, lambda s: ops.open_alerts(s, since_s=0))
    assert {a.event_id for a in stored} == {e for e, _ in falls[1:]} | {late_id}
    assert all(a.escalated_level == 2 for a in stored)


@pytest.mark.timeout(90)
async def test_a_claim_left_by_a_dead_instance_expires_and_the_level_still_goes_out(
    broker_url: str, database: str
) -> None:
    """Another instance claimed level 1 and died before recording it: this one
    waits for the lease to run out, then sends the level itself."""
    clock = JumpClock()
    async with running(broker_url, clock, database=database) as (service, peer):
        fall_id, fall = event_json("p-001", "fall_detected", time.time())
        await peer.publish("patients/p-001/events", fall)
        await eventually(lambda: service.model.alert(fall_id))
        await service.record.flush()
        dead_at_s = clock() + 30  # the moment level 1 became due for the dead instance
        claim = await service.record.call(
            lambda s: ops.claim_escalation(s, fall_id, 1, "dead-instance", dead_at_s, 10.0)
        )
        assert claim is ops.Claim.CLAIMED
        clock.advance(31)  # due now, but the dead instance's lease still runs
        ticks = service.ticks
        await eventually(lambda: service.ticks >= ticks + 2)
        assert peer.on("p-001/escalations") == []
        clock.advance(10)  # the lease ran out
        (sent,) = await peer.wait_for("p-001/escalations", 1, timeout_s=30)
        assert (sent["event_id"], sent["level"]) == (fall_id, 1)
        await service.record.flush()
    trail = read_record(database, lambda s: ops.actions_of(s, "p-001", 0, 4e9))
    (escalated,) = [a for a in trail if a.action == "escalated"]
    assert escalated.level == 1 and escalated.source.startswith("dashboard ")


@pytest.mark.timeout(90)
async def test_level_2_waits_for_level_1_whose_claim_a_dead_instance_left(
    broker_url: str, database: str
) -> None:
    """Both levels are due while a dead instance's claim on level 1 still runs:
    nothing goes out until the lease ends, then level 1 and level 2. Sending
    level 2 alone would count level 1 as done, and it would never be sent."""
    clock = JumpClock()
    policy = EscalationPolicy(30.0, 35.0)
    async with running(broker_url, clock, database=database, escalation=policy) as (
        service,
        peer,
    ):
        fall_id, fall = event_json("p-001", "fall_detected", time.time())
        await peer.publish("patients/p-001/events", fall)
        await eventually(lambda: service.model.alert(fall_id))
        await service.record.flush()
        claim = await service.record.call(
            lambda s: ops.claim_escalation(s, fall_id, 1, "dead-instance", clock() + 30, 10.0)
        )
        assert claim is ops.Claim.CLAIMED
        clock.advance(36)  # both levels due, the dead instance's lease runs 4 s more
        ticks = service.ticks
        await eventually(lambda: service.ticks >= ticks + 2)
        assert peer.on("p-001/escalations") == []
        clock.advance(5)  # the lease ran out
        sent = await peer.wait_for("p-001/escalations", 2, timeout_s=30)
        assert sorted((e["event_id"], e["level"]) for e in sent) == [(fall_id, 1), (fall_id, 2)]
        await service.record.flush()
    trail = read_record(database, lambda s: ops.actions_of(s, "p-001", 0, 4e9))
    assert sorted(a.level or 0 for a in trail if a.action == "escalated") == [1, 2]


def test_a_dashboard_whose_record_cannot_be_reached_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("psycopg")
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(
        ["--broker", "mqtt://127.0.0.1:1", "--database", "postgresql://pm:secret@127.0.0.1:1/x"]
    )
    assert run(args) == 1
    err = capsys.readouterr().err
    assert "alert record postgresql://…@127.0.0.1:1/x: cannot connect" in err
    assert "secret" not in err


@pytest.mark.timeout(90)
async def test_a_fall_known_only_from_a_retained_summary_is_recorded_and_escalates(
    broker_url: str, tmp_path: Path
) -> None:
    book = SummaryBook(ZoneInfo("UTC"))
    fall = AlertEvent(EventType.FALL_DETECTED, "p-021", "ward-3", datetime.now(UTC))
    book.on_event(fall, fall.time_s)
    summary = book.summary("p-021", None)
    assert summary is not None
    database = str(tmp_path / "alerts.sqlite3")
    clock = JumpClock()
    async with running(broker_url, clock, database=database) as (service, peer):
        await peer.publish("patients/p-021/summary", summary.to_json(), retain=True)
        await eventually(lambda: service.model.alert(fall.event_id))
        clock.advance(40)
        (sent,) = await peer.wait_for("p-021/escalations", 1, timeout_s=30)
        assert (sent["event_id"], sent["level"]) == (fall.event_id, 1)
        await service.record.flush()
    trail = read_record(database, lambda s: ops.actions_of(s, "p-021", 0, 4e9))
    assert (trail[0].action, trail[0].source) == ("event", "retained daily summary")
    assert [a.level for a in trail if a.action == "escalated"] == [1]
