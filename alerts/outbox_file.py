"""The outbox's SQLite file: schema, opening and locking, checking, moving aside.

Only ``alerts.outbox`` uses this; it keeps the queue's policy and its
in-memory copy, this module the file underneath.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from alerts.events import Severity
from alerts.outbox_salvage import inspect_wal
from common.errors import ConfigError

__all__ = [
    "INSERT",
    "SELECT_ALL",
    "OutboxEntry",
    "entries_from_rows",
    "integrity_problems",
    "is_corruption",
    "move_aside",
    "open_db",
    "wal_damage",
]

logger = logging.getLogger(__name__)

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
# open_falls (alerts.open_alerts, kept by alerts.outbox) is additive: an older
# gateway ignores the table, so the schema version stays 1.
_COLUMNS = "seq, event_id, topic, payload, severity_rank, is_fall, created_s, expires_s"
INSERT = f"INSERT OR IGNORE INTO outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
SELECT_ALL = f"SELECT {_COLUMNS} FROM outbox ORDER BY seq"
_SEVERITY_BY_RANK = {severity.rank: severity for severity in Severity}
# SQLite's primary result codes for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).
_CORRUPT_CODES = frozenset({11, 26})


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

    def row(self) -> tuple[object, ...]:
        """The row's values, in the order of ``INSERT``."""
        return (
            self.seq,
            self.event_id,
            self.topic,
            self.payload,
            self.severity.rank,
            int(self.is_fall),
            self.created_s,
            self.expires_s,
        )


def entries_from_rows(rows: Iterable[tuple[object, ...]]) -> list[OutboxEntry]:
    """Entries from ``SELECT_ALL`` rows (or salvaged rows as tuples)."""
    entries = []
    for seq, event_id, topic, payload, rank, is_fall, created_s, expires_s in rows:
        assert isinstance(seq, int) and isinstance(rank, int)
        assert isinstance(created_s, int | float) and isinstance(payload, bytes | str)
        assert expires_s is None or isinstance(expires_s, int | float)
        entries.append(
            OutboxEntry(
                seq,
                str(event_id),
                str(topic),
                payload.encode() if isinstance(payload, str) else bytes(payload),
                _SEVERITY_BY_RANK.get(rank, Severity.INFO),
                bool(is_fall),
                float(created_s),
                None if expires_s is None else float(expires_s),
            )
        )
    return entries


def is_corruption(exc: sqlite3.Error) -> bool:
    """True when SQLite says the file itself is damaged (not full, not locked)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def utc_stamp(now_s: float) -> str:
    """``20261206T171816Z``: the suffix of a file moved aside."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_s))


def open_db(path: Path | None) -> sqlite3.Connection:
    """Open (creating if needed) the outbox at ``path`` (None: in memory).

    Raises:
        ConfigError: the file cannot be opened, another process holds it,
            or its schema is newer than ours.
        sqlite3.DatabaseError: the file is damaged.
    """
    where = ":memory:" if path is None else str(path)
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        db = sqlite3.connect(where, timeout=0.5, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise ConfigError(f"outbox {where}: cannot open: {exc}") from exc
    try:
        # Exclusive: a second gateway on the same file would send every
        # event twice; fail it at start instead. (Set before WAL so no
        # shared-memory file is needed.)
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # Acknowledged rows are zeroed, so a salvage never brings them back
        # (and deleted health data does not linger on the disk).
        db.execute("PRAGMA secure_delete=ON")
        db.execute("BEGIN EXCLUSIVE")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            db.execute("ROLLBACK")
            raise ConfigError(
                f"outbox {where}: schema version {version}, expected {_SCHEMA_VERSION}"
            )
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        db.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        db.close()
        if "locked" in str(exc):
            raise ConfigError(f"outbox {where} is in use by another process") from exc
        if "unable to open" in str(exc):
            raise ConfigError(f"outbox {where}: cannot open: {exc}") from exc
        raise
    except BaseException:
        db.close()
        raise
    return db


def integrity_problems(db: sqlite3.Connection, pragma: str = "integrity_check") -> list[str]:
    """What SQLite's ``integrity_check``/``quick_check`` reports (empty: sound)."""
    try:
        rows = db.execute(f"PRAGMA {pragma}").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == [("ok",)] else [str(row[0]) for row in rows] or ["no answer"]


def move_aside(path: Path, now_s: float) -> Path | None:
    """Rename ``path`` (and its -wal/-shm) to ``<path>.corrupt-<UTC time>``;
    None (logged) when that fails."""
    aside = path.with_name(f"{path.name}.corrupt-{utc_stamp(now_s)}")
    try:
        path.rename(aside)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                side.rename(Path(f"{aside}{suffix}"))
    except OSError as exc:
        logger.error("outbox %s: could not move the damaged file aside: %s", path, exc)
        return None
    return aside


def wal_damage(path: Path, now_s: float) -> str | None:
    """Check ``<path>-wal`` before SQLite opens it; what is lost, or None.

    SQLite drops every frame after a bad checksum without an error, so this
    is the only moment the loss can be seen. A copy of a damaged log is
    kept beside it as ``<path>-wal.corrupt-<UTC time>``.
    """
    wal = Path(f"{path}-wal")
    report = inspect_wal(wal) if path.exists() else None
    if report is None or not report.damaged:
        return None
    kept = wal.with_name(f"{wal.name}.corrupt-{utc_stamp(now_s)}")
    with contextlib.suppress(OSError):
        shutil.copyfile(wal, kept)
    what = (
        "its header"
        if report.header_damaged
        else f"{report.commits_lost} committed transaction(s) after the first bad frame"
    )
    return (
        f"outbox {path}: the write-ahead log is damaged and SQLite drops {what}; "
        f"events in them are lost (copy kept as {kept.name})"
    )
