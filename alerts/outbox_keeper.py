"""The file side of the outbox: start-up checks, salvage, writes, recovery.

``Outbox`` (alerts/outbox.py) keeps the queue and its policy in memory and
inherits from :class:`DurableFile` what keeps the SQLite file in step with it
and replaces the file when it is damaged (see the integrity notes there and
docs/reliability.md, "A damaged outbox").
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from alerts.outbox_file import (
    INSERT,
    SELECT_ALL,
    OutboxEntry,
    integrity_problems,
    is_corruption,
    move_aside,
    open_db,
    wal_damage,
)
from alerts.outbox_salvage import salvage_open_falls, salvage_rows
from common.errors import ConfigError

__all__ = ["DurableFile"]

logger = logging.getLogger("alerts.outbox")  # one voice for the outbox in logs

# Failed writes in a row (disk full, I/O errors) before the file is checked.
_FAILURES_BEFORE_CHECK = 3


class DurableFile:
    """Keeps the SQLite file in step with the pending events held in memory.

    Subclasses provide the in-memory queue (``_falls``, ``_others``,
    ``_load``, ``_entry``, ``_pop``, ``__len__``).
    """

    _path: Path | None
    _clock: Callable[[], float]
    _db: sqlite3.Connection | None
    _inode: int | None
    _falls: dict[str, OutboxEntry]
    _others: dict[str, OutboxEntry]
    _unsaved: set[str]  # pending, not (yet) in the file
    _undeleted: set[str]  # acknowledged, row not yet deleted
    _failures_in_row: int
    _degraded: list[str]
    db_errors: int
    recoveries: int

    def _load(self, rows: list[tuple[object, ...]]) -> None:
        raise NotImplementedError

    def _entry(self, event_id: str) -> OutboxEntry | None:
        raise NotImplementedError

    def _pop(self, event_id: str) -> OutboxEntry | None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def _where(self) -> str:
        return str(self._path) if self._path is not None else ":memory:"

    def _open(self) -> sqlite3.Connection:
        db = open_db(self._path)
        if self._path is not None:
            self._inode = self._path.stat().st_ino
        return db

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
        for event_id in [*self._falls, *self._others]:
            self._pop(event_id)
        self._load([dataclasses.astuple(row) for row in rows])
        self._db = self._open()
        self._unsaved.update(self._falls, self._others)
        self._flush()
        open_falls = salvage_open_falls(aside) if aside is not None else []
        if open_falls:  # the gateway's retained list of unanswered falls

            def keep(db: sqlite3.Connection) -> None:
                db.executemany(
                    "INSERT OR IGNORE INTO open_falls (event_id, patient_id, payload)"
                    " VALUES (?, ?, ?)",
                    open_falls,
                )

            self._write("restoring salvaged open falls", keep)
        self.recoveries += 1
        self._degrade(
            f"outbox {self._path} was damaged ({problems[0]}); moved to "
            f"{aside.name if aside else '(could not move)'}; {len(rows)} pending event(s) "
            f"and {len(open_falls)} open fall(s) salvaged into a fresh outbox; events that "
            "could not be read are lost"
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
