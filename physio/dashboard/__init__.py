"""The physiotherapist's web dashboard, fall escalation, daily summaries and clinic reports.

See docs/dashboard.md. Consumes only the MQTT contract of docs/architecture.md
through ``alerts.mqtt.MqttClient``; publishes acks, escalations and daily
summaries.
"""

from physio.dashboard.auth import TOKEN_ENV, Credentials, hash_secret, verify_secret
from physio.dashboard.cli import configure_parser, configure_report_parser, run, run_report
from physio.dashboard.escalation import Escalation, EscalationPolicy, Escalator
from physio.dashboard.model import DashboardModel
from physio.dashboard.report import (
    MissingExtraError,
    SummaryNotFoundError,
    fetch_summary,
    render_html,
    render_png,
    write_report,
)
from physio.dashboard.service import DashboardConfig, DashboardService
from physio.dashboard.summary import DailySummary, FallRecord, SlouchEpisode, SummaryTotals
from physio.dashboard.summary_book import SummaryBook
from physio.dashboard.wire import TopicMap, WireFormatError

__all__ = [
    "TOKEN_ENV",
    "Credentials",
    "DailySummary",
    "DashboardConfig",
    "DashboardModel",
    "DashboardService",
    "Escalation",
    "EscalationPolicy",
    "Escalator",
    "FallRecord",
    "MissingExtraError",
    "SlouchEpisode",
    "SummaryBook",
    "SummaryNotFoundError",
    "SummaryTotals",
    "TopicMap",
    "WireFormatError",
    "configure_parser",
    "configure_report_parser",
    "fetch_summary",
    "hash_secret",
    "render_html",
    "render_png",
    "run",
    "run_report",
    "verify_secret",
    "write_report",
]
