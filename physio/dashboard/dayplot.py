"""The plot of a patient's day as standalone SVG (no dependency).

The same drawing is served to the dashboard and embedded in the clinic
report, so both show one picture. Top: a strip with one cell per bin colored
by what the patient did most in it (upright, slouched, active, lying, worn but
unclassified, not worn). Below: mean flexion per bin against the slouch
threshold, slouch episodes as shaded spans and falls as red markers. The
x axis is local clock time of the clinic's day.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from alerts.summary import DailySummary

__all__ = ["CATEGORY_COLORS", "dominant_categories", "render_day_svg"]

# Colours chosen to stay apart for the common colour-vision deficiencies
# (Okabe-Ito palette); "not worn" stays blank.
CATEGORY_COLORS = {
    "upright_s": "#009e73",
    "slouched_s": "#e69f00",
    "active_s": "#56b4e9",
    "lying_s": "#cc79a7",
    "other": "#999999",
}
_LABELS = {
    "upright_s": "upright",
    "slouched_s": "slouched",
    "active_s": "moving/walking",
    "lying_s": "lying",
    "other": "worn, not classified",
}


def dominant_categories(summary: DailySummary) -> list[str | None]:
    """Per bin: the category with most seconds, ``"other"``, or None if not worn."""
    result: list[str | None] = []
    names = ("upright_s", "slouched_s", "active_s", "lying_s")
    for i in range(summary.n_bins):
        worn_s = summary.bins["worn_s"][i]
        if worn_s <= 0:
            result.append(None)
            continue
        seconds = {name: summary.bins[name][i] for name in names}
        seconds["other"] = max(0.0, worn_s - sum(seconds.values()))
        result.append(max(seconds, key=lambda k: seconds[k]))
    return result


def render_day_svg(summary: DailySummary, width: int = 960, height: int = 320) -> str:
    """The day plot as an ``<svg>`` element string (UTF-8 text, no XML prolog)."""
    zone = ZoneInfo(summary.timezone)
    left, right, top = 48, 12, 14
    strip_h, gap = 22, 16
    plot_top = top + strip_h + gap
    plot_h = height - plot_top - 48
    plot_w = width - left - right
    day_len_s = summary.n_bins * summary.bin_s
    values = [v for v in summary.flexion_mean_deg if v is not None]
    threshold = summary.threshold_deg
    y_max = max([45.0, *(abs(v) for v in values), *([threshold + 10] if threshold else [])])
    y_min = min([-10.0, *values])

    def x_of(t_s: float) -> float:
        return left + plot_w * min(max((t_s - summary.day_start_s) / day_len_s, 0.0), 1.0)

    def y_of(deg: float) -> float:
        return plot_top + plot_h * (y_max - deg) / (y_max - y_min)

    title = f"Posture of {summary.patient_id} on {summary.day.isoformat()}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}" class="dayplot" '
        f'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    cell_w = plot_w / summary.n_bins
    for i, category in enumerate(dominant_categories(summary)):
        if category is not None:
            out.append(
                f'<rect x="{left + i * cell_w:.2f}" y="{top}" width="{cell_w + 0.3:.2f}" '
                f'height="{strip_h}" fill="{CATEGORY_COLORS[category]}"/>'
            )
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{strip_h}" fill="none" '
        'stroke="#666"/>'
    )
    out.append(
        f'<rect x="{left}" y="{plot_top}" width="{plot_w}" height="{plot_h}" '
        'fill="#fafafa" stroke="#666"/>'
    )
    for episode in summary.episodes:
        x0 = x_of(episode.start_s)
        x1 = max(x_of(episode.start_s + episode.duration_s), x0 + 1.0)
        out.append(
            f'<rect class="episode" x="{x0:.2f}" y="{plot_top}" width="{x1 - x0:.2f}" '
            f'height="{plot_h}" fill="{CATEGORY_COLORS["slouched_s"]}" '
            'fill-opacity="0.25"/>'
        )
    for deg in _ticks(y_min, y_max):
        y = y_of(deg)
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{deg:g}°</text>')
    for hour in range(0, 25, 3):
        t_s = summary.day_start_s + hour * 3600
        x = x_of(t_s)
        label = (
            datetime.fromtimestamp(min(t_s, summary.day_start_s + day_len_s - 1), zone).strftime(
                "%H:%M"
            )
            if hour < 24
            else "24:00"
        )
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot_top + plot_h}" '
            f'y2="{plot_top + plot_h + 4}" stroke="#666"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{plot_top + plot_h + 16}" text-anchor="middle">{label}</text>'
        )
    if threshold is not None:
        y = y_of(threshold)
        out.append(
            f'<line class="threshold" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="#d55e00" stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{left + plot_w - 4}" y="{y - 4:.1f}" text-anchor="end" '
            f'fill="#d55e00">slouch threshold {threshold:g}°</text>'
        )
    out.extend(_flexion_path(summary, x_of, y_of))
    for fall in summary.falls:
        x = x_of(fall.time_s)
        color = "#999999" if fall.cancelled else "#c00000"
        label = "fall (cancelled)" if fall.cancelled else "fall"
        when = datetime.fromtimestamp(fall.time_s, zone).strftime("%H:%M")
        out.append(
            f'<g class="fall"><line x1="{x:.1f}" x2="{x:.1f}" y1="{plot_top}" '
            f'y2="{plot_top + plot_h}" stroke="{color}" stroke-width="2"/>'
            f'<text x="{x + 3:.1f}" y="{plot_top + 11}" fill="{color}">'
            f"{label} {when}</text></g>"
        )
    legend_y = height - 14
    x = float(left)
    for key, color in CATEGORY_COLORS.items():
        out.append(f'<rect x="{x:.0f}" y="{legend_y - 9}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14:.0f}" y="{legend_y}">{_LABELS[key]}</text>')
        x += 24 + 6.5 * len(_LABELS[key])
    out.append(
        f'<text x="{x:.0f}" y="{legend_y}">— mean flexion (°) per '
        f"{summary.bin_s // 60 or 1} min</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


def _flexion_path(
    summary: DailySummary, x_of: Callable[[float], float], y_of: Callable[[float], float]
) -> list[str]:
    segments: list[list[str]] = []
    current: list[str] = []
    for i, value in enumerate(summary.flexion_mean_deg):
        if value is None:
            if current:
                segments.append(current)
                current = []
            continue
        t_s = summary.day_start_s + (i + 0.5) * summary.bin_s
        current.append(f"{x_of(t_s):.1f},{y_of(value):.1f}")
    if current:
        segments.append(current)
    return [
        f'<polyline class="flexion" points="{" ".join(points)}" fill="none" '
        f'stroke="#0072b2" stroke-width="1.5"/>'
        if len(points) > 1
        else f'<circle class="flexion" cx="{points[0].split(",")[0]}" '
        f'cy="{points[0].split(",")[1]}" r="1.5" fill="#0072b2"/>'
        for points in segments
    ]


def _ticks(y_min: float, y_max: float) -> list[float]:
    step = 15.0 if y_max - y_min <= 120 else 30.0
    first = step * int(y_min // step)
    ticks = []
    value = first
    while value <= y_max:
        if value >= y_min:
            ticks.append(value)
        value += step
    return ticks
