"""The clinic report of one patient's day: fetched from the broker, written as HTML or PNG.

The dashboard publishes every day's summary retained on
``{root}/patients/{id}/summary/{YYYY-MM-DD}`` and the newest on
``{root}/patients/{id}/summary``; the report reads one of them, so it shows
exactly what the dashboard showed. HTML (with the same inline SVG plot as the
dashboard) needs nothing extra; PNG needs matplotlib (the ``report`` extra).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import date, datetime
from html import escape
from pathlib import Path
from zoneinfo import ZoneInfo

from alerts.intake import DropCounter, read_message
from alerts.mqtt import MqttClient, MqttSettings
from alerts.summary import DailySummary, FallRecord
from alerts.topics import Topics
from alerts.wire import PayloadError
from common.errors import ConfigError, PostureMonitorError
from common.ids import ID_PATTERN
from physio.dashboard.dayplot import CATEGORY_COLORS, dominant_categories, render_day_svg

__all__ = [
    "BadSummaryError",
    "MissingExtraError",
    "SummaryNotFoundError",
    "fetch_summary",
    "render_html",
    "render_png",
    "write_report",
]

_log = logging.getLogger(__name__)


class SummaryNotFoundError(PostureMonitorError, LookupError):
    """The broker holds no summary for that patient and day."""


class MissingExtraError(PostureMonitorError, ImportError):
    """An optional dependency is not installed (the message says which extra)."""


class BadSummaryError(PostureMonitorError, ValueError):
    """The retained message is not a daily summary of the contract (it was dropped)."""


async def fetch_summary(
    settings: MqttSettings,
    patient_id: str,
    day: date | None = None,
    topic_root: str = "posture/v1",
    timeout_s: float = 5.0,
) -> DailySummary:
    """Read a retained daily summary from the broker.

    Args:
        day: the local day; None for the newest one published.
        timeout_s: how long to wait for the retained message, s.

    Raises:
        ConfigError: an invalid patient id.
        BrokerError: the broker cannot be reached.
        SummaryNotFoundError: nothing retained for that patient and day.
        BadSummaryError: the retained message breaks the contract (too large,
            not a summary, another patient's...); it is logged and counted.
    """
    if ID_PATTERN.fullmatch(patient_id) is None:
        raise ConfigError(
            f"invalid patient id {patient_id!r}: expected 1-64 characters from A-Z a-z 0-9 '_' '-'"
        )
    topics = Topics(topic_root)
    topic = (
        topics.summary_archive(patient_id, day.isoformat())
        if day is not None
        else topics.summary(patient_id)
    )
    drops = DropCounter(_log)
    async with MqttClient(settings, clean_start=True) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(timeout_s):
                async for message in client.messages():
                    if message.topic != topic or not message.payload:
                        continue
                    try:
                        inbound = read_message(
                            topics,
                            message.topic,
                            message.payload,
                            retained=message.retain,
                            received_s=time.time(),
                        )
                    except PayloadError as exc:
                        drops.drop(exc.reason, topics.parse(message.topic), str(exc))
                        raise BadSummaryError(
                            f"the summary on {topic} is unusable ({exc.reason}): {exc}"
                        ) from None
                    if inbound is not None and isinstance(inbound.payload, DailySummary):
                        return inbound.payload
        except TimeoutError:
            pass
    when = day.isoformat() if day is not None else "any day"
    raise SummaryNotFoundError(
        f"no summary of patient {patient_id} for {when} on the broker ({topic}); the "
        "dashboard publishes one while it receives that patient's data"
    )


def _fmt(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _totals_rows(summary: DailySummary) -> list[tuple[str, str]]:
    t = summary.totals()
    return [
        ("Wear time (wearable connected)", _fmt(t.worn_min, " min")),
        ("Upright", f"{_fmt(t.upright_min, ' min')} ({_fmt(t.upright_pct, ' %')})"),
        ("Slouched", f"{_fmt(t.slouched_min, ' min')} ({_fmt(t.slouched_pct, ' %')})"),
        ("Moving or walking", _fmt(t.active_min, " min")),
        ("Lying", _fmt(t.lying_min, " min")),
        ("Slouch episodes", _fmt(t.slouch_episodes)),
        (
            "Mean / longest episode",
            f"{_fmt(t.slouch_mean_min, ' min')} / {_fmt(t.slouch_longest_min, ' min')}",
        ),
        (
            "Falls",
            _fmt(t.falls)
            + (f" (+{t.falls_cancelled} cancelled by the wearable)" if t.falls_cancelled else ""),
        ),
        ("Slouch threshold", _fmt(summary.threshold_deg, "°")),
    ]


def render_html(summary: DailySummary) -> str:
    """A self-contained HTML page (inline CSS and SVG, no script, no network)."""
    zone = ZoneInfo(summary.timezone)

    def clock(t_s: float) -> str:
        return datetime.fromtimestamp(t_s, zone).strftime("%H:%M:%S")

    rows = "\n".join(
        f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in _totals_rows(summary)
    )
    episodes = (
        "\n".join(
            f"<tr><td>{clock(e.start_s)}</td><td>{e.duration_s / 60:.1f} min"
            f"{' (ongoing)' if e.open else ''}</td></tr>"
            for e in summary.episodes
        )
        or '<tr><td colspan="2">none</td></tr>'
    )
    falls = (
        "\n".join(_fall_row(f, clock) for f in summary.falls)
        or '<tr><td colspan="4">none</td></tr>'
    )
    title = f"Posture report: {summary.patient_id}, {summary.day.isoformat()}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2rem; color: #1f2933; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
th, td {{ text-align: left; padding: .25rem 1rem .25rem 0; border-bottom: 1px solid #ddd; }}
.muted {{ color: #6b7280; }}
@media print {{ body {{ margin: 0; }} }}
</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="muted">Day in time zone {escape(summary.timezone)}; data up to
{escape(datetime.fromtimestamp(summary.updated_s, zone).strftime("%Y-%m-%d %H:%M"))}.
Upright and slouched percentages are shares of the time sitting or standing.</p>
<table>{rows}</table>
{render_day_svg(summary)}
<h2>Slouch episodes</h2>
<table><tr><th>start</th><th>length</th></tr>{episodes}</table>
<h2>Falls</h2>
<table><tr><th>time</th><th>outcome</th><th>acknowledged</th><th>resolved</th></tr>
{falls}</table>
</body></html>
"""


def _fall_row(fall: FallRecord, clock: Callable[[float], str]) -> str:
    def handled(by: str | None, t_s: float | None) -> str:
        if by is None or t_s is None:
            return "no"
        return escape(f"by {by} after {max(0.0, t_s - fall.time_s) / 60:.1f} min")

    outcome = "cancelled by the wearable" if fall.cancelled else "fall"
    if fall.escalation_level:
        outcome += f", escalated (level {fall.escalation_level})"
    return (
        f"<tr><td>{clock(fall.time_s)}</td><td>{outcome}</td>"
        f"<td>{handled(fall.acknowledged_by, fall.acknowledged_s)}</td>"
        f"<td>{handled(fall.resolved_by, fall.resolved_s)}</td></tr>"
    )


def render_png(summary: DailySummary, path: Path) -> None:
    """Draw the report as a PNG with matplotlib.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError(
            "PNG reports need matplotlib: pip install 'posture-monitor[report]' "
            "(or write the report as .html, which needs nothing)"
        ) from exc
    zone = ZoneInfo(summary.timezone)
    hours = [(i + 0.5) * summary.bin_s / 3600 for i in range(summary.n_bins)]
    figure = plt.figure(figsize=(11, 6.5), dpi=100)
    try:
        grid = figure.add_gridspec(3, 1, height_ratios=[0.35, 3, 2.2], hspace=0.35)
        strip, plot, text = (figure.add_subplot(grid[i]) for i in range(3))
        width_h = summary.bin_s / 3600
        for hour, category in zip(hours, dominant_categories(summary), strict=True):
            if category is not None:
                strip.bar(hour, 1, width=width_h, color=CATEGORY_COLORS[category], linewidth=0)
        for axes in (strip, plot):
            axes.set_xlim(0, summary.n_bins * width_h)
            axes.set_xticks(range(0, 25, 3))
        strip.set_yticks([])
        strip.set_title(
            f"Posture report: {summary.patient_id}, {summary.day.isoformat()} ({summary.timezone})",
            loc="left",
        )
        flexion = [float("nan") if v is None else v for v in summary.flexion_mean_deg]
        plot.plot(hours, flexion, color="#0072b2", linewidth=1, label="mean flexion")
        for episode in summary.episodes:
            start_h = (episode.start_s - summary.day_start_s) / 3600
            plot.axvspan(
                start_h,
                start_h + max(episode.duration_s, 30) / 3600,
                color=CATEGORY_COLORS["slouched_s"],
                alpha=0.25,
                linewidth=0,
            )
        if summary.threshold_deg is not None:
            plot.axhline(
                summary.threshold_deg,
                color="#d55e00",
                linestyle="--",
                label=f"slouch threshold {summary.threshold_deg:g}°",
            )
        for fall in summary.falls:
            plot.axvline(
                (fall.time_s - summary.day_start_s) / 3600,
                color="#999999" if fall.cancelled else "#c00000",
                linewidth=2,
                label=f"fall {datetime.fromtimestamp(fall.time_s, zone):%H:%M}"
                + (" (cancelled)" if fall.cancelled else ""),
            )
        plot.set_ylabel("flexion (°)")
        plot.set_xlabel("hour of day")
        plot.legend(loc="upper right", fontsize=8)
        text.axis("off")
        text.table(
            cellText=[[k, v] for k, v in _totals_rows(summary)],
            loc="upper left",
            cellLoc="left",
            colWidths=[0.35, 0.4],
            edges="horizontal",
        )
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)


def write_report(summary: DailySummary, out: Path) -> None:
    """Write ``out`` as HTML (``.html``/``.htm``) or PNG (``.png``).

    Raises:
        ConfigError: another file extension, or the file cannot be written.
        MissingExtraError: PNG without matplotlib.
    """
    suffix = out.suffix.lower()
    if suffix not in (".html", ".htm", ".png"):
        raise ConfigError(f"{out}: the report must end in .html or .png")
    try:
        if suffix == ".png":
            render_png(summary, out)
        else:
            out.write_text(render_html(summary), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the report: {exc.strerror}") from exc
    _log.info("report written to %s", out)
