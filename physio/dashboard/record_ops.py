"""What the alert record stores and reads: one function per fact, each one transaction.

Every function takes an open :class:`physio.dashboard.store.SqlStore` and is
synchronous (the record's worker thread calls them; ``report`` calls the
readers directly). Times are POSIX seconds (``*_s``). Writes are idempotent:
the same event, ack or escalation seen twice (QoS 1, several dashboards on
one database) leaves one row, so no caller needs to know who wrote first.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, fields
from typing import Any

from physio.dashboard.store import Row, SqlStore

__all__ = [
    "AuditEntry",
    "Claim",
    "StoredAlert",
    "actions_of",
    "add_ack",
    "add_event",
    "add_follow_up",
    "alerts_of",
    "claim_escalation",
    "database_time_s",
    "finish_escalation",
    "open_alerts",
    "put_summary",
    "summaries_of",
]

# A source recorded from what another dashboard published over MQTT; the
# publishing dashboard's own row (with the browser's address) replaces it.
MQTT_SOURCE = "mqtt"
_FOLLOW_UPS = {
    # info event type -> (the alert type it closes or annotates, action, column)
    "fall_cancelled": ("fall_detected", "cancelled", "cancelled_s"),
    "slouch_ended": ("slouch_started", "ended", "ended_s"),
    "device_connected": ("device_disconnected", "ended", "ended_s"),
}
_ALERT_COLUMNS = (
    "event_id, patient_id, gateway_id, type, severity, time_s, received_s, payload, status,"
    " acknowledged_by, acknowledged_s, resolved_by, resolved_s, cancelled_s, ended_s,"
    " escalated_level"
)


@dataclass(frozen=True)
class StoredAlert:
    """One alert as recorded (``payload`` is the event JSON as received)."""

    event_id: str
    patient_id: str
    gateway_id: str
    type: str
    severity: str
    time_s: float
    received_s: float
    payload: str
    status: str
    acknowledged_by: str | None
    acknowledged_s: float | None
    resolved_by: str | None
    resolved_s: float | None
    cancelled_s: float | None
    ended_s: float | None
    escalated_level: int
    acks: tuple[tuple[str, str, float], ...] = field(default=())  # (action, by, time_s)

    @classmethod
    def from_row(cls, row: Row) -> StoredAlert:
        names = [f.name for f in fields(cls)][:16]
        values: dict[str, Any] = dict(zip(names, row, strict=True))
        values["escalated_level"] = int(values["escalated_level"])
        return cls(**values)


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail."""

    time_s: float
    event_id: str
    patient_id: str
    action: str  # event | acknowledged | resolved | escalated | cancelled | ended
    level: int | None
    by: str | None
    source: str
    recorded_s: float


class Claim(enum.Enum):
    """Outcome of :func:`claim_escalation`."""

    CLAIMED = "claimed"  # this caller sends the level now, then calls finish_escalation
    DONE = "done"  # the level (or a higher one) was already sent
    BUSY = "busy"  # another instance holds a live claim: ask again later
    CLOSED = "closed"  # acknowledged, resolved or cancelled: never send
    MISSING = "missing"  # not recorded yet: ask again later


def _apply_handled(cur: Any, event_id: str, action: str, by: str, time_s: float) -> None:
    if action == "resolved":
        cur.execute(
            "UPDATE alerts SET status = 'resolved', resolved_by = COALESCE(resolved_by, ?),"
            " resolved_s = COALESCE(resolved_s, ?) WHERE event_id = ?",
            (by, time_s, event_id),
        )
    else:
        cur.execute(
            "UPDATE alerts SET status = CASE WHEN status = 'open' THEN 'acknowledged'"
            " ELSE status END, acknowledged_by = COALESCE(acknowledged_by, ?),"
            " acknowledged_s = COALESCE(acknowledged_s, ?) WHERE event_id = ?",
            (by, time_s, event_id),
        )


def _action(
    cur: Any,
    key: str,
    event_id: str,
    patient_id: str,
    action: str,
    time_s: float,
    recorded_s: float,
    source: str,
    *,
    by: str | None = None,
    level: int | None = None,
) -> bool:
    return (
        cur.execute(
            "INSERT INTO alert_actions (event_id, patient_id, action, level, by_user, source,"
            " time_s, recorded_s, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (dedupe_key) DO UPDATE SET source = excluded.source"
            " WHERE alert_actions.source = ? AND excluded.source <> ?",
            (
                event_id,
                patient_id,
                action,
                level,
                by,
                source,
                time_s,
                recorded_s,
                key,
                MQTT_SOURCE,
                MQTT_SOURCE,
            ),
        )
        == 1
    )


