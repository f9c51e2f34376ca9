"""A patient's daily summary: the value object, its totals, JSON and merge.

Published retained by the dashboard on ``{root}/patients/{id}/summary`` (the
newest day) and ``.../summary/YYYY-MM-DD``; read back by dashboards (a
restarted one restores its open falls from it) and by ``report``.

A day is a local calendar day in the clinic's time zone, cut into bins of
``bin_s`` seconds from local midnight (a day with a daylight-saving change
has 23 or 25 hours of bins). Each bin holds seconds of: data received
(``covered``), wearable connected (``worn``), upright and not slouched
(``upright``), slouched (``slouched``), moving or walking (``active``) and
lying (``lying``), and the mean flexion in degrees. Definitions used in the
totals (also in docs/dashboard.md):

* worn: the state said ``device_connected``;
* slouched: worn and ``slouching`` (whatever the activity);
* upright: worn, calibrated, activity ``upright`` and not slouching;
* upright % and slouched % are shares of upright + slouched time, the time
  the patient sat or stood, so walking and lying do not dilute them.

Slouch episodes come from ``slouch_started``/``slouch_ended`` events (their
event ids make them idempotent); falls from ``fall_detected`` events, with
``fall_cancelled`` marking the latest one as cancelled, and with their
escalation level and who acknowledged and resolved them when.

Summaries from several dashboards (or a restarted one) merge: bins keep the
version that covers more seconds, episodes and falls are unions by event id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alerts.wire import (
    DropReason,
    PayloadError,
    PayloadLimits,
    decode_object,
    encode_object,
    format_utc_ms,
    parse_utc,
    utc_from_timestamp,
)
from common.ids import ID_PATTERN

__all__ = [
    "BIN_FIELDS",
    "SUMMARY_LIMITS",
    "DailySummary",
    "FallRecord",
    "SlouchEpisode",
    "SummaryTotals",
    "day_bounds",
]

BIN_FIELDS = ("covered_s", "worn_s", "upright_s", "slouched_s", "active_s", "lying_s")
# A day at one bin a minute is 7 x 1,500 numbers, about 60 KB as published.
SUMMARY_LIMITS = PayloadLimits(max_bytes=512 * 1024, max_depth=4, max_items=40_000)
_BIN_RANGE_S = (10, 3600)
# A summary of a day later than the receiver's tomorrow is a wrong clock.
_MAX_DAYS_AHEAD = 1


def format_time(t_s: float) -> str:
    """POSIX seconds as the wire's ISO 8601 UTC with milliseconds and ``Z``."""
    return format_utc_ms(utc_from_timestamp(t_s))


def parse_time(text: object, field: str = "time") -> float:
    """The wire's ISO 8601 time as POSIX seconds. Raises PayloadError."""
    return parse_utc(text, field).timestamp()


