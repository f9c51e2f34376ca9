"""Reading what can be read from a damaged outbox file, and checking its WAL.

Used only by ``alerts.outbox`` when a file fails SQLite's integrity check.
Two readers, because damage defeats each in a different way:

* through SQLite, row by row (``WHERE seq = ?`` for every seq up to the
  highest seen), so one bad page costs only the rows on it;
* straight from the bytes: every table-leaf page of the file is parsed as
  SQLite's file format describes (page header, cell pointers, varints,
  records). This still reads a truncated file or one whose root page was
  overwritten, where SQLite itself refuses every query.

Rows are kept only when they look like outbox rows (8 columns of the right
types) and their JSON payload names the same ``event_id``, so a stray page
cannot become an alert. The outbox runs with ``secure_delete`` on, so rows
deleted after their PUBACK are zeroed and not brought back; should one be,
it is a duplicate that consumers drop by ``event_id`` (at-least-once).

:func:`inspect_wal` checks the write-ahead log before SQLite opens it:
SQLite silently ignores every frame from the first bad checksum on, so a
damaged WAL loses committed events without any error. Its checksum is the
one in SQLite's ``wal.c`` (two 32-bit running sums over 8-byte words).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SalvagedRow", "WalReport", "inspect_wal", "salvage_open_falls", "salvage_rows"]

logger = logging.getLogger(__name__)

_HEADER = b"SQLite format 3\x00"
_TABLE_LEAF = 0x0D
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER_BYTES = 32
_WAL_FRAME_HEADER_BYTES = 24
_MAX_SALVAGE_PROBES = 200_000  # row-by-row reads below the highest seq seen (~1 s)


@dataclass(frozen=True)
class SalvagedRow:
    """One outbox row read back from a damaged file (times: POSIX s)."""

    seq: int
    event_id: str
    topic: str
    payload: bytes
    severity_rank: int
    is_fall: bool
    created_s: float
    expires_s: float | None


def _valid_row(values: list[object], seq: int) -> SalvagedRow | None:
    """A ``SalvagedRow`` if ``values`` (the 8 columns) are an outbox row."""
    if len(values) != 8:
        return None
    _seq, event_id, topic, payload, rank, is_fall, created_s, expires_s = values
    if isinstance(payload, str):
        payload = payload.encode()
    if not (
        isinstance(event_id, str)
        and isinstance(topic, str)
        and isinstance(payload, bytes)
        and isinstance(rank, int)
        and isinstance(is_fall, int)
        and isinstance(created_s, int | float)
        and (expires_s is None or isinstance(expires_s, int | float))
    ):
        return None
    try:
        decoded = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(decoded, dict) or decoded.get("event_id") != event_id:
        return None
    return SalvagedRow(
        seq,
        event_id,
        topic,
        payload,
        rank,
        bool(is_fall),
        float(created_s),
        None if expires_s is None else float(expires_s),
    )


# ------------------------------------------------------------ through SQLite


def _rows_through_sqlite(path: Path) -> dict[str, SalvagedRow]:
    found: dict[str, SalvagedRow] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=0.1)
    except sqlite3.Error:
        return found
    try:
        seqs: set[int] = set()
        for query in (
            "SELECT seq FROM outbox ORDER BY seq",
            "SELECT seq FROM outbox ORDER BY seq DESC",
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
        ):
            with contextlib.suppress(sqlite3.Error):
                for (seq,) in db.execute(query):
                    if isinstance(seq, int):
                        seqs.add(seq)
        highest = max(seqs, default=0)
        # seq only grows over a file's life: probe the recent end, bounded.
        for seq in range(max(1, highest - _MAX_SALVAGE_PROBES), highest + 1):
            try:
                row = db.execute(
                    "SELECT seq, event_id, topic, payload, severity_rank, is_fall, created_s,"
                    " expires_s FROM outbox WHERE seq = ?",
                    (seq,),
                ).fetchone()
            except sqlite3.Error:
                continue
            if row is not None:
                salvaged = _valid_row(list(row), seq)
                if salvaged is not None:
                    found[salvaged.event_id] = salvaged
    finally:
        db.close()
    return found


# ------------------------------------------------------- straight from bytes


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """SQLite's big-endian varint at ``pos``: (value, next position).

    Raises:
        IndexError: it runs past the end of ``data``.
    """
    value = 0
    for i in range(8):
        byte = data[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    return (value << 8) | data[pos + 8], pos + 9


def _record(payload: bytes) -> list[object] | None:
    """Decode one record (header of serial types, then values), or None."""
    try:
        header_len, pos = _varint(payload, 0)
        types: list[int] = []
        while pos < header_len:
            serial, pos = _varint(payload, pos)
            types.append(serial)
        body = header_len
        values: list[object] = []
        for serial in types:
            if serial == 0:
                values.append(None)
            elif 1 <= serial <= 6:
                size = (1, 2, 3, 4, 6, 8)[serial - 1]
                values.append(int.from_bytes(payload[body : body + size], "big", signed=True))
                body += size
            elif serial == 7:
                values.append(struct.unpack(">d", payload[body : body + 8])[0])
                body += 8
            elif serial in (8, 9):
                values.append(serial - 8)
            elif serial >= 12:
                size = (serial - 12) // 2
                chunk = payload[body : body + size]
                values.append(chunk if serial % 2 == 0 else chunk.decode("utf-8"))
                body += size
            else:
                return None
            if body > len(payload):
                return None
        return values
    except (IndexError, UnicodeDecodeError, struct.error):
        return None


def _leaf_cells(data: bytes, page_no: int, page_size: int, usable: int) -> list[tuple[int, bytes]]:
    """(rowid, payload) of each cell of table-leaf page ``page_no`` (1-based)."""
    start = (page_no - 1) * page_size
    page = data[start : start + page_size]
    head = 100 if page_no == 1 else 0
    if len(page) < head + 8 or page[head] != _TABLE_LEAF:
        return []
    cells = int.from_bytes(page[head + 3 : head + 5], "big")
    out: list[tuple[int, bytes]] = []
    for index in range(cells):
        at = head + 8 + 2 * index
        offset = int.from_bytes(page[at : at + 2], "big")
        try:
            size, pos = _varint(page, offset)
            rowid, pos = _varint(page, pos)
        except IndexError:
            continue
        # Outbox rows are far smaller than a page; larger ones would need the
        # overflow chain, which a damaged file cannot be trusted to hold.
        if size > usable - 35 or pos + size > len(page):
            continue
        out.append((rowid, page[pos : pos + size]))
    return out


def _records_from_bytes(path: Path) -> list[tuple[int, list[object]]]:
    """(rowid, values) of every record on every table-leaf page of ``path``."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if data[:16] == _HEADER:
        page_size = int.from_bytes(data[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        reserved = data[20]
    else:
        page_size, reserved = 4096, 0  # header gone: SQLite's default page size
    if page_size < 512 or page_size & (page_size - 1):
        page_size, reserved = 4096, 0
    usable = page_size - reserved
    records = []
    for page_no in range(1, len(data) // page_size + 1):
        for rowid, payload in _leaf_cells(data, page_no, page_size, usable):
            values = _record(payload)
            if values is not None:
                records.append((rowid, values))
    return records


def salvage_rows(path: Path) -> list[SalvagedRow]:
    """Every outbox row that can still be read from the damaged file ``path``
    (and its ``-wal``, read through SQLite), in ``seq`` order."""
    rows: dict[str, SalvagedRow] = {}
    for rowid, values in _records_from_bytes(path):
        row = _valid_row(values, rowid)
        if row is not None:
            rows.setdefault(row.event_id, row)
    # SQLite's view wins where it can read: it applies the WAL's newer pages.
    rows.update(_rows_through_sqlite(path))
    return sorted(rows.values(), key=lambda row: row.seq)


def _valid_open_fall(values: list[object]) -> tuple[str, str, bytes] | None:
    """(event_id, patient_id, payload) if ``values`` are an ``open_falls`` row."""
    if len(values) != 4:
        return None
    _seq, event_id, patient_id, payload = values
    if isinstance(payload, str):
        payload = payload.encode()
    if not (isinstance(event_id, str) and isinstance(patient_id, str)):
        return None
    if not isinstance(payload, bytes):
        return None
    try:
        decoded = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(decoded, dict) or decoded.get("event_id") != event_id:
        return None
    return event_id, patient_id, payload


def salvage_open_falls(path: Path) -> list[tuple[str, str, bytes]]:
    """The gateway's open falls (table ``open_falls``) still readable in
    ``path``, as (event_id, patient_id, payload), oldest first."""
    found: dict[str, tuple[int, tuple[str, str, bytes]]] = {}
    for rowid, values in _records_from_bytes(path):
        fall = _valid_open_fall(values)
        if fall is not None:
            found.setdefault(fall[0], (rowid, fall))
    with contextlib.suppress(sqlite3.Error):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        try:
            for seq, *values in db.execute(
                "SELECT seq, event_id, patient_id, payload FROM open_falls ORDER BY seq"
            ):
                fall = _valid_open_fall([None, *values])
                if fall is not None:
                    found[fall[0]] = (int(seq), fall)
        finally:
            db.close()
    return [fall for _seq, fall in sorted(found.values(), key=lambda item: item[0])]


# ------------------------------------------------------------------- the WAL


@dataclass(frozen=True)
class WalReport:
    """What SQLite will and will not recover from a write-ahead log.

    Attributes:
        frames_valid: frames SQLite will replay (up to the last commit).
        commits_lost: commit frames of the current log after the first bad
            checksum, i.e. committed transactions SQLite will drop.
        header_damaged: the log's header fails its checksum (all dropped).
    """

    frames_valid: int
    commits_lost: int
    header_damaged: bool

    @property
    def damaged(self) -> bool:
        """True when committed data will be dropped."""
        return self.header_damaged or self.commits_lost > 0


def _checksum(data: bytes, big_endian: bool, s1: int, s2: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def inspect_wal(wal_path: Path) -> WalReport | None:
    """Check ``wal_path`` frame by frame; None when there is no log to check."""
    try:
        data = wal_path.read_bytes()
    except OSError:
        return None
    if len(data) < _WAL_HEADER_BYTES:
        return None
    magic, _version, page_size, _ckpt, salt1, salt2, ck1, ck2 = struct.unpack(
        ">8I", data[:_WAL_HEADER_BYTES]
    )
    frame_bytes = _WAL_FRAME_HEADER_BYTES + page_size
    has_frames = len(data) >= _WAL_HEADER_BYTES + _WAL_FRAME_HEADER_BYTES + 512
    if magic not in _WAL_MAGIC or page_size < 512 or page_size & (page_size - 1):
        return WalReport(0, 0, header_damaged=has_frames)
    big_endian = bool(magic & 1)
    s1, s2 = _checksum(data[:24], big_endian, 0, 0)
    if (s1, s2) != (ck1, ck2):
        return WalReport(0, 0, header_damaged=has_frames)
    valid = committed = 0
    pos = _WAL_HEADER_BYTES
    broken_at: int | None = None
    while pos + frame_bytes <= len(data):
        header = data[pos : pos + _WAL_FRAME_HEADER_BYTES]
        _page, commit_size, f_salt1, f_salt2, f_ck1, f_ck2 = struct.unpack(">6I", header)
        if (f_salt1, f_salt2) != (salt1, salt2):
            break  # a frame of an older log generation: normal, the log ends here
        s1, s2 = _checksum(header[:8], big_endian, s1, s2)
        s1, s2 = _checksum(data[pos + 24 : pos + frame_bytes], big_endian, s1, s2)
        if (s1, s2) != (f_ck1, f_ck2):
            broken_at = pos
            break
        valid += 1
        if commit_size:
            committed = valid
        pos += frame_bytes
    lost = 0
    if broken_at is not None:
        # Commits after the break cannot be verified: SQLite drops them. A
        # torn last transaction (crash while writing) has no later commit.
        pos = broken_at
        while pos + frame_bytes <= len(data):
            _page, commit_size, f_salt1, f_salt2 = struct.unpack(">4I", data[pos : pos + 16])
            if (f_salt1, f_salt2) == (salt1, salt2) and commit_size:
                lost += 1
            pos += frame_bytes
    return WalReport(committed, lost, header_damaged=False)