def add_event(
    store: SqlStore,
    event: dict[str, Any],
    *,
    time_s: float,
    received_s: float,
    severity: str,
    source: str,
    recorded_s: float,
) -> bool:
    """Record an alert event (a parsed ``.../events`` payload); True if it was new.

    Acks that arrived before their event are applied to it here.
    """
    event_id, patient_id = event["event_id"], event["patient_id"]
    with store.transaction() as cur:
        new = (
            cur.execute(
                "INSERT INTO alerts (event_id, patient_id, gateway_id, type, severity, time_s,"
                " received_s, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (event_id) DO NOTHING",
                (
                    event_id,
                    patient_id,
                    str(event.get("gateway_id") or ""),
                    event["type"],
                    severity,
                    time_s,
                    received_s,
                    json.dumps(event, sort_keys=True),
                ),
            )
            == 1
        )
        _action(cur, f"event:{event_id}", event_id, patient_id, "event", time_s, recorded_s, source)
        if new:
            for action, by, at_s in cur.all(
                "SELECT action, by_user, time_s FROM alert_actions WHERE event_id = ?"
                " AND action IN ('acknowledged', 'resolved') ORDER BY time_s",
                (event_id,),
            ):
                _apply_handled(cur, event_id, action, by or "", float(at_s))
    return new


def add_follow_up(
    store: SqlStore,
    *,
    event_id: str,
    event_type: str,
    patient_id: str,
    time_s: float,
    source: str,
    recorded_s: float,
) -> str | None:
    """Record an info event (``fall_cancelled``, ``slouch_ended``, ``device_connected``)
    against the patient's latest earlier alert it refers to; return that alert's id."""
    if event_type not in _FOLLOW_UPS:
        return None
    target_type, action, column = _FOLLOW_UPS[event_type]
    with store.transaction() as cur:
        row = cur.one(
            f"SELECT event_id FROM alerts WHERE patient_id = ? AND type = ? AND time_s <= ?"
            f" AND {column} IS NULL ORDER BY time_s DESC LIMIT 1",
            (patient_id, target_type, time_s),
        )
        if row is None:
            return None
        target = str(row[0])
        if _action(
            cur, f"{action}:{event_id}", target, patient_id, action, time_s, recorded_s, source
        ):
            cur.execute(f"UPDATE alerts SET {column} = ? WHERE event_id = ?", (time_s, target))
    return target


def add_ack(
    store: SqlStore,
    *,
    event_id: str,
    patient_id: str,
    action: str,
    by: str,
    time_s: float,
    source: str,
    recorded_s: float,
) -> bool:
    """Record an acknowledgement or resolution (possibly before its event); True if new."""
    with store.transaction() as cur:
        new = _action(
            cur,
            f"{action}:{event_id}:{by}:{round(time_s * 1000)}",  # ms, the wire's precision
            event_id,
            patient_id,
            action,
            time_s,
            recorded_s,
            source,
            by=by,
        )
        _apply_handled(cur, event_id, action, by, time_s)
    return new


def database_time_s(store: SqlStore) -> float:
    """The database server's wall clock, POSIX s: the one clock that every
    dashboard instance on the record shares (their hosts' clocks may not agree)."""
    if store.dialect.name == "postgresql":
        sql = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"
    else:  # SQLite runs in this process: its clock is this host's
        sql = "SELECT (julianday('now') - 2440587.5) * 86400.0"
    with store.transaction() as cur:
        row = cur.one(sql)
    assert row is not None  # a SELECT without FROM has one row
    return float(row[0])


def claim_escalation(
    store: SqlStore, event_id: str, level: int, owner: str, now_s: float, lease_s: float
) -> Claim:
    """Take the right to send escalation ``level`` of a fall, at most one instance at a time.

    The claim is a lease until ``now_s + lease_s``, ``now_s`` in the record's
    time (:func:`database_time_s`; each instance corrects its own clock by
    its offset from it): an instance killed between
    claiming and :func:`finish_escalation` loses it, and another sends the
    level instead (so a kill loses no escalation; at worst, a kill after
    sending and before finishing sends that level twice).

    Levels go out in order: ``level`` is claimed only once the level below it
    was sent, or by the owner of the claim on that level (one instance claims
    both levels of an overdue fall in one go, before its first send is
    recorded). Anything else would lose the lower level for good, because
    ``escalated_level`` (and every instance's escalator) takes a higher level
    as covering the lower ones.
    """
    with store.transaction() as cur:
        claimed = cur.all(
            "UPDATE alerts SET claim_level = ?, claim_owner = ?, claim_until_s = ?"
            " WHERE event_id = ? AND escalated_level < ? AND status = 'open'"
            " AND cancelled_s IS NULL"
            " AND (escalated_level >= ? OR (claim_level = ? AND claim_owner = ?))"
            # No lease time is no live claim (a row written before finish_escalation
            # kept higher claims had its lease wiped and would be stuck forever).
            " AND (claim_level < ? OR claim_until_s IS NULL OR claim_until_s < ?"
            " OR claim_owner = ?) RETURNING event_id",
            (
                level,
                owner,
                now_s + lease_s,
                event_id,
                level,
                level - 1,
                level - 1,
                owner,
                level,
                now_s,
                owner,
            ),
        )
        if claimed:
            return Claim.CLAIMED
        row = cur.one(
            "SELECT escalated_level, status, cancelled_s FROM alerts WHERE event_id = ?",
            (event_id,),
        )
    if row is None:
        return Claim.MISSING
    if int(row[0]) >= level:
        return Claim.DONE
    if row[1] != "open" or row[2] is not None:
        return Claim.CLOSED
    return Claim.BUSY


