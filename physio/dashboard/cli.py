"""Command-line entry points: ``posture-monitor dashboard`` and ``posture-monitor report``.

``posture_monitor.cli`` adds the sub-commands with :func:`configure_parser` /
:func:`run` and :func:`configure_report_parser` / :func:`run_report`. The
``run*`` functions return an exit status: 0 done, 1 runtime failure (no
summary to report), 2 what the user can fix: bad arguments or configuration,
an unreachable broker (``report``), an HTTP address that cannot be listened
on (``dashboard``; it retries the broker forever, as a service should). They
print errors to stderr and never configure logging (the main CLI does).

Secrets never go on the command line (``ps`` shows it to every user): the
broker password comes from ``$POSTURE_MQTT_PASSWORD`` or
``--broker-password-file``, as for ``run`` (``physio.broker_args``, the broker
flags of every physio command); a PostgreSQL password from libpq's
``$PGPASSWORD`` or ``~/.pgpass``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from common.errors import BrokerError, ConfigError, PostureMonitorError
from common.ids import ID_PATTERN
from common.shutdown import run_until_terminated
from physio.broker_args import add_broker_arguments, broker_settings
from physio.dashboard.auth import (
    TOKEN_ENV,
    Credentials,
    hash_secret,
    normalize_user_name,
    valid_user_name,
)
from physio.dashboard.escalation import EscalationPolicy
from physio.dashboard.patients import PatientDirectory
from physio.dashboard.record import default_database
from physio.dashboard.report import fetch_summary, write_report
from physio.dashboard.service import DashboardConfig, DashboardService
from physio.dashboard.site import SiteConfig
from physio.dashboard.store import StoreError

__all__ = [
    "build_config",
    "configure_parser",
    "configure_report_parser",
    "local_timezone",
    "parse_listen",
    "run",
    "run_report",
]


def local_timezone() -> str:
    """The machine's IANA zone name (``TZ``, else /etc/localtime), or ``UTC``."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and "/" in tz and not tz.startswith("/"):
        return tz
    with contextlib.suppress(OSError):
        target = os.path.realpath("/etc/localtime")
        marker = "/zoneinfo/"
        if marker in target:
            return target.split(marker, 1)[1]
    return "UTC"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``http://HOST:PORT/`` to (host, port).

    The URL form is what the dashboard prints at start, so a user who pastes
    it back gets what they meant (before, ``http`` became part of the host,
    which then counted as an exposed address and asked for a login).

    Raises:
        ConfigError: not of that form, or ``https://`` (the dashboard serves
            plain HTTP; TLS belongs to a reverse proxy in front of it).
    """
    address = text.strip()
    scheme, has_scheme, rest = address.partition("://")
    if has_scheme:
        if scheme.lower() == "https":
            raise ConfigError(
                f"--listen {text!r}: the dashboard serves plain HTTP; for HTTPS put a reverse "
                "proxy in front of it and give --listen 127.0.0.1:PORT"
            )
        if scheme.lower() != "http":
            raise ConfigError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
        address = rest.rstrip("/")
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if (
        not sep
        or not host
        or "/" in host
        or not port_text.isdigit()
        or not 0 <= int(port_text) < 65536
    ):
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port_text)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``posture-monitor dashboard``."""
    parser.epilog = (
        "A service: it never gives up on the broker. One that is down at start or goes "
        "away later is retried (with backoff) until you stop the dashboard with Ctrl-C or "
        "SIGTERM; the page says meanwhile that the broker is disconnected. Exit status: 0 "
        "when stopped, 2 on a bad argument or setting, or when the HTTP address cannot be "
        "listened on (e.g. its port is in use)."
    )
    add_broker_arguments(parser, local_default=False)  # required, except with --add-user
    parser.add_argument(
        "--database",
        default=None,
        metavar="PATH|URL",
        help="the alert record: a SQLite file (default "
        "$XDG_STATE_HOME/posture-monitor/alerts.sqlite3) or postgresql://user@host/db "
        "(password in $PGPASSWORD or ~/.pgpass); several dashboards may share one PostgreSQL",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="site settings (TOML): escalation delays, webhook and Apprise recipients "
        "(see docs/dashboard.md)",
    )
    parser.add_argument(
        "--patients",
        type=Path,
        metavar="FILE",
        help="display names and room/bed per patient id (TOML; shown only on the page)",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="HTTP address (default 127.0.0.1:8080; any other than loopback needs a login)",
    )
    parser.add_argument(
        "--escalate-after",
        type=float,
        default=None,
        metavar="S",
        help="escalate a fall nobody acknowledged after S seconds (overrides --config; 120)",
    )
    parser.add_argument(
        "--escalate-again-after",
        type=float,
        default=None,
        metavar="S",
        help="escalate it again (level 2) S seconds after the fall (overrides --config; 240)",
    )
    parser.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help=f"users allowed to log in (name:scrypt hash lines); or set "
        f"{TOKEN_ENV} to a shared token",
    )
    parser.add_argument(
        "--add-user",
        metavar="NAME",
        help="ask for NAME's password, add it hashed to --password-file, exit",
    )
    parser.add_argument(
        "--timezone",
        default=None,
        metavar="ZONE",
        help="clinic time zone for daily summaries (default: this machine's)",
    )
    parser.add_argument(
        "--summary-interval",
        type=float,
        default=60.0,
        metavar="S",
        help="publish changed daily summaries every S seconds (60)",
    )
    parser.add_argument(
        "--client-id", default=None, help="MQTT client id (default from host name and port)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name browsers use to reach the dashboard (repeatable); localhost names "
        "and the --listen host are always allowed, any other Host header is refused",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow the MQTT password over plain mqtt:// to another machine (logged)",
    )


