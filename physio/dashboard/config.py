"""The dashboard's settings, validated once (the CLI builds them from arguments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from alerts.clock import ClockPolicy
from alerts.mqtt import MqttSettings
from alerts.topics import validate_topic_root
from common.errors import ConfigError
from physio.dashboard.auth import Credentials, is_loopback_host
from physio.dashboard.escalation import EscalationPolicy
from physio.dashboard.patients import PatientDirectory
from physio.dashboard.site import NotifySettings

__all__ = ["DashboardConfig"]


@dataclass(frozen=True)
class DashboardConfig:
    """Everything the dashboard needs; built by the CLI, validated here.

    Attributes:
        broker: MQTT connection settings.
        listen_host, listen_port: HTTP address (port 0 picks a free one).
        topic_root: MQTT topic root.
        escalation: when unacknowledged falls escalate.
        credentials: logins; required unless listening on loopback.
        timezone: IANA zone of the clinic; days of the summaries are its days.
        history_s: seconds of flexion history per tile chart.
        summary_interval_s: how often changed summaries are published, s.
        keep_archive_days: per-day retained summaries older than this are cleared.
        client_id: MQTT client id (default from host name and port).
        database: the alert record: a SQLite file, ``:memory:`` (nothing
            survives the process; for tests and embedders) or a
            ``postgresql://`` URL shared by several dashboard instances.
        max_patients, max_patients_per_gateway: patients remembered in total
            and per gateway; messages about more are dropped and counted
            (bounds the memory made-up ids can take).
        clock_policy: how far senders' clocks are trusted (``alerts.clock``).
        notify: who gets escalation notices (webhooks, Apprise) and retries.
        patients: display names and rooms/beds, shown only on the page.
        allowed_hosts: host names browsers may use besides the localhost
            names and ``listen_host`` (a foreign ``Host`` is refused: DNS
            rebinding).
        session_lifetime_s: how long a login lasts, s.
    """

    broker: MqttSettings
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    topic_root: str = "posture/v1"
    escalation: EscalationPolicy = field(default_factory=EscalationPolicy)
    credentials: Credentials = field(default_factory=Credentials)
    timezone: str = "UTC"
    history_s: float = 300.0
    summary_interval_s: float = 60.0
    keep_archive_days: int = 31
    client_id: str | None = None
    database: str = ":memory:"
    max_patients: int = 2000
    max_patients_per_gateway: int = 500
    clock_policy: ClockPolicy = field(default_factory=ClockPolicy)
    notify: NotifySettings = field(default_factory=NotifySettings)
    patients: PatientDirectory = field(default_factory=PatientDirectory.empty)
    allowed_hosts: tuple[str, ...] = ()
    session_lifetime_s: float = 12 * 3600.0

    def __post_init__(self) -> None:
        if not 0 <= self.listen_port < 65536:
            raise ConfigError(f"listen port must be 0-65535, got {self.listen_port}")
        try:
            ZoneInfo(self.timezone)
        except (ValueError, KeyError) as exc:
            raise ConfigError(
                f"unknown time zone {self.timezone!r} (expected an IANA name such as Europe/Berlin)"
            ) from exc
        if self.summary_interval_s <= 0 or self.history_s <= 0 or self.keep_archive_days < 1:
            raise ConfigError("summary interval and history must be > 0 s, archive >= 1 day")
        validate_topic_root(self.topic_root)
        if self.max_patients < 1 or self.max_patients_per_gateway < 1:
            raise ConfigError("max_patients and max_patients_per_gateway must be >= 1")
        if not is_loopback_host(self.listen_host) and not self.credentials.configured:
            raise ConfigError(
                f"refusing to listen on {self.listen_host} without a login: give "
                "--password-file FILE (lines made with --add-user) or set "
                "POSTURE_MONITOR_DASHBOARD_TOKEN, or listen on 127.0.0.1"
            )
