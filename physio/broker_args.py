"""The broker flags of every physio command (``watch``, ``status``, ``dashboard``, ``report``).

One place adds them to a parser and one turns the parsed flags into
``alerts.settings.MqttSettings``, so a flag cannot mean one thing to
``watch`` and another to ``dashboard`` (before, ``watch`` and ``status``
ignored ``$POSTURE_MQTT_PASSWORD`` that ``dashboard`` and ``report`` read).

Secrets never go on the command line (``ps`` shows it to every user): the
password comes from ``--broker-password-file`` or ``$POSTURE_MQTT_PASSWORD``,
as for the gateway's ``run``; one in a ``--broker`` URL still works, with a
warning. The gateway's ``run`` does not use this module: its broker comes
from a TOML config that ``--broker`` only overrides (``posture_monitor.service``).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from pathlib import Path

from alerts.settings import PASSWORD_ENV, MqttSettings
from alerts.topics import DEFAULT_TOPIC_ROOT
from common.errors import ConfigError

__all__ = [
    "BROKER_ENV",
    "LOCAL_BROKER_URL",
    "add_broker_arguments",
    "add_connection_arguments",
    "broker_settings",
]

# The broker of ``watch`` and ``status`` when no --broker is given.
BROKER_ENV = "POSTURE_MONITOR_BROKER"
LOCAL_BROKER_URL = "mqtt://127.0.0.1:1883"


def add_broker_arguments(parser: argparse.ArgumentParser, *, local_default: bool) -> None:
    """``--broker URL`` (repeatable), ``--broker-password-file FILE``, ``--ca-file
    FILE`` and ``--topic-root``.

    ``local_default``: the help says that without ``--broker`` the command
    uses ``$POSTURE_MONITOR_BROKER`` or the local broker (``watch``, ``status``);
    the others decide themselves what no ``--broker`` means.
    """
    default = f" (default: ${BROKER_ENV} or {LOCAL_BROKER_URL})" if local_default else ""
    parser.add_argument(
        "--broker",
        action="append",
        default=None,
        metavar="URL",
        help="MQTT broker, mqtt://[user@]host[:port] or mqtts://..., e.g. "
        "mqtts://physio@broker.example:8883 (no password here: set "
        f"${PASSWORD_ENV} or use --broker-password-file); repeat it (or give a "
        f"comma-separated list) for the nodes of a broker cluster, tried in turn{default}",
    )
    parser.add_argument(
        "--broker-password-file",
        type=Path,
        metavar="FILE",
        help=f"file whose first line is the broker password (else ${PASSWORD_ENV})",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        metavar="FILE",
        help="CA certificate (PEM) that signed the broker's certificate (with mqtts://)",
    )
    parser.add_argument(
        "--topic-root",
        default=DEFAULT_TOPIC_ROOT,
        help=f"MQTT topic root (default {DEFAULT_TOPIC_ROOT})",
    )


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--protocol`` and ``--connect-timeout``, of the one-shot views (``watch``,
    ``status``); ``report`` has its own ``--timeout`` and ``dashboard`` never
    gives up."""
    parser.add_argument(
        "--protocol",
        choices=("5", "3.1.1"),
        default="5",
        help="MQTT version (5 falls back to 3.1.1 by itself)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="give up if the broker cannot be reached within S seconds",
    )


def broker_settings(
    args: argparse.Namespace, *, insecure: bool, **overrides: object
) -> MqttSettings:
    """Settings from the flags of ``add_broker_arguments`` (and of
    ``add_connection_arguments`` when the parser has them).

    Without ``--broker``: ``$POSTURE_MONITOR_BROKER``, else the local broker.
    The password comes from ``--broker-password-file``, else
    ``$POSTURE_MQTT_PASSWORD``, else the URL (warned about on stderr).
    ``insecure``: a password over plain TCP to another machine is only
    logged as a warning instead of refused (``MqttSettings.check_transport``).
    ``overrides`` go to ``MqttSettings.from_urls``.

    Raises:
        ConfigError: a bad URL (password redacted), an unreadable or empty
            password file, a missing CA file, a CA file without mqtts://, or a
            password in clear text without ``insecure``.
    """
    urls: list[str] = list(args.broker or [os.environ.get(BROKER_ENV) or LOCAL_BROKER_URL])
    if _password_in_urls(urls):
        print(
            f"warning: a password in --broker is visible to every user of this machine; "
            f"set {PASSWORD_ENV} or use --broker-password-file",
            file=sys.stderr,
        )
    password_file: Path | None = args.broker_password_file
    if password_file is not None:
        overrides["password"] = _first_line(password_file)
    elif os.environ.get(PASSWORD_ENV):
        overrides["password"] = os.environ[PASSWORD_ENV]
    ca_file: Path | None = args.ca_file
    if ca_file is not None:
        if not ca_file.is_file():
            raise ConfigError(f"--ca-file {ca_file}: no such file")
        overrides["ca_file"] = str(ca_file)
    # Only the commands that offer them (add_connection_arguments) have these.
    if getattr(args, "protocol", None) is not None:
        overrides.setdefault("protocol", args.protocol)
    if getattr(args, "connect_timeout", None) is not None:
        overrides.setdefault("connect_timeout_s", args.connect_timeout)
    settings = MqttSettings.from_urls(urls, **overrides)
    settings.check_transport(insecure=insecure)
    return settings


def _password_in_urls(urls: list[str]) -> bool:
    try:
        return any(
            urllib.parse.urlsplit(url.strip()).password is not None
            for item in urls
            for url in item.split(",")
        )
    except ValueError:
        return False  # MqttSettings.from_urls reports the bad URL


def _first_line(password_file: Path) -> str:
    try:
        lines = password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--broker-password-file {password_file}: {exc}") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"--broker-password-file {password_file}: the first line is empty")
    return lines[0].strip()
