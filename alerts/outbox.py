"""Durable outbox of alert events: written before publishing, deleted on PUBACK.

SQLite (stdlib) in WAL mode with ``synchronous=FULL``: a committed event
survives a kill -9 and a power cut; a restarted publisher sends it with the
same ``event_id``. Consumers de-duplicate by that id, because an event whose
PUBACK was lost in a crash is sent again (at-least-once).

Policy (docs/reliability.md):

* Drain order: fall events (detected and cancelled) first, then everything
  else, each oldest first.
* Expiry: events given an expiry (slouch reminders) are dropped once it
  passes; falls never expire.
* Bound: ``max_rows`` (default 10_000). When over it, evict the lowest
  severity first, oldest first within it. Fall events are never evicted: if
  only falls remain, the outbox grows past the bound (logged as an error).
* One process per outbox file: the file is locked exclusively while open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alerts.events import AlertEvent, Severity
from common.errors import ConfigError

__all__ = ["DEFAULT_MAX_ROWS", "Outbox", "OutboxEntry"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 10_000
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    severity_rank INTEGER NOT NULL,
    is_fall INTEGER NOT NULL,
    created_s REAL NOT NULL,
    expires_s REAL
);
CREATE INDEX IF NOT EXISTS outbox_drain ON outbox (is_fall DESC, seq);
CREATE INDEX IF NOT EXISTS outbox_evict ON outbox (is_fall, severity_rank, seq);
CREATE TABLE IF NOT EXISTS open_falls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""
# open_falls (alerts.open_alerts) is additive: an older gateway ignores the table,
# so the schema version stays 1.
_COLUMNS = "seq, event_id, topic, payload, severity_rank, is_fall, created_s, expires_s"
_SEVERITY_BY_RANK = {severity.rank: severity for severity in Severity}


@dataclass(frozen=True)
class OutboxEntry:
    """One pending event.

    Attributes:
        seq: insertion order (monotonic within one outbox file).
        created_s, expires_s: wall-clock POSIX seconds (expires None: never).
    """

    seq: int
    event_id: str
    topic: str
    payload: bytes
    severity: Severity
    is_fall: bool
    created_s: float
    expires_s: float | None

    def remaining_expiry_s(self, now_s: float) -> float | None:
        """Seconds left before expiry at ``now_s`` (None: never expires)."""
        return None if self.expires_s is None else self.expires_s - now_s


class Outbox:
    """A bounded, durable queue of events waiting for the broker's ack.

    Args:
        path: SQLite file; None or ":memory:" keeps it in memory (demo only:
            lost with the process).
        max_rows: bound before eviction (>= 1).
        clock: wall clock, POSIX s; injectable for tests. Wall time (not
            monotonic) because expiry and age must survive a restart.

    Raises:
        ConfigError: naming the file when it cannot be opened or another
            process holds it. A corrupt file is moved aside to
            ``<path>.corrupt-<time>`` (logged) and a new one started, so a
            damaged disk cannot keep the gateway from sending falls.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_rows < 1:
            raise ConfigError(f"outbox max_rows: expected >= 1, got {max_rows!r}")
        self._path = None if path is None or str(path) == ":memory:" else Path(path)
        self._max_rows = max_rows
        self._clock = clock
        self.evicted_count = 0
        self.expired_count = 0
        self.db_errors = 0
        self._spilled: dict[str, OutboxEntry] = {}
        self._spill_seq = 0
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if self._path is None or isinstance(exc, sqlite3.OperationalError):
                raise ConfigError(f"outbox {self._where}: cannot open: {exc}") from exc
            aside = self._path.with_name(f"{self._path.name}.corrupt-{int(self._clock())}")
            logger.error(
                "outbox %s is corrupt (%s); moved to %s, starting empty", self._path, exc, aside
            )
            self._path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self._path}{suffix}").unlink(missing_ok=True)
            self._db = self._open()
        if len(self):
            logger.info(
                "outbox %s holds %d pending event(s) from a previous run", self._where, len(self)
            )

    @property
    def _where(self) -> str:
        return str(self._path) if self._path is not None else ":memory:"

    def _open(self) -> sqlite3.Connection:
        target = ":memory:" if self._path is None else str(self._path)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        db = sqlite3.connect(target, timeout=0.5, isolation_level=None)
        try:
            # Exclusive: a second gateway on the same file would send every
            # event twice; fail it at start instead. (Set before WAL so no
            # shared-memory file is needed.)
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN EXCLUSIVE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                db.execute("ROLLBACK")
                raise ConfigError(
                    f"outbox {self._where}: schema version {version}, expected {_SCHEMA_VERSION}"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" in str(exc):
                raise ConfigError(f"outbox {self._where} is in use by another process") from exc
            raise
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Close the file; pending events stay in it for the next run.

        Events kept in memory after a database failure get one more try to
        reach the file; any still failing are lost with the process (logged).
        """
        for entry in list(self._spilled.values()):
            try:
                self._db.execute(
                    f"INSERT OR IGNORE INTO outbox ({_COLUMNS.split(', ', 1)[1]})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.event_id,
                        entry.topic,
                        entry.payload,
                        entry.severity.rank,
                        int(entry.is_fall),
                        entry.created_s,
                        entry.expires_s,
                    ),
                )
                del self._spilled[entry.event_id]
            except sqlite3.Error:
                break
        if self._spilled:
            logger.error(
                "outbox %s: %d event(s) never reached the disk and are lost at exit",
                self._where,
                len(self._spilled),
            )
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        try:
            rows = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.Error as exc:
            self._db_failed("count", exc)
            rows = 0
        return rows + len(self._spilled)

    @property
    def max_rows(self) -> int:
        """The bound before eviction."""
        return self._max_rows

    def _db_failed(self, what: str, exc: sqlite3.Error) -> None:
        self.db_errors += 1
        logger.error("outbox %s: %s failed: %s", self._where, what, exc)

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction may be open
            self._db.execute("ROLLBACK")

    def put(self, event: AlertEvent, topic: str, *, expiry_s: float | None = None) -> bool:
        """Store ``event`` durably (committed and fsynced before returning).

        If the database fails (disk full, I/O error) the event is kept in
        memory instead, logged and counted in ``db_errors``: an alert that
        cannot be made durable is still sent, never dropped.

        Args:
            event: the event; its ``event_id`` keys the row (a second put of
                the same id is ignored).
            topic: where to publish it.
            expiry_s: drop it this many seconds from now (ignored for falls).

        Returns:
            True if the event is now pending, False if it was a duplicate or
            was itself evicted at once (the outbox full of more severe ones).
        """
        now_s = self._clock()
        expires_s = None if event.is_fall or expiry_s is None else now_s + float(expiry_s)
        severity = event.severity or Severity.INFO
        payload = event.to_json()
        if event.event_id in self._spilled:
            return False
        try:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox (event_id, topic, payload, severity_rank, is_fall,"
                " created_s, expires_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    topic,
                    payload,
                    severity.rank,
                    int(event.is_fall),
                    now_s,
                    expires_s,
                ),
            )
            stored = cursor.rowcount == 1
            if stored:
                stored = event.event_id not in self._evict_over_bound()
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._db_failed(f"storing event {event.event_id} (kept in memory)", exc)
            self._spill_seq -= 1
            self._spilled[event.event_id] = OutboxEntry(
                self._spill_seq,
                event.event_id,
                topic,
                payload,
                severity,
                event.is_fall,
                now_s,
                expires_s,
            )
            return True
        except BaseException:
            self._rollback()
            raise
        return stored

    def _evict_over_bound(self) -> set[str]:
        """Delete rows beyond the bound by the eviction policy; return their ids."""
        excess = len(self) - self._max_rows
        if excess <= 0:
            return set()
        victims = self._db.execute(
            "SELECT seq, event_id, severity_rank FROM outbox WHERE is_fall = 0"
            " ORDER BY severity_rank, seq LIMIT ?",
            (excess,),
        ).fetchall()
        self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(row[0],) for row in victims])
        self.evicted_count += len(victims)
        for _seq, event_id, rank in victims:
            logger.warning(
                "outbox full (%d rows): evicted %s event %s",
                self._max_rows,
                _SEVERITY_BY_RANK[rank],
                event_id,
            )
        if len(victims) < excess:
            logger.error(
                "outbox holds %d rows, over its bound of %d, and only fall events "
                "remain: keeping them all",
                len(self),
                self._max_rows,
            )
        return {row[1] for row in victims}

    def drop_expired(self) -> int:
        """Delete events whose expiry has passed; return how many."""
        now_s = self._clock()
        stale = [
            event_id
            for event_id, entry in self._spilled.items()
            if not entry.is_fall and entry.expires_s is not None and entry.expires_s <= now_s
        ]
        for event_id in stale:
            del self._spilled[event_id]
        try:
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE is_fall = 0 AND expires_s IS NOT NULL AND expires_s <= ?",
                (now_s,),
            )
            dropped = max(cursor.rowcount, 0) + len(stale)
        except sqlite3.Error as exc:
            self._db_failed("dropping expired events", exc)
            dropped = len(stale)
        if dropped:
            self.expired_count += dropped
            logger.info("outbox dropped %d expired event(s)", dropped)
        return dropped

    def next_batch(self, limit: int = 16) -> list[OutboxEntry]:
        """The next ``limit`` pending events in drain order (expired ones are
        dropped first). Nothing is removed: call ``remove`` after the ack."""
        self.drop_expired()
        try:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox ORDER BY is_fall DESC, seq LIMIT ?", (limit,)
            ).fetchall()
        except sqlite3.Error as exc:
            self._db_failed("reading pending events", exc)
            rows = []
        entries = [
            OutboxEntry(
                seq,
                event_id,
                topic,
                bytes(payload),
                _SEVERITY_BY_RANK[rank],
                bool(is_fall),
                created_s,
                expires_s,
            )
            for seq, event_id, topic, payload, rank, is_fall, created_s, expires_s in rows
        ]
        if self._spilled:
            entries += self._spilled.values()
            entries.sort(key=lambda e: (not e.is_fall, e.created_s, e.seq))
        return entries[:limit]

    def remove(self, *event_ids: str) -> None:
        """Forget events the broker acknowledged, in one transaction (no
        error for absent ids). Losing a removal in a crash only re-sends."""
        for event_id in event_ids:
            self._spilled.pop(event_id, None)
        if not event_ids:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "DELETE FROM outbox WHERE event_id = ?", [(event_id,) for event_id in event_ids]
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            # Left in place they are sent again: a duplicate, never a loss.
            self._db_failed("removing acknowledged events", exc)

    def oldest_created_s(self) -> float | None:
        """Wall-clock creation time of the oldest pending event, or None."""
        times = [entry.created_s for entry in self._spilled.values()]
        try:
            value = self._db.execute("SELECT MIN(created_s) FROM outbox").fetchone()[0]
        except sqlite3.Error as exc:
            self._db_failed("reading the oldest event", exc)
            value = None
        if value is not None:
            times.append(float(value))
        return min(times) if times else None

    # -- open falls (alerts.open_alerts.OpenFallsStore) ------------------------

    def open_falls(self) -> list[tuple[str, str, bytes]]:
        """Every kept open fall as (patient_id, event_id, payload), oldest first."""
        try:
            rows = self._db.execute(
                "SELECT patient_id, event_id, payload FROM open_falls ORDER BY seq"
            ).fetchall()
        except sqlite3.Error as exc:
            self._db_failed("reading open falls", exc)
            return []
        return [(str(p), str(e), bytes(payload)) for p, e, payload in rows]

    def keep_open_fall(self, patient_id: str, event_id: str, payload: bytes) -> None:
        """Keep a fall as open across restarts (a database failure is logged and
        counted: the fall stays open in memory for this run)."""
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO open_falls (event_id, patient_id, payload) VALUES (?, ?, ?)",
                (event_id, patient_id, payload),
            )
        except sqlite3.Error as exc:
            self._db_failed(f"keeping open fall {event_id}", exc)

    def drop_open_fall(self, event_id: str) -> None:
        """A person answered the fall: forget it."""
        try:
            self._db.execute("DELETE FROM open_falls WHERE event_id = ?", (event_id,))
        except sqlite3.Error as exc:
            self._db_failed(f"forgetting open fall {event_id}", exc)

    def pending_ids(self) -> list[str]:
        """Every pending event id in drain order (for tests and diagnostics)."""
        return [entry.event_id for entry in self.next_batch(limit=len(self) + 1)]