def day_bounds(day: date, zone: ZoneInfo) -> tuple[float, float]:
    """POSIX seconds of local midnight starting ``day`` and the next one."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = start + timedelta(days=1)
    # Adding a timedelta to an aware datetime keeps the wall time, so the
    # difference of the timestamps is the real length of the day (23-25 h).
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True)
class SlouchEpisode:
    """One slouch episode; ``duration_s`` so far while ``open``."""

    event_id: str
    start_s: float
    duration_s: float
    open: bool


@dataclass(frozen=True)
class FallRecord:
    """One detected fall and how it was handled.

    The summary is retained on the broker, so this is also what a restarted
    dashboard restores its open falls from (nothing else about them is
    retained), and what the clinic report lists as response times.
    """

    event_id: str
    time_s: float
    cancelled: bool = False
    escalation_level: int = 0
    acknowledged_by: str | None = None
    acknowledged_s: float | None = None
    resolved_by: str | None = None
    resolved_s: float | None = None

    def combine(self, other: FallRecord) -> FallRecord:
        """Both views of one fall: cancelled if either says so, highest level,
        earliest acknowledgement and resolution."""
        ack = min(
            (r for r in (self, other) if r.acknowledged_s is not None),
            key=lambda r: r.acknowledged_s or 0.0,
            default=self,
        )
        res = min(
            (r for r in (self, other) if r.resolved_s is not None),
            key=lambda r: r.resolved_s or 0.0,
            default=self,
        )
        return replace(
            self,
            cancelled=self.cancelled or other.cancelled,
            escalation_level=max(self.escalation_level, other.escalation_level),
            acknowledged_by=ack.acknowledged_by,
            acknowledged_s=ack.acknowledged_s,
            resolved_by=res.resolved_by,
            resolved_s=res.resolved_s,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form inside a summary."""
        return {
            "event_id": self.event_id,
            "time": format_time(self.time_s),
            "cancelled": self.cancelled,
            "escalation_level": self.escalation_level,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged": _opt_time(self.acknowledged_s),
            "resolved_by": self.resolved_by,
            "resolved": _opt_time(self.resolved_s),
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> FallRecord:
        """Parse the JSON form (older summaries without handling fields are fine)."""
        level = int(obj.get("escalation_level") or 0)
        return cls(
            _event_id(obj["event_id"]),
            parse_time(obj["time"]),
            bool(obj.get("cancelled")),
            level if level in (0, 1, 2) else 0,
            _opt_str(obj.get("acknowledged_by")),
            parse_time(obj["acknowledged"]) if obj.get("acknowledged") else None,
            _opt_str(obj.get("resolved_by")),
            parse_time(obj["resolved"]) if obj.get("resolved") else None,
        )


@dataclass(frozen=True)
class SummaryTotals:
    """Totals of one day, in minutes, percent and counts."""

    monitored_min: float
    worn_min: float
    upright_min: float
    slouched_min: float
    active_min: float
    lying_min: float
    upright_pct: float | None
    slouched_pct: float | None
    slouch_episodes: int
    slouch_mean_min: float | None
    slouch_longest_min: float | None
    falls: int
    falls_cancelled: int


@dataclass(frozen=True)
class DailySummary:
    """Everything the dashboard and the clinic report show about one day.

    ``bins`` maps each name in :data:`BIN_FIELDS` to a tuple of ``n_bins``
    seconds; ``flexion_mean_deg`` has ``None`` where no angle was known.
    """

    patient_id: str
    day: date
    timezone: str
    day_start_s: float
    bin_s: int
    bins: dict[str, tuple[float, ...]]
    flexion_mean_deg: tuple[float | None, ...]
    episodes: tuple[SlouchEpisode, ...] = ()
    falls: tuple[FallRecord, ...] = ()
    threshold_deg: float | None = None
    updated_s: float = 0.0

    @property
    def n_bins(self) -> int:
        """Number of bins in this day."""
        return len(self.flexion_mean_deg)

    def totals(self) -> SummaryTotals:
        """Derived totals (minutes rounded to 0.1, percent to 0.1)."""
        sums = {name: sum(values) for name, values in self.bins.items()}
        upright_s, slouched_s = sums["upright_s"], sums["slouched_s"]
        seated_s = upright_s + slouched_s
        lengths = [e.duration_s for e in self.episodes]
        return SummaryTotals(
            monitored_min=_min(sums["covered_s"]),
            worn_min=_min(sums["worn_s"]),
            upright_min=_min(upright_s),
            slouched_min=_min(slouched_s),
            active_min=_min(sums["active_s"]),
            lying_min=_min(sums["lying_s"]),
            upright_pct=round(100.0 * upright_s / seated_s, 1) if seated_s > 0 else None,
            slouched_pct=round(100.0 * slouched_s / seated_s, 1) if seated_s > 0 else None,
            slouch_episodes=len(self.episodes),
            slouch_mean_min=_min(sum(lengths) / len(lengths)) if lengths else None,
            slouch_longest_min=_min(max(lengths)) if lengths else None,
            falls=sum(1 for f in self.falls if not f.cancelled),
            falls_cancelled=sum(1 for f in self.falls if f.cancelled),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object published on ``.../summary`` (see docs/dashboard.md)."""
        totals = self.totals()
        return {
            "patient_id": self.patient_id,
            "day": self.day.isoformat(),
            "timezone": self.timezone,
            "updated": format_time(self.updated_s),
            "threshold_deg": self.threshold_deg,
            "totals": totals.__dict__,
            "episodes": [
                {
                    "event_id": e.event_id,
                    "start": format_time(e.start_s),
                    "duration_s": round(e.duration_s, 1),
                    "open": e.open,
                }
                for e in self.episodes
            ],
            "falls": [f.to_dict() for f in self.falls],
            "bins": {
                "start": format_time(self.day_start_s),
                "bin_s": self.bin_s,
                **{name: [_num(v) for v in values] for name, values in self.bins.items()},
                "flexion_mean_deg": [None if v is None else _num(v) for v in self.flexion_mean_deg],
            },
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON of :meth:`to_dict`."""
        return encode_object(self.to_dict())

    @classmethod
    def from_json(
        cls, payload: bytes, now_s: float | None = None, max_future_s: float = 120.0
    ) -> DailySummary:
        """Parse a published summary (under :data:`SUMMARY_LIMITS`).

        Args:
            now_s: the receiver's clock, POSIX s; when given, a summary of a
                day after tomorrow or updated more than ``max_future_s`` ahead
                is refused.

        Raises:
            PayloadError: the payload is not a daily summary of the contract.
        """
        obj = decode_object(payload, "daily summary", SUMMARY_LIMITS)
        try:
            summary = cls._from_obj(obj)
        except PayloadError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as exc:
            raise PayloadError(f"not a daily summary: {str(exc)[:120]}") from None
        if now_s is not None and (
            summary.day_start_s > now_s + _MAX_DAYS_AHEAD * 86400.0
            or summary.updated_s > now_s + max_future_s
        ):
            raise PayloadError(
                f"daily summary of {summary.day.isoformat()} is ahead of this clock",
                DropReason.FUTURE_TIME,
            )
        return summary

    @classmethod
    def _from_obj(cls, obj: dict[str, Any]) -> DailySummary:
        bins = obj["bins"]
        bin_s = bins["bin_s"]
        if not isinstance(bin_s, int) or not _BIN_RANGE_S[0] <= bin_s <= _BIN_RANGE_S[1]:
            raise PayloadError(
                f"summary bin_s must be an integer {_BIN_RANGE_S}, got {bin_s!r:.20}"
            )
        patient_id = obj["patient_id"]
        if not isinstance(patient_id, str) or ID_PATTERN.fullmatch(patient_id) is None:
            raise PayloadError("summary patient_id is not an id", DropReason.BAD_ID)
        zone = ZoneInfo(str(obj["timezone"])[:64])
        day = date.fromisoformat(str(obj["day"])[:10])
        start_s, end_s = day_bounds(day, zone)
        if abs(parse_time(bins["start"]) - start_s) > 1e-3:
            raise PayloadError("summary bins do not start at the day's local midnight")
        n_bins = math.ceil((end_s - start_s) / bin_s)
        values = {name: tuple(float(v) for v in bins[name]) for name in BIN_FIELDS}
        flexion = tuple(None if v is None else float(v) for v in bins["flexion_mean_deg"])
        if any(len(v) != n_bins for v in (*values.values(), flexion)):
            raise PayloadError(f"summary bins must have {n_bins} values each")
        if any(
            not math.isfinite(v) or v < 0 or v > bin_s + 1e-6
            for series in values.values()
            for v in series
        ):
            raise PayloadError(f"summary bin seconds must be within 0..{bin_s}")
        if any(v is not None and not -180.0 <= v <= 180.0 for v in flexion):
            raise PayloadError("summary flexion must be within ±180°")
        threshold = obj.get("threshold_deg")
        if threshold is not None and not 0.0 <= float(threshold) <= 90.0:
            raise PayloadError("summary threshold_deg must be within 0-90°")
        return cls(
            patient_id=patient_id,
            day=day,
            timezone=str(obj["timezone"]),
            day_start_s=start_s,
            bin_s=bin_s,
            bins=values,
            flexion_mean_deg=flexion,
            episodes=tuple(
                SlouchEpisode(
                    _event_id(e["event_id"]),
                    parse_time(e["start"]),
                    float(e["duration_s"]),
                    bool(e.get("open", False)),
                )
                for e in obj.get("episodes", [])
            ),
            falls=tuple(FallRecord.from_dict(f) for f in obj.get("falls", [])),
            threshold_deg=None if threshold is None else float(threshold),
            updated_s=parse_time(obj["updated"]) if obj.get("updated") else 0.0,
        )

    def merge(self, other: DailySummary, keep_bins_from: int | None = None) -> DailySummary:
        """Combine two views of the same patient and day.

        For each bin the version covering more seconds wins (ties keep
        ``self``); bins at or after ``keep_bins_from`` always keep ``self``
        (the bin still being filled). Episodes and falls are unions by event
        id; a closed episode beats an open one; two views of a fall combine.

        Raises:
            ValueError: different patient, day, time zone or bin width.
        """
        if (self.patient_id, self.day, self.timezone, self.bin_s) != (
            other.patient_id,
            other.day,
            other.timezone,
            other.bin_s,
        ):
            raise ValueError("can only merge summaries of the same patient, day, zone and bins")
        limit = self.n_bins if keep_bins_from is None else max(0, min(keep_bins_from, self.n_bins))
        take = [
            i < limit and other.bins["covered_s"][i] > self.bins["covered_s"][i]
            for i in range(self.n_bins)
        ]
        bins = {
            name: tuple(
                o if t else s for s, o, t in zip(values, other.bins[name], take, strict=True)
            )
            for name, values in self.bins.items()
        }
        flexion = tuple(
            o if t else s
            for s, o, t in zip(self.flexion_mean_deg, other.flexion_mean_deg, take, strict=True)
        )
        episodes = {e.event_id: e for e in self.episodes}
        for e in other.episodes:
            mine = episodes.get(e.event_id)
            if mine is None or (mine.open and (not e.open or e.duration_s > mine.duration_s)):
                episodes[e.event_id] = e
        falls = {f.event_id: f for f in self.falls}
        for f in other.falls:
            mine_fall = falls.get(f.event_id)
            falls[f.event_id] = f if mine_fall is None else mine_fall.combine(f)
        return replace(
            self,
            bins=bins,
            flexion_mean_deg=flexion,
            episodes=tuple(sorted(episodes.values(), key=lambda e: e.start_s)),
            falls=tuple(sorted(falls.values(), key=lambda f: f.time_s)),
            threshold_deg=self.threshold_deg
            if self.threshold_deg is not None
            else other.threshold_deg,
            updated_s=max(self.updated_s, other.updated_s),
        )


def _min(seconds: float) -> float:
    return round(seconds / 60.0, 1)


def _num(value: float) -> float | int:
    # Most bins are 0 or 60 s: writing them as integers keeps the retained
    # message about a third smaller.
    rounded = round(value, 1)
    return int(rounded) if rounded.is_integer() else rounded


def _opt_time(t_s: float | None) -> str | None:
    return None if t_s is None else format_time(t_s)


def _event_id(value: object) -> str:
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise PayloadError("summary names an event by an invalid id", DropReason.BAD_ID)
    return value


def _opt_str(value: object) -> str | None:
    return value[:128] if isinstance(value, str) else None
