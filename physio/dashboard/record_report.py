"""``report`` from the alert record: the audit trail and CSV exports of one patient.

* :func:`audit_lines`: every event, acknowledgement, escalation, cancellation
  and resolution of the patient in a time range, with who, when and from where,
  as text lines (clinic time zone).
* :func:`write_alerts_csv`: one row per alert (its outcome and response times).
* :func:`write_days_csv`: one row per day of posture totals (from the daily
  summaries the dashboard stored).

Times in the CSV files are ISO 8601 UTC (``...Z``), so a spreadsheet in any
zone reads the same instants; durations are in minutes.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from alerts.summary import DailySummary, SummaryTotals, format_time
from physio.dashboard import record_ops as ops
from physio.dashboard.report import SummaryNotFoundError, write_report
from physio.dashboard.store import SqlStore

__all__ = [
    "ALERT_COLUMNS",
    "audit_lines",
    "day_range_s",
    "from_record",
    "write_alerts_csv",
    "write_days_csv",
]

ALERT_COLUMNS = (
    "event_id",
    "type",
    "severity",
    "time",
    "received",
    "gateway_id",
    "status",
    "acknowledged_by",
    "acknowledged",
    "minutes_to_acknowledge",
    "resolved_by",
    "resolved",
    "minutes_to_resolve",
    "escalation_level",
    "cancelled_by_wearable",
    "ended",
)


def day_range_s(first: date, last: date, zone: ZoneInfo) -> tuple[float, float]:
    """POSIX seconds from the start of ``first`` to the end of ``last`` in ``zone``."""
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(last + timedelta(days=1), time(), zone)
    return start.timestamp(), end.timestamp()


def _opt_time(t_s: float | None) -> str:
    return "" if t_s is None else format_time(t_s)


def _minutes(later_s: float | None, start_s: float) -> str:
    return "" if later_s is None else f"{max(0.0, later_s - start_s) / 60:.2f}"


def audit_lines(
    store: SqlStore, patient_id: str, first: date, last: date, zone: ZoneInfo
) -> list[str]:
    """The patient's audit trail, one line per action, oldest first."""
    since_s, until_s = day_range_s(first, last, zone)
    kinds = {a.event_id: a.type for a in ops.alerts_of(store, patient_id, since_s - 86400, until_s)}
    lines = []
    for entry in ops.actions_of(store, patient_id, since_s, until_s):
        when = datetime.fromtimestamp(entry.time_s, zone).strftime("%Y-%m-%d %H:%M:%S")
        what = entry.action
        if entry.action == "event":
            what = kinds.get(entry.event_id, "event")
        elif entry.action == "escalated":
            what = f"escalated (level {entry.level})"
        who = f" by {entry.by}" if entry.by else ""
        lines.append(f"{when}  {what}{who}  [{entry.source}]  alert {entry.event_id}")
    return lines


def write_alerts_csv(
    store: SqlStore, patient_id: str, first: date, last: date, zone: ZoneInfo, path: Path
) -> int:
    """Write the patient's alerts of those days as CSV; return how many rows."""
    since_s, until_s = day_range_s(first, last, zone)
    alerts = ops.alerts_of(store, patient_id, since_s, until_s)
    rows = (
        (
            a.event_id,
            a.type,
            a.severity,
            format_time(a.time_s),
            format_time(a.received_s),
            a.gateway_id,
            a.status,
            a.acknowledged_by or "",
            _opt_time(a.acknowledged_s),
            _minutes(a.acknowledged_s, a.time_s),
            a.resolved_by or "",
            _opt_time(a.resolved_s),
            _minutes(a.resolved_s, a.time_s),
            a.escalated_level,
            "yes" if a.cancelled_s is not None else "",
            _opt_time(a.ended_s),
        )
        for a in alerts
    )
    _write(path, ALERT_COLUMNS, rows)
    return len(alerts)


def write_days_csv(store: SqlStore, patient_id: str, first: date, last: date, path: Path) -> int:
    """Write one row of posture totals per stored day; return how many rows."""
    stored = ops.summaries_of(store, patient_id, first.isoformat(), last.isoformat())
    names = [f.name for f in dataclasses.fields(SummaryTotals)]
    rows = []
    for _day, text in stored:
        summary = DailySummary.from_json(text.encode())
        totals = dataclasses.asdict(summary.totals())
        rows.append(
            (
                summary.day.isoformat(),
                summary.timezone,
                "" if summary.threshold_deg is None else summary.threshold_deg,
                *("" if totals[n] is None else totals[n] for n in names),
            )
        )
    _write(path, ("day", "timezone", "slouch_threshold_deg", *names), rows)
    return len(rows)


def from_record(
    database: str,
    patient_id: str,
    *,
    first: date,
    last: date,
    zone: ZoneInfo,
    audit: bool = False,
    alerts_csv: Path | None = None,
    days_csv: Path | None = None,
    html_or_png: Path | None = None,
) -> list[str]:
    """What ``report`` does with the record; returns the lines to print.

    ``html_or_png`` writes the newest stored day up to ``last`` as the clinic report.

    Raises:
        StoreError: the database cannot be reached.
        SummaryNotFoundError: no stored day for ``html_or_png``.
        OSError: a file cannot be written.
    """
    out: list[str] = []
    store = SqlStore(database)
    try:
        if audit:
            lines = audit_lines(store, patient_id, first, last, zone)
            out.append(f"audit trail of {patient_id}, {first} to {last} ({zone.key}):")
            out += lines or ["(nothing recorded)"]
        if alerts_csv is not None:
            n = write_alerts_csv(store, patient_id, first, last, zone, alerts_csv)
            out.append(f"{n} alert(s) written to {alerts_csv}")
        if days_csv is not None:
            n = write_days_csv(store, patient_id, first, last, days_csv)
            out.append(f"{n} day(s) written to {days_csv}")
        if html_or_png is not None:
            stored = ops.summaries_of(store, patient_id, date.min.isoformat(), last.isoformat())
            if not stored:
                raise SummaryNotFoundError(
                    f"no summary of patient {patient_id} up to {last} in the alert record"
                )
            write_report(DailySummary.from_json(stored[-1][1].encode()), html_or_png)
            out.append(f"report written to {html_or_png}")
    finally:
        store.close()
    return out


def _cell(value: object) -> object:
    # A name from MQTT starting with "=" would be a formula in a spreadsheet.
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def _write(path: Path, header: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([_cell(v) for v in row] for row in rows)
