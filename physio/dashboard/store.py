"""The alert record's SQL: one schema on SQLite (stdlib) or PostgreSQL (psycopg 3).

:class:`SqlStore` is synchronous and does one thing per method, each in its own
transaction; :mod:`physio.dashboard.record` runs it on a worker thread so the
event loop never waits on a disk or a network round trip. The SQL is written
once, with ``?`` placeholders, in the subset both engines share (``ON CONFLICT``,
``RETURNING``); only the id column's type and the placeholder differ.

Tables (docs/dashboard.md, "The alert record"):

* ``alerts``: one row per event shown as an alert, with its current status,
  who acknowledged and resolved it and when, and the escalation columns
  (``escalated_level`` = highest level sent; ``claim_*`` = the lease an
  instance holds while it sends a level, so several dashboards on one
  database escalate exactly once and a killed instance's claim expires).
* ``alert_actions``: the audit trail, append-only: every event, ack,
  resolution, escalation, cancellation and end, with who, when and from where.
  ``dedupe_key`` makes a message seen by several instances (or twice over
  QoS 1) one row.
* ``daily_posture``: each patient's daily summary JSON, for reports and CSV.
* ``schema_version``: migrations are applied at open, under a lock
  (``BEGIN IMMEDIATE`` / ``pg_advisory_xact_lock``) so instances starting
  together do not race.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError, PostureMonitorError

__all__ = ["Row", "SqlStore", "StoreError", "is_postgres_url"]

_log = logging.getLogger(__name__)

Row = tuple[Any, ...]

# Arbitrary constant naming our migration lock among PostgreSQL advisory locks.
_PG_MIGRATION_LOCK = 0x706D_6462
_MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE alerts (
                event_id TEXT PRIMARY KEY,
                patient_id TEXT NOT NULL,
                gateway_id TEXT NOT NULL,
                type TEXT NOT NULL,
                severity TEXT NOT NULL,
                time_s DOUBLE PRECISION NOT NULL,
                received_s DOUBLE PRECISION NOT NULL,
                payload TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'open',
                acknowledged_by TEXT,
                acknowledged_s DOUBLE PRECISION,
                resolved_by TEXT,
                resolved_s DOUBLE PRECISION,
                cancelled_s DOUBLE PRECISION,
                ended_s DOUBLE PRECISION,
                escalated_level INTEGER NOT NULL DEFAULT 0,
                claim_level INTEGER NOT NULL DEFAULT 0,
                claim_owner TEXT,
                claim_until_s DOUBLE PRECISION
            )""",
            "CREATE INDEX alerts_by_status ON alerts (status, type)",
            "CREATE INDEX alerts_by_patient ON alerts (patient_id, time_s)",
            """CREATE TABLE alert_actions (
                id {serial} PRIMARY KEY,
                event_id TEXT NOT NULL,
                patient_id TEXT NOT NULL,
                action TEXT NOT NULL,
                level INTEGER,
                by_user TEXT,
                source TEXT NOT NULL,
                time_s DOUBLE PRECISION NOT NULL,
                recorded_s DOUBLE PRECISION NOT NULL,
                dedupe_key TEXT NOT NULL UNIQUE
            )""",
            "CREATE INDEX actions_by_patient ON alert_actions (patient_id, time_s)",
            "CREATE INDEX actions_by_event ON alert_actions (event_id)",
            """CREATE TABLE daily_posture (
                patient_id TEXT NOT NULL,
                day TEXT NOT NULL,
                updated_s DOUBLE PRECISION NOT NULL,
                summary TEXT NOT NULL,
                PRIMARY KEY (patient_id, day)
            )""",
        ),
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]


class StoreError(PostureMonitorError, ConnectionError):
    """The database failed (unreachable, disk full, locked too long)."""


def is_postgres_url(database: str) -> bool:
    """True for ``postgresql://`` / ``postgres://`` URLs (else a SQLite path)."""
    return database.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True)
class _Dialect:
    name: str
    serial: str
    placeholder: str


_SQLITE = _Dialect("sqlite", "INTEGER", "?")  # INTEGER PRIMARY KEY is the rowid
_POSTGRES = _Dialect("postgresql", "BIGSERIAL", "%s")


