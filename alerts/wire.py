"""Helpers shared by the JSON wire formats: bounded decoding, UTC timestamps, field readers.

Everything received from the broker is untrusted: a payload is decoded under
size, depth, item-count and number limits (:class:`PayloadLimits`), and every
reader raises :class:`PayloadError` (a ``ValueError``) that names the field
and carries a :class:`DropReason`, so a consumer can count the drop per
reason and carry on. No input makes these helpers raise anything else
(``RecursionError`` and ``OverflowError`` included).

Timestamps on the wire are ISO 8601 UTC with milliseconds and a ``Z``
(``2026-11-24T08:15:02.120Z``).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from common.ids import ID_PATTERN

__all__ = [
    "MIN_WIRE_TIME_S",
    "DropReason",
    "PayloadError",
    "PayloadLimits",
    "decode_object",
    "encode_object",
    "finite_or_none",
    "format_utc_ms",
    "opt_float",
    "opt_int",
    "parse_utc",
    "req_bool",
    "req_float",
    "req_id",
    "req_str",
    "to_utc_ms",
    "utc_from_timestamp",
]

# Nothing of ours was ever stamped before 2000-01-01: an earlier time is a
# broken clock (or a hostile payload such as year 1, which overflows UTC).
MIN_WIRE_TIME_S = 946_684_800.0
_MAX_NUMBER_CHARS = 40  # a float's repr is <= 24 characters; 40 leaves room


class DropReason(enum.StrEnum):
    """Why a received message was dropped (the counters' keys)."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"
    TOO_MANY_ITEMS = "too_many_items"
    BAD_NUMBER = "bad_number"
    BAD_FIELD = "bad_field"
    BAD_ID = "bad_id"
    BAD_TIME = "bad_time"
    FUTURE_TIME = "future_time"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_TYPE = "unknown_type"
    OVER_CAPACITY = "over_capacity"
    HANDLER_ERROR = "handler_error"


class PayloadError(ValueError):
    """A payload breaks the contract; ``reason`` says how (for the drop counters)."""

    def __init__(self, message: str, reason: DropReason = DropReason.BAD_FIELD) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PayloadLimits:
    """Bounds a payload must stay within before and while it is decoded.

    Attributes:
        max_bytes: payload size, bytes.
        max_depth: nesting of objects/arrays (a flat object has depth 1).
        max_items: object members plus array elements, in total.
        max_string_chars: length of any one string (key or value).
    """

    max_bytes: int = 16 * 1024
    max_depth: int = 4
    max_items: int = 500
    max_string_chars: int = 1024


def _fail(message: str, reason: DropReason = DropReason.BAD_FIELD) -> NoReturn:
    raise PayloadError(message, reason)


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

    How far ahead of the receiver's clock a time may be is the receiver's
    judgement (``alerts.clock``, ``alerts.intake``), not the parser's.

    Raises:
        PayloadError: naming ``field`` (reason BAD_TIME) when ``text`` is not
            such a string, is before 2000 or cannot be placed in UTC (year 1
            with an offset overflows).
    """
    if not isinstance(text, str) or len(text) > 40:
        _fail(
            f"field {field!r}: expected an ISO 8601 UTC string, got {text!r:.40}",
            DropReason.BAD_TIME,
        )
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            _fail(f"field {field!r}: timestamp has no UTC offset: {text!r}", DropReason.BAD_TIME)
        utc = parsed.astimezone(UTC)
        t_s = utc.timestamp()
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, PayloadError):
            raise
        _fail(f"field {field!r}: not a usable ISO 8601 time: {text!r}", DropReason.BAD_TIME)
    if t_s < MIN_WIRE_TIME_S:
        _fail(f"field {field!r}: {text!r} is before 2000", DropReason.BAD_TIME)
    return utc


def utc_from_timestamp(t_s: float) -> datetime:
    """An aware UTC datetime from POSIX seconds (e.g. ``time.time()``)."""
    return datetime.fromtimestamp(t_s, tz=UTC)


def encode_object(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (not valid JSON)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def _parse_int(text: str) -> int:
    # Python would build a 4,000-digit int; no field of ours needs 20 digits.
    if len(text) > 20:
        _fail(f"number with {len(text)} digits", DropReason.BAD_NUMBER)
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > _MAX_NUMBER_CHARS:
        _fail(f"number of {len(text)} characters", DropReason.BAD_NUMBER)
    value = float(text)
    if not math.isfinite(value):  # 1e400 decodes to inf
        _fail(f"number out of range: {text[:40]}", DropReason.BAD_NUMBER)
    return value


def _parse_constant(text: str) -> NoReturn:
    _fail(f"{text} is not a JSON number", DropReason.BAD_NUMBER)


def _check_shape(obj: object, limits: PayloadLimits, what: str) -> None:
    """Walk the decoded value iteratively: depth, item count, string lengths."""
    items = 0
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limits.max_depth:
                _fail(f"{what}: nested deeper than {limits.max_depth}", DropReason.TOO_DEEP)
            items += len(value)
            if items > limits.max_items:
                _fail(f"{what}: more than {limits.max_items} items", DropReason.TOO_MANY_ITEMS)
            if isinstance(value, dict):
                for key in value:
                    if len(key) > limits.max_string_chars:
                        _fail(f"{what}: a key of {len(key)} characters", DropReason.TOO_LARGE)
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str) and len(value) > limits.max_string_chars:
            _fail(f"{what}: a string of {len(value)} characters", DropReason.TOO_LARGE)


def decode_object(
    data: bytes | bytearray | str, what: str, limits: PayloadLimits | None = None
) -> dict[str, Any]:
    """Decode a JSON object under ``limits`` (default :class:`PayloadLimits`).

    Raises:
        PayloadError: naming ``what`` when ``data`` is too large, not UTF-8
            JSON, nested too deep, has too many items, a number that is not
            a finite float or an integer of at most 20 digits, or is not an
            object.
    """
    limits = limits or PayloadLimits()
    if len(data) > limits.max_bytes:
        _fail(f"{what}: {len(data)} bytes, limit {limits.max_bytes}", DropReason.TOO_LARGE)
    try:
        obj = json.loads(
            data,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except PayloadError as exc:
        raise PayloadError(f"{what}: {exc}", exc.reason) from None
    except RecursionError:
        _fail(f"{what}: nested deeper than {limits.max_depth}", DropReason.TOO_DEEP)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        _fail(f"{what}: not valid UTF-8 JSON: {str(exc)[:80]}", DropReason.NOT_JSON)
    if not isinstance(obj, dict):
        _fail(f"{what}: expected a JSON object, got {type(obj).__name__}", DropReason.NOT_JSON)
    _check_shape(obj, limits, what)
    return obj


def req_str(obj: Mapping[str, Any], field: str, max_chars: int = 128) -> str:
    """``obj[field]`` as a string of at most ``max_chars``; PayloadError otherwise."""
    value = obj.get(field)
    if not isinstance(value, str) or len(value) > max_chars:
        _fail(f"field {field!r}: expected a string of <= {max_chars} characters, got {value!r:.40}")
    return value


def req_id(obj: Mapping[str, Any], field: str) -> str:
    """``obj[field]`` as an id (``[A-Za-z0-9_-]{1,64}``); PayloadError (BAD_ID) otherwise."""
    value = obj.get(field)
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        _fail(
            f"field {field!r}: expected 1-64 of A-Z a-z 0-9 '_' '-', got {value!r:.40}",
            DropReason.BAD_ID,
        )
    return value


def req_bool(obj: Mapping[str, Any], field: str) -> bool:
    """``obj[field]`` as a bool; PayloadError naming the field otherwise."""
    value = obj.get(field)
    if not isinstance(value, bool):
        _fail(f"field {field!r}: expected true/false, got {value!r:.40}")
    return value


def opt_float(
    obj: Mapping[str, Any],
    field: str,
    low: float = -math.inf,
    high: float = math.inf,
) -> float | None:
    """``obj[field]`` as a finite float within ``low..high``, or None when absent or null."""
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"field {field!r}: expected a number or null, got {value!r:.40}")
    try:
        number = float(value)
    except OverflowError:
        _fail(f"field {field!r}: number out of range", DropReason.BAD_NUMBER)
    if not (math.isfinite(number) and low <= number <= high):
        _fail(
            f"field {field!r}: expected {low:g}..{high:g}, got {number:.6g}", DropReason.BAD_NUMBER
        )
    return number


def req_float(
    obj: Mapping[str, Any],
    field: str,
    low: float = -math.inf,
    high: float = math.inf,
) -> float:
    """``obj[field]`` as a finite float within ``low..high``; PayloadError otherwise."""
    value = opt_float(obj, field, low, high)
    if value is None:
        _fail(f"field {field!r}: expected a number, got null or nothing")
    return value


def opt_int(
    obj: Mapping[str, Any], field: str, low: int | None = None, high: int | None = None
) -> int | None:
    """``obj[field]`` as an int within ``low..high``, or None when absent or null
    (a float with an integer value, e.g. ``76.0``, is that integer)."""
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"field {field!r}: expected an integer or null, got {value!r:.40}")
    if (low is not None and value < low) or (high is not None and value > high):
        _fail(f"field {field!r}: expected {low}..{high}, got {value}", DropReason.BAD_NUMBER)
    return value


def finite_or_none(value: float | None) -> float | None:
    """NaN/inf become None (JSON null): 'not applicable' rather than a crash."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
