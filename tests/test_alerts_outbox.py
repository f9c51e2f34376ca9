"""The durable outbox: order, expiry, eviction, locking, corruption, crash."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts import AlertEvent, EventType, Outbox, Topics
from common.errors import ConfigError

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
TOPICS = Topics()


class FakeClock:
    def __init__(self, now_s: float = 1_800_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def event(kind: EventType, patient: str = "p-1") -> AlertEvent:
    return AlertEvent(kind, patient, "gw-1", T0)


def put(outbox: Outbox, ev: AlertEvent) -> bool:
    return outbox.put(ev, TOPICS.events(ev.patient_id), expiry_s=ev.default_expiry_s())


def test_drains_falls_first_then_oldest_first_and_removes_only_on_request() -> None:
    with Outbox() as outbox:
        slouch = event(EventType.SLOUCH_STARTED)
        battery = event(EventType.BATTERY_LOW)
        fall = event(EventType.FALL_DETECTED)
        cancel = event(EventType.FALL_CANCELLED)
        for ev in (slouch, battery, fall, cancel):
            assert put(outbox, ev)
        batch = outbox.next_batch(10)
        assert [e.event_id for e in batch] == [
            fall.event_id,
            cancel.event_id,
            slouch.event_id,
            battery.event_id,
        ]
        assert json.loads(batch[0].payload)["type"] == "fall_detected"
        assert batch[0].topic == "posture/v1/patients/p-1/events"
        assert len(outbox) == 4  # nothing leaves before the ack
        outbox.remove(fall.event_id, cancel.event_id)
        assert outbox.pending_ids() == [slouch.event_id, battery.event_id]


def test_same_event_id_is_stored_once() -> None:
    with Outbox() as outbox:
        ev = event(EventType.FALL_DETECTED)
        assert put(outbox, ev)
        assert not put(outbox, ev)
        assert len(outbox) == 1


def test_expired_slouch_events_are_dropped_but_falls_never_expire() -> None:
    clock = FakeClock()
    with Outbox(clock=clock) as outbox:
        slouch = event(EventType.SLOUCH_STARTED)
        fall = event(EventType.FALL_DETECTED)
        put(outbox, slouch)
        outbox.put(fall, TOPICS.events("p-1"), expiry_s=1.0)  # asked to expire: ignored
        clock.now_s += 299.0
        assert [e.event_id for e in outbox.next_batch()] == [fall.event_id, slouch.event_id]
        assert outbox.next_batch()[1].remaining_expiry_s(clock.now_s) == pytest.approx(1.0)
        clock.now_s += 2.0
        assert [e.event_id for e in outbox.next_batch()] == [fall.event_id]
        assert outbox.expired_count == 1
        clock.now_s += 10 * 86_400
        assert outbox.pending_ids() == [fall.event_id]
        assert outbox.drop_expired() == 0


def test_eviction_takes_lowest_severity_oldest_first_and_never_a_fall(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Outbox(max_rows=4) as outbox:
        info_old = event(EventType.DEVICE_CONNECTED)
        low_old = event(EventType.SLOUCH_STARTED)
        fall = event(EventType.FALL_DETECTED)
        medium = event(EventType.BATTERY_LOW)
        for ev in (info_old, low_old, fall, medium):
            put(outbox, ev)
        info_new = event(EventType.SLOUCH_ENDED)
        # Full: the new info event goes in and the OLDEST info one leaves.
        assert put(outbox, info_new)
        assert info_old.event_id not in outbox.pending_ids()
        fall2 = event(EventType.FALL_DETECTED)
        put(outbox, fall2)  # evicts the remaining info one
        assert info_new.event_id not in outbox.pending_ids()
        put(outbox, event(EventType.FALL_DETECTED))  # evicts the low one
        put(outbox, event(EventType.FALL_DETECTED))  # evicts the medium one
        assert outbox.evicted_count == 4
        assert len(outbox) == 4
        with caplog.at_level(logging.ERROR, logger="alerts.outbox"):
            put(outbox, event(EventType.FALL_DETECTED))  # only falls left: grows past the bound
        assert len(outbox) == 5
        assert "only fall events remain" in caplog.text
        # A non-fall arriving now is itself the one evicted: falls stay.
        assert not put(outbox, event(EventType.SLOUCH_STARTED))
        assert len(outbox) == 5 and fall.event_id in outbox.pending_ids()


def test_outbox_file_survives_reopen_and_is_locked_while_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    fall = event(EventType.FALL_DETECTED)
    with Outbox(path) as outbox:
        put(outbox, fall)
        with pytest.raises(ConfigError, match="in use by another process"):
            Outbox(path)
    with Outbox(path) as again:
        assert again.pending_ids() == [fall.event_id]
        assert json.loads(again.next_batch()[0].payload)["event_id"] == fall.event_id


def test_corrupt_file_is_moved_aside_and_a_new_outbox_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.ERROR, logger="alerts.outbox"), Outbox(path) as outbox:
        assert len(outbox) == 0
        assert put(outbox, event(EventType.FALL_DETECTED))
    assert "corrupt" in caplog.text
    assert len(list(tmp_path.glob("outbox.sqlite.corrupt-*"))) == 1


def test_a_full_disk_keeps_events_in_memory_instead_of_losing_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        # Fault injection: SQLite reports "database or disk is full" once the
        # file would grow past its current pages, as on a full disk.
        db = outbox._db
        assert db is not None
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        events = [event(EventType.SLOUCH_STARTED, f"p-{i}") for i in range(40)]
        events.append(event(EventType.FALL_DETECTED))
        with caplog.at_level(logging.ERROR, logger="alerts.outbox"):
            assert all(put(outbox, ev) for ev in events)
        assert outbox.db_errors > 0 and "kept in memory" in caplog.text
        assert len(outbox) == len(events)
        pending = outbox.pending_ids()
        assert pending[0] == events[-1].event_id  # the fall still goes first
        assert sorted(pending) == sorted(ev.event_id for ev in events)
        outbox.remove(*pending)
        assert len(outbox) == 0


def test_unwritable_location_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outbox"):
        Outbox(tmp_path / "missing-dir" / "outbox.sqlite")
    with pytest.raises(ConfigError, match="max_rows"):
        Outbox(max_rows=0)


_ENQUEUE_AND_HANG = """
import sys, time
from datetime import UTC, datetime
from alerts import AlertEvent, EventType, Outbox, Topics
outbox = Outbox(sys.argv[1])
ids = []
for kind in ("fall_detected", "slouch_started", "device_disconnected"):
    ev = AlertEvent(EventType(kind), "p-7", "gw-1", datetime.now(UTC))
    outbox.put(ev, Topics().events("p-7"), expiry_s=ev.default_expiry_s())
    ids.append(ev.event_id)
print(" ".join(ids), flush=True)
time.sleep(60)
"""


def test_events_survive_kill_9_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    repo = Path(__file__).parent.parent
    with subprocess.Popen(
        [sys.executable, "-c", _ENQUEUE_AND_HANG, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    ) as proc:
        try:
            assert proc.stdout is not None
            ids = proc.stdout.readline().split()
            assert len(ids) == 3
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    with Outbox(path) as outbox:  # the lock died with the process
        assert outbox.pending_ids() == ids  # fall first, then insertion order
