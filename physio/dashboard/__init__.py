"""The physiotherapist's web dashboard, fall escalation, daily summaries and clinic reports.

See docs/dashboard.md. Consumes only the MQTT contract of docs/architecture.md
through ``alerts.mqtt.MqttClient``; publishes acks, escalations and daily
summaries.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from physio.dashboard.auth import TOKEN_ENV, Credentials, hash_secret, verify_secret
    from physio.dashboard.cli import configure_parser, configure_report_parser, run, run_report
    from physio.dashboard.escalation import Escalation, EscalationPolicy, Escalator
    from physio.dashboard.model import DashboardModel
    from physio.dashboard.record import AlertRecord, default_database
    from physio.dashboard.report import (
        MissingExtraError,
        SummaryNotFoundError,
        fetch_summary,
        render_html,
        render_png,
        write_report,
    )
    from physio.dashboard.service import DashboardConfig, DashboardService
    from physio.dashboard.store import SqlStore, StoreError
    from physio.dashboard.summary_book import SummaryBook

__all__ = [
    "TOKEN_ENV",
    "AlertRecord",
    "Credentials",
    "DashboardConfig",
    "DashboardModel",
    "DashboardService",
    "Escalation",
    "EscalationPolicy",
    "Escalator",
    "MissingExtraError",
    "SqlStore",
    "StoreError",
    "SummaryBook",
    "SummaryNotFoundError",
    "configure_parser",
    "configure_report_parser",
    "default_database",
    "fetch_summary",
    "hash_secret",
    "render_html",
    "render_png",
    "run",
    "run_report",
    "verify_secret",
    "write_report",
]

# Each name's module is imported on first use (see common.lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TOKEN_ENV": "auth",
        "Credentials": "auth",
        "hash_secret": "auth",
        "verify_secret": "auth",
        "configure_parser": "cli",
        "configure_report_parser": "cli",
        "run": "cli",
        "run_report": "cli",
        "Escalation": "escalation",
        "EscalationPolicy": "escalation",
        "Escalator": "escalation",
        "DashboardModel": "model",
        "AlertRecord": "record",
        "default_database": "record",
        "SqlStore": "store",
        "StoreError": "store",
        "MissingExtraError": "report",
        "SummaryNotFoundError": "report",
        "fetch_summary": "report",
        "render_html": "report",
        "render_png": "report",
        "write_report": "report",
        "DashboardConfig": "service",
        "DashboardService": "service",
        "SummaryBook": "summary_book",
    },
)