def finish_escalation(
    store: SqlStore,
    *,
    event_id: str,
    patient_id: str,
    level: int,
    time_s: float,
    source: str,
    recorded_s: float,
) -> None:
    """Record that ``level`` was sent (by us after a claim, or by anyone, seen on MQTT)."""
    with store.transaction() as cur:
        cur.execute(
            "UPDATE alerts SET escalated_level = CASE WHEN escalated_level < ? THEN ?"
            " ELSE escalated_level END,"
            # A claim on a higher level stays: its owner may die before sending
            # it, and only its lease running out lets another instance send it.
            " claim_owner = CASE WHEN claim_level <= ? THEN NULL ELSE claim_owner END,"
            " claim_until_s = CASE WHEN claim_level <= ? THEN NULL ELSE claim_until_s END"
            " WHERE event_id = ?",
            (level, level, level, level, event_id),
        )
        _action(
            cur,
            f"escalated:{event_id}:{level}",
            event_id,
            patient_id,
            "escalated",
            time_s,
            recorded_s,
            source,
            level=level,
        )


def _with_acks(cur: Any, rows: list[Row]) -> list[StoredAlert]:
    alerts = [StoredAlert.from_row(row) for row in rows]
    if not alerts:
        return []
    acks: dict[str, list[tuple[str, str, float]]] = {}
    ids = [a.event_id for a in alerts]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for event_id, action, by, at_s in cur.all(
            "SELECT event_id, action, by_user, time_s FROM alert_actions WHERE action IN"
            f" ('acknowledged', 'resolved') AND event_id IN ({', '.join('?' * len(chunk))})"
            " ORDER BY time_s, id",
            chunk,
        ):
            acks.setdefault(event_id, []).append((action, by or "", float(at_s)))
    return [StoredAlert(**{**a.__dict__, "acks": tuple(acks.get(a.event_id, ()))}) for a in alerts]


def open_alerts(store: SqlStore, *, since_s: float, limit: int = 500) -> list[StoredAlert]:
    """Every unresolved fall, whatever its age, and the other unresolved, not
    ended alerts received since ``since_s`` (newest ``limit``), oldest first."""
    with store.transaction() as cur:
        falls = cur.all(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status <> 'resolved'"
            " AND type = 'fall_detected' ORDER BY time_s"
        )
        others = cur.all(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status <> 'resolved'"
            " AND type <> 'fall_detected' AND ended_s IS NULL AND received_s >= ?"
            " ORDER BY time_s DESC LIMIT ?",
            (since_s, limit),
        )
        rows = sorted(falls + others, key=lambda r: float(r[5]))
        return _with_acks(cur, rows)


def alerts_of(
    store: SqlStore, patient_id: str, since_s: float, until_s: float
) -> list[StoredAlert]:
    """A patient's alerts with event time in [since_s, until_s), oldest first."""
    with store.transaction() as cur:
        rows = cur.all(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE patient_id = ? AND time_s >= ?"
            " AND time_s < ? ORDER BY time_s",
            (patient_id, since_s, until_s),
        )
        return _with_acks(cur, rows)


def actions_of(
    store: SqlStore, patient_id: str, since_s: float, until_s: float
) -> list[AuditEntry]:
    """A patient's audit trail with time in [since_s, until_s), in time order."""
    with store.transaction() as cur:
        rows = cur.all(
            "SELECT time_s, event_id, patient_id, action, level, by_user, source, recorded_s"
            " FROM alert_actions WHERE patient_id = ? AND time_s >= ? AND time_s < ?"
            " ORDER BY time_s, id",
            (patient_id, since_s, until_s),
        )
    return [AuditEntry(*row) for row in rows]


def put_summary(
    store: SqlStore, *, patient_id: str, day_iso: str, updated_s: float, summary_json: str
) -> None:
    """Keep a patient's daily summary (a newer one replaces an older one)."""
    with store.transaction() as cur:
        cur.execute(
            "INSERT INTO daily_posture (patient_id, day, updated_s, summary) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (patient_id, day) DO UPDATE SET updated_s = excluded.updated_s,"
            " summary = excluded.summary WHERE daily_posture.updated_s <= excluded.updated_s",
            (patient_id, day_iso, updated_s, summary_json),
        )


def summaries_of(
    store: SqlStore, patient_id: str, first_day_iso: str, last_day_iso: str
) -> list[tuple[str, str]]:
    """(day, summary JSON) of a patient for days in [first, last], oldest first."""
    with store.transaction() as cur:
        rows = cur.all(
            "SELECT day, summary FROM daily_posture WHERE patient_id = ? AND day >= ?"
            " AND day <= ? ORDER BY day",
            (patient_id, first_day_iso, last_day_iso),
        )
    return [(str(day), str(text)) for day, text in rows]