class SqlStore:
    """A connection to the record with the schema migrated to the newest version.

    Args:
        database: a SQLite file path (created with its folder), ``:memory:``,
            or a ``postgresql://`` URL (libpq's; the password may come from
            ``PGPASSWORD`` or ``~/.pgpass`` instead of the URL).

    Raises:
        ConfigError: psycopg is missing for a PostgreSQL URL, the file's
            folder cannot be made, or the schema is newer than this program.
        StoreError: the database cannot be opened.

    One connection, used by one thread at a time (the record's worker); a
    lost PostgreSQL connection is reopened on the next call.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.dialect = _POSTGRES if is_postgres_url(database) else _SQLITE
        self._conn: Any = None
        self._lock = threading.RLock()
        self._open_cursor: _Cursor | None = None  # set inside a transaction
        if self.dialect is _SQLITE and database != ":memory:":
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"alert record {database}: cannot create its folder: {exc}"
                ) from exc
        self._connect()
        self._migrate()

    @property
    def where(self) -> str:
        """The database for messages, without any password."""
        if self.dialect is _SQLITE:
            return self.database
        _head, at, tail = self.database.rpartition("@")
        return f"postgresql://…@{tail}" if at else self.database

    # -- connection --------------------------------------------------------

    def _connect(self) -> None:
        if self.dialect is _SQLITE:
            try:
                conn = sqlite3.connect(
                    str(Path(self.database).expanduser())
                    if self.database != ":memory:"
                    else ":memory:",
                    timeout=5.0,
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed ack survives a power cut, not just a kill -9.
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise StoreError(f"alert record {self.where}: cannot open: {exc}") from exc
            self._conn = conn
            return
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                "a PostgreSQL alert record needs psycopg: pip install 'posture-monitor[postgres]'"
            ) from exc
        try:
            self._conn = psycopg.connect(self.database, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise StoreError(f"alert record {self.where}: cannot connect: {exc}") from exc

    def close(self) -> None:
        """Close the connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Cursor]:
        """One transaction; commits on success, rolls back on error.

        Inside another transaction of this store (see :meth:`batch`) it joins
        that one: the outer transaction commits or rolls back everything.

        Raises:
            StoreError: the database failed (the transaction is rolled back).
        """
        with self._lock:
            if self._open_cursor is not None:
                yield self._open_cursor
                return
            if self._conn is None:
                self._connect()
            try:
                if self.dialect is _SQLITE:
                    yield from self._sqlite_tx()
                else:
                    yield from self._pg_tx()
            finally:
                self._open_cursor = None

    def batch(self, operations: Sequence[Callable[[SqlStore], object]]) -> None:
        """Run ``operations`` (each ``op(store)``) in one transaction: one commit (one
        fsync) for many writes. If any fails, none is committed.

        Raises:
            StoreError: the database failed; anything an operation raised.
        """
        with self.transaction():
            for operation in operations:
                operation(self)

    def _sqlite_tx(self) -> Iterator[_Cursor]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"alert record {self.where}: {exc}") from exc
        try:
            self._open_cursor = _Cursor(conn, self.dialect)
            yield self._open_cursor
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StoreError(f"alert record {self.where}: {exc}") from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _pg_tx(self) -> Iterator[_Cursor]:
        import psycopg

        try:
            with self._conn.transaction():
                self._open_cursor = _Cursor(self._conn, self.dialect)
                yield self._open_cursor
        except psycopg.Error as exc:
            conn = self._conn
            if conn is not None and (conn.closed or conn.broken):
                self._conn = None  # a lost server connection: reconnect on the next call
                with contextlib.suppress(Exception):
                    conn.close()
            raise StoreError(f"alert record {self.where}: {exc}") from exc

    def _migrate(self) -> None:
        with self.transaction() as cur:
            if self.dialect is _POSTGRES:
                cur.execute(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = cur.one("SELECT MAX(version) FROM schema_version")
            current = int(row[0]) if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise ConfigError(
                    f"alert record {self.where} has schema version {current}; this program "
                    f"knows up to {SCHEMA_VERSION}: upgrade posture-monitor"
                )
            for version, statements in _MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    cur.execute(statement.replace("{serial}", self.dialect.serial))
                cur.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                _log.info("alert record %s migrated to schema version %d", self.where, version)


class _Cursor:
    """Executes ``?``-placeholder SQL on either engine inside a transaction."""

    def __init__(self, conn: Any, dialect: _Dialect) -> None:
        self._conn = conn
        self._dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql if self._dialect is _SQLITE else sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        cursor = self._conn.execute(self._sql(sql), tuple(params))
        return int(cursor.rowcount or 0)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query; return every row."""
        return [tuple(r) for r in self._conn.execute(self._sql(sql), tuple(params)).fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run a query; return its first row or None."""
        row = self._conn.execute(self._sql(sql), tuple(params)).fetchone()
        return None if row is None else tuple(row)
