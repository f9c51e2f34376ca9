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

The file also keeps the gateway's open falls (``alerts.open_alerts``; table
``open_falls``), held in memory the same way and rewritten with the rest when
the file is replaced.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from alerts.events import AlertEvent, Severity
from alerts.outbox_file import INSERT, OutboxEntry, entries_from_rows
from alerts.outbox_keeper import DurableFile
from common.errors import ConfigError

__all__ = ["DEFAULT_MAX_ROWS", "Outbox", "OutboxEntry"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 10_000


class Outbox(DurableFile):
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
        # Indexes of ``_others``: ids per severity rank in seq order (eviction
        # takes the first of the lowest rank) and a heap of expiry times, so
        # neither eviction nor expiry scans the whole backlog.
        self._by_rank: dict[int, dict[str, None]] = {}
        self._expiries: list[tuple[float, int, str]] = []
        self._unsaved: set[str] = set()  # pending, not (yet) in the file
        self._undeleted: set[str] = set()  # acknowledged, row not yet deleted
        self._next_seq = 1
        self._failures_in_row = 0
        self._degraded: list[str] = []
        self._inode: int | None = None
        # The gateway's open falls (alerts.open_alerts) by event id: (patient_id,
        # payload) in the order they came, held in memory like the events.
        self._open_falls: dict[str, tuple[str, bytes]] = {}
        self._open_falls_unsaved = False
        self._db: sqlite3.Connection | None = self._start()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):  # a fresh file after damage has none
                for event_id, patient_id, payload in self._db.execute(
                    "SELECT event_id, patient_id, payload FROM open_falls ORDER BY seq"
                ):
                    self._open_falls[str(event_id)] = (str(patient_id), bytes(payload))
        if len(self):
            logger.info(
                "outbox %s holds %d pending event(s) from a previous run", self._where, len(self)
            )

    # ------------------------------------------------------------ opening

    def _load(self, rows: list[tuple[object, ...]]) -> None:
        for entry in entries_from_rows(rows):
            self._add(entry)
            self._next_seq = max(self._next_seq, entry.seq + 1)

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

    def _add(self, entry: OutboxEntry) -> None:
        if entry.is_fall:
            self._falls[entry.event_id] = entry
            return
        self._others[entry.event_id] = entry
        self._by_rank.setdefault(entry.severity.rank, {})[entry.event_id] = None
        if entry.expires_s is not None:
            heapq.heappush(self._expiries, (entry.expires_s, entry.seq, entry.event_id))

    def _pop(self, event_id: str) -> OutboxEntry | None:
        entry = self._falls.pop(event_id, None)
        if entry is None:
            entry = self._others.pop(event_id, None)
            if entry is not None:
                self._by_rank[entry.severity.rank].pop(event_id, None)
        return entry

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
        self._add(entry)
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
            lowest = min(rank for rank, ids in self._by_rank.items() if ids)
            victim = self._others[next(iter(self._by_rank[lowest]))]
            self._pop(victim.event_id)
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
        stale = []
        while self._expiries and self._expiries[0][0] <= now_s:
            _expires_s, seq, event_id = heapq.heappop(self._expiries)
            entry = self._others.get(event_id)
            if entry is not None and entry.seq == seq:  # else acknowledged or evicted
                stale.append(event_id)
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
            entry = self._pop(event_id)
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

    # -- open falls (alerts.open_alerts.OpenFallsStore) ------------------------

    def open_falls(self) -> list[tuple[str, str, bytes]]:
        """Every kept open fall as (patient_id, event_id, payload), oldest first."""
        return [(p, e, payload) for e, (p, payload) in self._open_falls.items()]

    def keep_open_fall(self, patient_id: str, event_id: str, payload: bytes) -> None:
        """Keep a fall as open across restarts (on a database failure it stays
        in memory, counted, and is written with the next successful flush)."""
        if event_id in self._open_falls:
            return
        self._open_falls[event_id] = (patient_id, payload)

        def statements(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO open_falls (event_id, patient_id, payload) VALUES (?, ?, ?)",
                (event_id, patient_id, payload),
            )

        if not self._write(f"keeping open fall {event_id}", statements):
            self._open_falls_unsaved = True

    def drop_open_fall(self, event_id: str) -> None:
        """A person answered the fall: forget it."""
        if self._open_falls.pop(event_id, None) is None:
            return

        def statements(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM open_falls WHERE event_id = ?", (event_id,))

        if not self._write(f"forgetting open fall {event_id}", statements):
            self._open_falls_unsaved = True

    def _recover(self, reason: str) -> None:
        self._open_falls_unsaved = True  # the fresh file gets them from memory too
        super()._recover(reason)

    def _flush(self) -> bool:
        if not super()._flush():
            return False
        if not self._open_falls_unsaved:
            return True
        kept = list(self._open_falls.items())

        def statements(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM open_falls")
            db.executemany(
                "INSERT INTO open_falls (event_id, patient_id, payload) VALUES (?, ?, ?)",
                [(e, p, payload) for e, (p, payload) in kept],
            )

        if not self._write("writing open falls kept in memory", statements):
            return False
        self._open_falls_unsaved = False
        return True

    def pending_ids(self) -> list[str]:
        """Every pending event id in drain order (for tests and diagnostics)."""
        return [*self._falls, *self._others]