def _add_user(password_file: Path | None, name: str) -> int:
    if password_file is None:
        print("error: --add-user needs --password-file", file=sys.stderr)
        return 2
    name = normalize_user_name(name)
    if not valid_user_name(name) or ":" in name:
        print(
            f"error: user name {name!r}: 1-64 letters, digits, spaces and . _ - @ '",
            file=sys.stderr,
        )
        return 2
    password = getpass.getpass(f"password for {name}: ")
    if len(password) < 8 or password != getpass.getpass("again: "):
        print("error: passwords differ or are shorter than 8 characters", file=sys.stderr)
        return 2
    lines = []
    if password_file.exists():
        lines = [
            line
            for line in password_file.read_text(encoding="utf-8").splitlines()
            if line.rpartition(":")[0] != name
        ]
    lines.append(f"{name}:{hash_secret(password)}")
    password_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    print(f"{name} added to {password_file}")
    return 0


def build_config(args: argparse.Namespace) -> DashboardConfig:
    """A validated configuration from parsed arguments. Raises ConfigError."""
    if not args.broker:  # the dashboard has no default broker: say which one
        raise ConfigError("--broker URL is required (except with --add-user)")
    host, port = parse_listen(args.listen)
    site = SiteConfig.load(args.config) if getattr(args, "config", None) else SiteConfig()
    first_s = site.escalation.first_after_s if args.escalate_after is None else args.escalate_after
    again_s = (
        site.escalation.again_after_s
        if args.escalate_again_after is None
        else args.escalate_again_after
    )
    try:
        policy = EscalationPolicy(first_s, again_s)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    broker = broker_settings(args, insecure=args.insecure)
    patients_file = getattr(args, "patients", None)
    patients = PatientDirectory.load(patients_file) if patients_file else PatientDirectory.empty()
    credentials = Credentials.load(args.password_file, os.environ.get(TOKEN_ENV) or None)
    return DashboardConfig(
        broker=broker,
        database=args.database or str(default_database()),
        listen_host=host,
        listen_port=port,
        topic_root=args.topic_root,
        escalation=policy,
        credentials=credentials,
        timezone=args.timezone or local_timezone(),
        summary_interval_s=args.summary_interval,
        client_id=args.client_id,
        allowed_hosts=tuple(getattr(args, "allowed_host", None) or ()),
        notify=site.notify,
        patients=patients,
    )


async def _serve(config: DashboardConfig) -> None:
    async with DashboardService(config) as service:
        print(f"dashboard: {service.url}", flush=True)
        print(f"alert record: {service.record.where}", flush=True)
        await service.run_forever()


