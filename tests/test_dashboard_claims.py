"""Escalation claims in the alert record: levels in order, and no lease a death can strand.

Two instances are two connections to one real SQLite file or PostgreSQL
database; "killed" means a claimant that never calls ``finish_escalation``.
The times are made up (POSIX s), so leases run out when a test says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from record_support import (  # noqa: F401  (fixtures, used by name)
    database_fixture,
    pg_database_fixture,
    pg_url_fixture,
)

from physio.dashboard import record_ops as ops
from physio.dashboard.escalation import Escalation
from physio.dashboard.record import AlertRecord
from physio.dashboard.recorder import Recorder
from physio.dashboard.store import SqlStore

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC).timestamp()
LEASE_S = 10.0
CLAIMED, BUSY, DONE = ops.Claim.CLAIMED, ops.Claim.BUSY, ops.Claim.DONE


@pytest.fixture(name="stores")
def stores_fixture(database: str) -> Iterator[tuple[SqlStore, SqlStore]]:
    """Two instances' connections to one record."""
    first, second = SqlStore(database), SqlStore(database)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def record_fall(store: SqlStore, event_id: str) -> None:
    ops.add_event(
        store,
        {"event_id": event_id, "type": "fall_detected", "patient_id": "p-001"},
        time_s=T0,
        received_s=T0,
        severity="high",
        source="gateway ward-3",
        recorded_s=T0,
    )


def claim(store: SqlStore, level: int, owner: str, now_s: float) -> ops.Claim:
    return ops.claim_escalation(store, "f1", level, owner, now_s, LEASE_S)


def finish(store: SqlStore, level: int, owner: str, now_s: float) -> None:
    ops.finish_escalation(
        store,
        event_id="f1",
        patient_id="p-001",
        level=level,
        time_s=now_s,
        source=f"dashboard {owner}",
        recorded_s=now_s,
    )


@pytest.mark.timeout(60)
def test_level_2_is_not_claimed_while_level_1_was_never_sent(
    stores: tuple[SqlStore, SqlStore],
) -> None:
    """The CI flake: a fall overdue for both levels, whose event write landed
    between the instance's level-1 claim (missing) and its level-2 claim.
    Level 2 went out alone and level 1 then counted as done: never sent."""
    store, _ = stores
    now_s = T0 + 600
    assert claim(store, 1, "b", now_s) is ops.Claim.MISSING
    record_fall(store, "f1")
    assert claim(store, 2, "b", now_s) is BUSY
    # The next tick: both levels, in order, by the one instance.
    assert claim(store, 1, "b", now_s + 0.25) is CLAIMED
    assert claim(store, 2, "b", now_s + 0.25) is CLAIMED


@pytest.mark.timeout(60)
def test_level_2_waits_for_the_lease_of_a_dead_instance_on_level_1(
    stores: tuple[SqlStore, SqlStore],
) -> None:
    first, second = stores
    record_fall(first, "f1")
    assert claim(first, 1, "a", T0 + 120) is CLAIMED  # then "a" is killed
    assert claim(second, 2, "b", T0 + 240) is BUSY
    assert claim(second, 1, "b", T0 + 120 + LEASE_S + 1) is CLAIMED
    assert claim(second, 2, "b", T0 + 120 + LEASE_S + 1) is CLAIMED


@pytest.mark.timeout(60)
def test_recording_level_1_keeps_the_lease_on_level_2(
    stores: tuple[SqlStore, SqlStore],
) -> None:
    """One instance claims both levels in one tick; level 1 is recorded, then
    the instance dies before level 2 is: level 2 goes out once its lease ran out."""
    first, second = stores
    record_fall(first, "f1")
    now_s = T0 + 600
    assert claim(first, 1, "a", now_s) is CLAIMED
    assert claim(first, 2, "a", now_s) is CLAIMED
    finish(first, 1, "a", now_s + 0.1)  # then "a" is killed
    assert claim(second, 1, "b", now_s + 1) is DONE
    assert claim(second, 2, "b", now_s + 1) is BUSY  # "a" may still be sending it
    assert claim(second, 2, "b", now_s + LEASE_S + 1) is CLAIMED
    finish(second, 2, "b", now_s + LEASE_S + 1)
    assert claim(first, 2, "a", now_s + LEASE_S + 2) is DONE


@pytest.mark.timeout(60)
def test_level_2_seen_done_elsewhere_is_done_whatever_the_claims(
    stores: tuple[SqlStore, SqlStore],
) -> None:
    """An instance that saw level 2 on MQTT records it (as anyone may): no one
    claims either level again."""
    first, second = stores
    record_fall(first, "f1")
    assert claim(first, 1, "a", T0 + 120) is CLAIMED
    finish(first, 1, "a", T0 + 120)
    assert claim(first, 2, "a", T0 + 240) is CLAIMED
    finish(second, 2, "mqtt", T0 + 240)
    assert claim(second, 1, "b", T0 + 300) is DONE
    assert claim(second, 2, "b", T0 + 300) is DONE


class SkewedClock:
    """A host's wall clock, ``ahead_s`` off true time, plus the test's jumps."""

    def __init__(self, ahead_s: float) -> None:
        self.ahead_s = ahead_s
        self.jumped_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead_s + self.jumped_s


@pytest.mark.timeout(60)
async def test_a_dead_instances_lease_ends_on_time_whatever_its_hosts_clock(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two dashboards on hosts whose clocks disagree by five minutes. The one
    whose clock runs ahead claims level 1 and dies: the other sends the level
    once the lease has run out in true time, not five minutes later."""
    ahead, right = SkewedClock(300.0), SkewedClock(0.0)
    due = Escalation("f1", "p-001", 1, T0)
    async with AlertRecord(database) as record_a, AlertRecord(database) as record_b:
        await record_a.call(lambda s: record_fall(s, "f1"))
        a = Recorder(record_a, "a", ahead)
        b = Recorder(record_b, "b", right)
        with caplog.at_level(logging.WARNING, logger="physio.dashboard.recorder"):
            await a.sync_clock()  # as each dashboard does when it starts
            await b.sync_clock()
        assert await a.claim(due, LEASE_S) is CLAIMED  # then "a" is killed
        assert await b.claim(due, LEASE_S) is BUSY
        for clock in (ahead, right):
            clock.jumped_s += LEASE_S + 1
        assert await b.claim(due, LEASE_S) is CLAIMED
    # The operator learns which host is off, and by how much.
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "clock is 300 s ahead of the alert record's" in warning
