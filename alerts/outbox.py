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

Integrity (a damaged file must never silence new alerts):

* Every pending event is also held in memory, and the file is *read* only
  at start. Sending works from memory, so a page that cannot be read can
  neither hide a new event nor make an acknowledged one come back.
* At start the write-ahead log is checked frame by frame and the file with
  SQLite's ``integrity_check``. A damaged file is moved aside to
  ``<path>.corrupt-<UTC time>``, the rows that can still be read are
  salvaged (``alerts.outbox_salvage``) into a fresh file.
* ``check()`` (the publisher calls it every minute) runs ``quick_check`` on
  what is on disk; damage found then, or a write failing as corrupt, moves
  the file aside and writes a fresh one from memory, losing nothing.
* ``degraded`` says what happened until the process ends (logged once at
  ERROR), ``recoveries`` counts the fresh starts; the publisher puts both in
  its retained status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from alerts.events import AlertEvent, Severity
from alerts.outbox_file import (
    INSERT,
    SELECT_ALL,
    OutboxEntry,
    entries_from_rows,
    integrity_problems,
    is_corruption,
    move_aside,
    open_db,
    wal_damage,
)
from alerts.outbox_salvage import salvage_rows
from common.errors import ConfigError

__all__ = ["DEFAULT_MAX_ROWS", "Outbox", "OutboxEntry"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 10_000
# Failed writes in a row (disk full, I/O errors) before the file is checked.
_FAILURES_BEFORE_CHECK = 3


class Outbox:
    """A bounded, durable queue of events waiting for the broker's ack.

    Args:
        path: SQLite file; None or ":memory:" keeps it in memory (demo only:
            lost with the process).
        max_rows: bound before eviction (>= 1).
        clock: wall clock, POSIX s; injectable for tests. Wall time (not
            monotonic) because expiry and age must survive a restart.

    Raises:
        ConfigError: naming the file when it cannot be opened, has a newer
            schema, or another process holds it. A damaged file is not an
            error: it is moved aside, salvaged and replaced (see ``degraded``).
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
        self.recoveries = 0
        # Pending events by id, each dict in seq order (falls drain first).
        self._falls: dict[str, OutboxEntry] = {}
        self._others: dict[str, OutboxEntry] = {}
        self._unsaved: set[str] = set()  # pending, not (yet) in the file
        self._undeleted: set[str] = set()  # acknowledged, row not yet deleted
        self._next_seq = 1
        self._failures_in_row = 0
        self._degraded: list[str] = []
        self._inode: int | None = None
        self._db: sqlite3.Connection | None = self._start()
        if len(self):
            logger.info(
                "outbox %s holds %d pending event(s) from a previous run", self._where, len(self)
            )

    # ------------------------------------------------------------ opening

    @property
    def _where(self) -> str:
        return str(self._path) if self._path is not None else ":memory:"

    def _open(self) -> sqlite3.Connection:
        db = open_db(self._path)
        if self._path is not None:
            self._inode = self._path.stat().st_ino
        return db

    def _load(self, rows: list[tuple[object, ...]]) -> None:
        for entry in entries_from_rows(rows):
            (self._falls if entry.is_fall else self._others)[entry.event_id] = entry
            self._next_seq = max(self._next_seq, entry.seq + 1)

    def _start(self) -> sqlite3.Connection | None:
        if self._path is None:
            return self._open()
        wal_note = wal_damage(self._path, self._clock())
        if wal_note is not None:
            self._degrade(wal_note)
        db: sqlite3.Connection | None = None
        try:
            db = self._open()
            problems = integrity_problems(db, "integrity_check")
            if not problems:
                self._load(db.execute(SELECT_ALL).fetchall())
                return db
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if db is not None:
            db.close()
        aside = move_aside(self._path, self._clock())
        rows = salvage_rows(aside) if aside is not None else []
        self._falls.clear()
        self._others.clear()
        self._load([dataclasses.astuple(row) for row in rows])
        self._db = self._open()
        self._unsaved.update(self._falls, self._others)
        self._flush()
        self.recoveries += 1
        self._degrade(
            f"outbox {self._path} was damaged ({problems[0]}); moved to "
            f"{aside.name if aside else '(could not move)'}; {len(rows)} pending event(s) "
            "salvaged into a fresh outbox; events that could not be read are lost"
        )
        return self._db

    def _degrade(self, reason: str) -> None:
        if reason not in self._degraded:
            self._degraded.append(reason)
            logger.error("%s", reason)

    @property
    def degraded(self) -> str | None:
        """Why this outbox is not what it should be (None: it is sound).

        Set when a damaged file was replaced, events could not be read, or
        events are held only in memory; kept until the process ends, so the
        alarm is seen even after the outbox recovered."""
        return "; ".join(self._degraded) if self._degraded else None

    # ------------------------------------------------------------ writing

    def _write(self, what: str, statements: Callable[[sqlite3.Connection], None]) -> bool:
        """Run ``statements`` in one transaction; False (logged, counted) on failure."""
        db = self._db
        if db is None:
            return False
        try:
            db.execute("BEGIN IMMEDIATE")
            statements(db)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # no transaction may be open
                db.execute("ROLLBACK")
            self.db_errors += 1
            self._failures_in_row += 1
            if self.db_errors & (self.db_errors - 1) == 0:  # the first, then powers of two
                logger.error(
                    "outbox %s: %s failed (%d so far): %s", self._where, what, self.db_errors, exc
                )
            if is_corruption(exc):
                self._recover(str(exc))
            elif self._failures_in_row >= _FAILURES_BEFORE_CHECK:
                self._failures_in_row = 0
                self.check()
            return False
        self._failures_in_row = 0
        return True

    def _flush(self) -> bool:
        """Write events kept only in memory and delete acknowledged rows."""
        if not self._unsaved and not self._undeleted:
            return True
        entries = [e for i in self._unsaved if (e := self._entry(i)) is not None]
        gone = list(self._undeleted)

        def statements(db: sqlite3.Connection) -> None:
            db.executemany(INSERT, [e.row() for e in entries])
            db.executemany("DELETE FROM outbox WHERE event_id = ?", [(i,) for i in gone])

        if not self._write("writing events kept in memory", statements):
            return False
        self._unsaved.clear()
        self._undeleted.difference_update(gone)
        return True

    def _recover(self, reason: str) -> None:
        """The file is damaged: move it aside and rewrite every pending event."""
        if self._path is None:
            self._degrade(f"outbox in memory failed: {reason}")
            return
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        aside = move_aside(self._path, self._clock())
        self._unsaved = set(self._falls) | set(self._others)
        self._undeleted.clear()
        self.recoveries += 1
        try:
            self._db = self._open()
        except (sqlite3.Error, ConfigError, OSError) as exc:
            self._degrade(
                f"outbox {self._path} is damaged ({reason}) and no fresh file can be "
                f"opened ({exc}): events are held in memory only"
            )
            return
        self._flush()
        self._degrade(
            f"outbox {self._path} was damaged ({reason}); moved to "
            f"{aside.name if aside else '(could not move)'}; {len(self)} pending event(s) "
            "rewritten to a fresh outbox from memory, none lost"
        )

    def check(self) -> bool:
        """Check the file on disk (``quick_check``); replace it if damaged.

        Also retries writing events kept only in memory. Returns True when
        the file is sound and holds every pending event.
        """
        if self._path is None:
            return True
        if self._db is None:
            self._recover("no outbox file was open")
            return self._db is not None and not self._unsaved
        try:
            inode = self._path.stat().st_ino
        except OSError:
            inode = None
        if inode != self._inode:
            self._recover("the file was removed or replaced")
            return False
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA shrink_memory")  # check the disk, not the page cache
        problems = integrity_problems(self._db, "quick_check")
        if problems:
            self._recover(problems[0])
            return False
        return self._flush()

    def close(self) -> None:
        """Close the file; pending events stay in it for the next run.

        Events kept in memory after a database failure get one more try to
        reach the file; any still failing are lost with the process (logged).
        """
        self._flush()
        if self._unsaved:
            logger.error(
                "outbox %s: %d event(s) never reached the disk and are lost at exit",
                self._where,
                len(self._unsaved),
            )
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._falls) + len(self._others)

    @property
    def max_rows(self) -> int:
        """The bound before eviction."""
        return self._max_rows

    def _entry(self, event_id: str) -> OutboxEntry | None:
        return self._falls.get(event_id) or self._others.get(event_id)

    # ------------------------------------------------------------ the API

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
        if self._entry(event.event_id) is not None:
            return False
        now_s = self._clock()
        entry = OutboxEntry(
            self._next_seq,
            event.event_id,
            topic,
            event.to_json(),
            event.severity or Severity.INFO,
            event.is_fall,
            now_s,
            None if event.is_fall or expiry_s is None else now_s + float(expiry_s),
        )
        self._next_seq += 1
        (self._falls if entry.is_fall else self._others)[entry.event_id] = entry
        victims = self._evict_over_bound()
        stored = entry.event_id not in victims

        def statements(db: sqlite3.Connection) -> None:
            if stored:
                db.execute(INSERT, entry.row())
            db.executemany("DELETE FROM outbox WHERE event_id = ?", [(v,) for v in victims])

        if not self._write(f"storing event {event.event_id} (kept in memory)", statements):
            if stored and self._entry(entry.event_id) is not None:
                self._unsaved.add(entry.event_id)
            self._undeleted.update(victims)
        elif self._unsaved or self._undeleted:
            self._flush()  # the disk works again: catch up
        return stored

    def _evict_over_bound(self) -> set[str]:
        """Forget events beyond the bound by the eviction policy; return their ids."""
        victims: set[str] = set()
        while len(self) > self._max_rows and self._others:
            victim = min(self._others.values(), key=lambda e: (e.severity.rank, e.seq))
            del self._others[victim.event_id]
            self._unsaved.discard(victim.event_id)
            victims.add(victim.event_id)
            self.evicted_count += 1
            logger.warning(
                "outbox full (%d rows): evicted %s event %s",
                self._max_rows,
                victim.severity,
                victim.event_id,
            )
        if len(self) > self._max_rows:
            logger.error(
                "outbox holds %d rows, over its bound of %d, and only fall events "
                "remain: keeping them all",
                len(self),
                self._max_rows,
            )
        return victims

    def drop_expired(self) -> int:
        """Delete events whose expiry has passed; return how many."""
        now_s = self._clock()
        stale = [
            event_id
            for event_id, entry in self._others.items()
            if entry.expires_s is not None and entry.expires_s <= now_s
        ]
        if not stale:
            return 0
        self.remove(*stale)
        self.expired_count += len(stale)
        logger.info("outbox dropped %d expired event(s)", len(stale))
        return len(stale)

    def next_batch(self, limit: int = 16) -> list[OutboxEntry]:
        """The next ``limit`` pending events in drain order (expired ones are
        dropped first). Nothing is removed: call ``remove`` after the ack."""
        self.drop_expired()
        batch: list[OutboxEntry] = []
        for pending in (self._falls, self._others):
            for entry in pending.values():
                if len(batch) >= limit:
                    return batch
                batch.append(entry)
        return batch

    def remove(self, *event_ids: str) -> None:
        """Forget events the broker acknowledged, in one transaction (no
        error for absent ids). A removal lost on disk only re-sends after a
        restart; in this run the event is gone at once."""
        on_disk = []
        for event_id in event_ids:
            entry = self._falls.pop(event_id, None) or self._others.pop(event_id, None)
            if entry is not None and event_id not in self._unsaved:
                on_disk.append(event_id)
            self._unsaved.discard(event_id)
        if not on_disk:
            return

        def statements(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM outbox WHERE event_id = ?", [(i,) for i in on_disk])

        if not self._write("removing acknowledged events", statements):
            self._undeleted.update(on_disk)

    def oldest_created_s(self) -> float | None:
        """Wall-clock creation time of the oldest pending event, or None."""
        return min(
            (e.created_s for pending in (self._falls, self._others) for e in pending.values()),
            default=None,
        )

    def pending_ids(self) -> list[str]:
        """Every pending event id in drain order (for tests and diagnostics)."""
        return [*self._falls, *self._others]
