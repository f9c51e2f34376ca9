"""Helpers shared by the JSON wire formats: UTC timestamps and field readers.

Timestamps on the wire are ISO 8601 UTC with milliseconds and a ``Z``
(``2026-11-24T08:15:02.120Z``). Readers raise ``ValueError`` that names the
field and what was expected, so a consumer can count and skip a bad message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "decode_object",
    "encode_object",
    "finite_or_none",
    "format_utc_ms",
    "opt_float",
    "opt_int",
    "parse_utc",
    "req_bool",
    "req_float",
    "req_str",
    "to_utc_ms",
    "utc_from_timestamp",
]


def format_utc_ms(time: datetime) -> str:
    """Format an aware datetime as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC.

    Milliseconds are truncated, not rounded, so ``.9995`` never becomes the
    next second.

    Raises:
        ValueError: when ``time`` is naive (no tzinfo): its zone is unknown.
    """
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError(f"expected an aware datetime (with tzinfo), got naive {time!r}")
    utc = time.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def to_utc_ms(time: datetime) -> datetime:
    """``time`` in UTC, truncated to whole milliseconds (the wire precision),
    so an object equals itself after a JSON round trip.

    Raises:
        ValueError: when ``time`` is naive.
    """
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError(f"expected an aware datetime (with tzinfo), got naive {time!r}")
    utc = time.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def parse_utc(text: object, field: str = "time") -> datetime:
    """Parse an ISO 8601 timestamp with an offset (``Z`` or ``+hh:mm``) to UTC.

    Raises:
        ValueError: naming ``field`` when ``text`` is not such a string.
    """
    if not isinstance(text, str):
        raise ValueError(f"field {field!r}: expected an ISO 8601 UTC string, got {text!r}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"field {field!r}: not ISO 8601: {text[:40]!r}") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"field {field!r}: timestamp has no UTC offset: {text[:40]!r}")
    return parsed.astimezone(UTC)


def utc_from_timestamp(t_s: float) -> datetime:
    """An aware UTC datetime from POSIX seconds (e.g. ``time.time()``)."""
    return datetime.fromtimestamp(t_s, tz=UTC)


def encode_object(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (not valid JSON)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def decode_object(data: bytes | bytearray | str, what: str) -> dict[str, Any]:
    """Decode a JSON object.

    Raises:
        ValueError: naming ``what`` when ``data`` is not UTF-8 JSON holding
            an object.
    """
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what}: not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def req_str(obj: Mapping[str, Any], field: str) -> str:
    """``obj[field]`` as a string; ValueError naming the field otherwise."""
    value = obj.get(field)
    if not isinstance(value, str):
        raise ValueError(f"field {field!r}: expected a string, got {value!r:.40}")
    return value


def req_bool(obj: Mapping[str, Any], field: str) -> bool:
    """``obj[field]`` as a bool; ValueError naming the field otherwise."""
    value = obj.get(field)
    if not isinstance(value, bool):
        raise ValueError(f"field {field!r}: expected true/false, got {value!r:.40}")
    return value


def opt_float(obj: Mapping[str, Any], field: str) -> float | None:
    """``obj[field]`` as a finite float, or None when absent or null."""
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"field {field!r}: expected a number or null, got {value!r:.40}")
    return float(value)


def req_float(obj: Mapping[str, Any], field: str) -> float:
    """``obj[field]`` as a finite float; ValueError naming the field otherwise."""
    value = opt_float(obj, field)
    if value is None:
        raise ValueError(f"field {field!r}: expected a number, got null or nothing")
    return value


def opt_int(obj: Mapping[str, Any], field: str) -> int | None:
    """``obj[field]`` as an int, or None when absent or null."""
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {field!r}: expected an integer or null, got {value!r:.40}")
    return value


def finite_or_none(value: float | None) -> float | None:
    """NaN/inf become None (JSON null): 'not applicable' rather than a crash."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
