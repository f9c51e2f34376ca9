"""The alert record's store on a real SQLite file and a real PostgreSQL (same tests)."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from record_support import (  # noqa: F401  (fixtures, used by name)
    database_fixture,
    pg_database_fixture,
    pg_url_fixture,
)

from alerts.summary import format_time
from common.errors import ConfigError
from physio.dashboard import record_ops as ops
from physio.dashboard import record_report
from physio.dashboard.record import AlertRecord
from physio.dashboard.store import SqlStore, StoreError

T0 = datetime(2026, 11, 24, 8, 15, tzinfo=UTC).timestamp()
UTC_ZONE = ZoneInfo("UTC")


def event(kind: str, event_id: str, t_s: float, patient_id: str = "p-001") -> dict[str, object]:
    return {
        "event_id": event_id,
        "type": kind,
        "patient_id": patient_id,
        "gateway_id": "ward-3",
        "time": format_time(t_s),
        "severity": "high" if kind == "fall_detected" else "low",
        "flexion_deg": 70.0,
        "lateral_deg": 1.0,
        "device_time_s": 12.5,
        "details": {"peak_acc_g": 4.2},
    }


def add(store: SqlStore, kind: str, event_id: str, t_s: float) -> bool:
    data = event(kind, event_id, t_s)
    return ops.add_event(
        store,
        data,
        time_s=t_s,
        received_s=t_s + 0.2,
        severity=str(data["severity"]),
        source="gateway ward-3",
        recorded_s=t_s + 0.3,
    )


def ack(store: SqlStore, event_id: str, action: str, by: str, t_s: float, source: str) -> bool:
    return ops.add_ack(
        store,
        event_id=event_id,
        patient_id="p-001",
        action=action,
        by=by,
        time_s=t_s,
        source=source,
        recorded_s=t_s,
    )


@pytest.mark.timeout(60)
def test_every_step_of_a_fall_is_recorded_with_who_when_and_where(database: str) -> None:
    store = SqlStore(database)
    try:
        assert add(store, "fall_detected", "f1", T0)
        assert not add(store, "fall_detected", "f1", T0)  # QoS 1 twice: one row
        # Seen on MQTT first, then this instance's own row with the browser's address.
        ack(store, "f1", "acknowledged", "Dr Müller", T0 + 30, ops.MQTT_SOURCE)
        ack(store, "f1", "acknowledged", "Dr Müller", T0 + 30, "dashboard a from 10.0.0.7")
        ops.finish_escalation(
            store,
            event_id="f1",
            patient_id="p-001",
            level=1,
            time_s=T0 + 120,
            source="dashboard a",
            recorded_s=T0 + 120,
        )
        ops.add_follow_up(
            store,
            event_id="c1",
            event_type="fall_cancelled",
            patient_id="p-001",
            time_s=T0 + 5,
            source="gateway ward-3",
            recorded_s=T0 + 5,
        )
        ack(store, "f1", "resolved", "anna", T0 + 300, "dashboard b from 10.0.0.8")
        trail = ops.actions_of(store, "p-001", T0 - 1, T0 + 1000)
        assert [(a.action, a.by, a.level, a.source) for a in trail] == [
            ("event", None, None, "gateway ward-3"),
            ("cancelled", None, None, "gateway ward-3"),
            ("acknowledged", "Dr Müller", None, "dashboard a from 10.0.0.7"),
            ("escalated", None, 1, "dashboard a"),
            ("resolved", "anna", None, "dashboard b from 10.0.0.8"),
        ]
        (alert,) = ops.alerts_of(store, "p-001", T0 - 1, T0 + 1)
        assert (alert.status, alert.acknowledged_by, alert.resolved_by) == (
            "resolved",
            "Dr Müller",
            "anna",
        )
        assert alert.acknowledged_s == pytest.approx(T0 + 30)
        assert alert.escalated_level == 1 and alert.cancelled_s == pytest.approx(T0 + 5)
        assert json.loads(alert.payload)["details"] == {"peak_acc_g": 4.2}
        assert ops.open_alerts(store, since_s=0) == []  # resolved: nothing to restore
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_an_ack_before_its_fall_and_what_stays_open(database: str) -> None:
    store = SqlStore(database)
    try:
        ack(store, "f2", "acknowledged", "anna", T0 + 1, ops.MQTT_SOURCE)
        add(store, "fall_detected", "f2", T0)
        add(store, "fall_detected", "f3", T0 - 86400 * 30)  # a month old, never answered
        add(store, "slouch_started", "s1", T0)
        add(store, "slouch_started", "s2", T0 + 10)
        ops.add_follow_up(
            store,
            event_id="e2",
            event_type="slouch_ended",
            patient_id="p-001",
            time_s=T0 + 60,
            source="gateway ward-3",
            recorded_s=T0 + 60,
        )
        still = ops.open_alerts(store, since_s=T0 - 3600)
        # Every unanswered fall whatever its age; slouch s2 ended, s1 still open.
        assert [(a.event_id, a.status) for a in still] == [
            ("f3", "open"),
            ("f2", "acknowledged"),
            ("s1", "open"),
        ]
        assert still[1].acks == (("acknowledged", "anna", pytest.approx(T0 + 1)),)
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_each_escalation_level_is_claimed_by_exactly_one_instance(database: str) -> None:
    first, second = SqlStore(database), SqlStore(database)  # two instances, two connections
    try:
        add(first, "fall_detected", "f1", T0)
        assert ops.claim_escalation(second, "nope", 1, "b", T0, 10) is ops.Claim.MISSING
        assert ops.claim_escalation(first, "f1", 1, "a", T0 + 120, 10) is ops.Claim.CLAIMED
        assert ops.claim_escalation(second, "f1", 1, "b", T0 + 121, 10) is ops.Claim.BUSY
        # "a" was killed before sending: its lease runs out and "b" sends the level.
        assert ops.claim_escalation(second, "f1", 1, "b", T0 + 131, 10) is ops.Claim.CLAIMED
        ops.finish_escalation(
            second,
            event_id="f1",
            patient_id="p-001",
            level=1,
            time_s=T0 + 131,
            source="dashboard b",
            recorded_s=T0 + 131,
        )
        assert ops.claim_escalation(first, "f1", 1, "a", T0 + 140, 10) is ops.Claim.DONE
        ack(first, "f1", "acknowledged", "anna", T0 + 150, "dashboard a from ::1")
        assert ops.claim_escalation(first, "f1", 2, "a", T0 + 240, 10) is ops.Claim.CLOSED
    finally:
        first.close()
        second.close()


@pytest.mark.timeout(60)
async def test_claims_racing_from_many_threads_give_one_winner(database: str) -> None:
    """Sixteen claimants at once per level (eight stores, two levels): one wins each."""
    stores = [SqlStore(database) for _ in range(8)]
    try:
        for n in range(5):
            add(stores[0], "fall_detected", f"f{n}", T0)

        def claim(index: int, event_id: str, level: int) -> ops.Claim:
            return ops.claim_escalation(
                stores[index], event_id, level, f"owner{index}", T0 + 300, 10
            )

        for n in range(5):
            for level in (1, 2):
                results = await asyncio.gather(
                    *(asyncio.to_thread(claim, i, f"f{n}", level) for i in range(8))
                )
                assert results.count(ops.Claim.CLAIMED) == 1, results
    finally:
        for store in stores:
            store.close()


@pytest.mark.timeout(60)
def test_migrations_run_once_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "alerts.sqlite3"
    SqlStore(str(path)).close()
    SqlStore(str(path)).close()  # a second start applies nothing twice
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        conn.execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(ConfigError, match="schema version 99"):
        SqlStore(str(path))


@pytest.mark.timeout(60)
def test_postgres_that_cannot_be_reached_is_a_clear_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match=r"postgresql://…@127.0.0.1:1/x.*cannot connect"):
        SqlStore("postgresql://someone:secret@127.0.0.1:1/x")


@pytest.mark.timeout(60)
async def test_writes_queue_in_order_off_the_event_loop(database: str) -> None:
    async with AlertRecord(database) as record:
        for n in range(50):
            data = event("slouch_started", f"s{n}", T0 + n)

            def write(s: SqlStore, data: dict[str, object] = data, n: int = n) -> bool:
                return ops.add_event(
                    s,
                    data,
                    time_s=T0 + n,
                    received_s=T0 + n,
                    severity="low",
                    source="gateway ward-3",
                    recorded_s=T0 + n,
                )

            record.write(write)
        assert record.pending > 0  # queued, not written by the caller
        await record.flush()
        stored = await record.call(lambda s: ops.alerts_of(s, "p-001", 0, T0 + 100))
    assert [a.event_id for a in stored] == [f"s{n}" for n in range(50)]


@pytest.mark.timeout(60)
def test_audit_lines_and_csv_files(database: str, tmp_path: Path) -> None:
    store = SqlStore(database)
    try:
        add(store, "fall_detected", "f1", T0)
        ack(store, "f1", "acknowledged", "=HYPERLINK()", T0 + 90, "dashboard a from 10.0.0.7")
        day = datetime.fromtimestamp(T0, UTC).date()
        lines = record_report.audit_lines(store, "p-001", day, day, UTC_ZONE)
        assert lines[0].startswith("2026-11-24 08:15:00  fall_detected  [gateway ward-3]")
        assert "acknowledged by =HYPERLINK()  [dashboard a from 10.0.0.7]" in lines[1]
        out = tmp_path / "alerts.csv"
        assert record_report.write_alerts_csv(store, "p-001", day, day, UTC_ZONE, out) == 1
        with out.open(encoding="utf-8") as handle:
            (row,) = list(csv.DictReader(handle))
        assert row["acknowledged_by"] == "'=HYPERLINK()"  # not a formula in a spreadsheet
        assert row["minutes_to_acknowledge"] == "1.50" and row["status"] == "acknowledged"
    finally:
        store.close()


@pytest.mark.timeout(60)
async def test_a_lost_postgres_connection_loses_no_write(pg_url: str) -> None:
    """The server ends our connection (as on a PostgreSQL restart or failover): the
    queued writes are retried on a new connection and every one is committed."""
    import psycopg

    async with AlertRecord(pg_url) as record:
        pid = await record.call(_backend_pid)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for n in range(5):

            def write(s: SqlStore, n: int = n) -> bool:
                return add(s, "fall_detected", f"f{n}", T0 + n)

            record.write(write)
        await record.flush()
        assert record.failures >= 1  # the first write met the dead connection
        stored = await record.call(lambda s: ops.open_alerts(s, since_s=0))
    assert [a.event_id for a in stored] == [f"f{n}" for n in range(5)]


def _backend_pid(store: SqlStore) -> int:
    with store.transaction() as cur:
        row = cur.one("SELECT pg_backend_pid()")
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(60)
async def test_a_write_with_a_bug_is_skipped_and_the_others_are_kept(tmp_path: Path) -> None:
    def broken(store: SqlStore) -> None:
        raise RuntimeError("a bug in one write")

    async with AlertRecord(str(tmp_path / "alerts.sqlite3")) as record:
        for n in range(6):

            def write(s: SqlStore, n: int = n) -> bool:
                return add(s, "fall_detected", f"f{n}", T0 + n)

            record.write(write)
            if n == 2:
                record.write(broken)
        await record.flush()
        stored = await record.call(lambda s: ops.open_alerts(s, since_s=0))
    assert [a.event_id for a in stored] == [f"f{n}" for n in range(6)]