def run(args: argparse.Namespace) -> int:
    """Run ``posture-monitor dashboard`` until interrupted."""
    if args.add_user:
        return _add_user(args.password_file, args.add_user)
    try:
        config = build_config(args)
        # SIGTERM (systemd's stop) unwinds like Ctrl-C and exits 0.
        asyncio.run(run_until_terminated(_serve(config)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (PostureMonitorError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def configure_report_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``posture-monitor report``."""
    parser.add_argument("--patient", required=True, metavar="ID", help="patient id")
    parser.add_argument(
        "--day",
        type=date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="local day (default: the newest the dashboard published; today for the record)",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=1,
        metavar="N",
        help="with --audit and the CSV files: N days ending with --day (1)",
    )
    add_broker_arguments(parser, local_default=False)  # none: the alert record
    parser.add_argument(
        "--database",
        default=None,
        metavar="PATH|URL",
        help="the dashboard's alert record (default: its default SQLite file); "
        "--out reads the day from here when no --broker is given",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="report.html (no dependency) or report.png (needs matplotlib)",
    )
    parser.add_argument(
        "--audit",
        action="store_true",
        help="print the audit trail: every event, ack, escalation, cancellation and "
        "resolution, with who, when and from where",
    )
    parser.add_argument("--alerts-csv", type=Path, metavar="FILE", help="write the alerts as CSV")
    parser.add_argument(
        "--days-csv", type=Path, metavar="FILE", help="write the daily posture totals as CSV"
    )
    parser.add_argument(
        "--timezone",
        default=None,
        metavar="ZONE",
        help="clinic time zone of the days (default: this machine's)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="how long to wait for the broker, s (5)",
    )


def _from_record(args: argparse.Namespace) -> None:
    """--audit, --alerts-csv, --days-csv and a record-based --out."""
    from physio.dashboard.record_report import from_record

    database = args.database or str(default_database())
    if not args.database and not Path(database).exists():
        raise ConfigError(
            f"no alert record at {database}: give --database (the dashboard's --database)"
        )
    if ID_PATTERN.fullmatch(args.patient) is None:
        raise ConfigError(f"invalid patient id {args.patient!r}")
    zone_name = args.timezone or local_timezone()
    try:
        zone = ZoneInfo(zone_name)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"unknown time zone {zone_name!r}") from exc
    if args.days < 1:
        raise ConfigError(f"--days must be >= 1, got {args.days}")
    last = args.day or date.today()
    try:
        for line in from_record(
            database,
            args.patient,
            first=last - timedelta(days=args.days - 1),
            last=last,
            zone=zone,
            audit=args.audit,
            alerts_csv=args.alerts_csv,
            days_csv=args.days_csv,
            html_or_png=args.out if args.broker is None else None,
        ):
            print(line)
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc}") from exc


def run_report(args: argparse.Namespace) -> int:
    """Run ``posture-monitor report``: from the broker's summary and/or the alert record."""
    try:
        wanted = (args.out, args.alerts_csv, args.days_csv)
        if not args.audit and all(w is None for w in wanted):
            raise ConfigError("say what to write: --out, --audit, --alerts-csv or --days-csv")
        if args.out is not None and args.out.suffix.lower() not in (".html", ".htm", ".png"):
            raise ConfigError(f"--out {args.out}: the report must end in .html or .png")
        if args.audit or args.alerts_csv or args.days_csv or (args.out and not args.broker):
            _from_record(args)
        if args.out is not None and args.broker is not None:
            # Read-only: a password in clear text is warned about, not refused.
            settings = broker_settings(args, insecure=True, connect_timeout_s=args.timeout)
            summary = asyncio.run(
                fetch_summary(
                    settings,
                    args.patient,
                    args.day,
                    topic_root=args.topic_root,
                    timeout_s=args.timeout,
                )
            )
            write_report(summary, args.out)
            print(f"report written to {args.out}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BrokerError, StoreError) as exc:
        # The README's promise for every command: an unreachable broker is an
        # error the user can fix, exit 2 (it was 1, like a missing summary);
        # so is an unreachable alert record.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PostureMonitorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
