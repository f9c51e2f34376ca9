"""Every physio command reads the broker flags alike (issue 8, "The house").

``watch``, ``status``, ``dashboard`` and ``report`` take their broker flags
from one helper (``physio.broker_args``); these tests parse the same flags
through each command's real ``posture-monitor`` parser, so a command that
drifts (its own ``--ca-file``, a password it ignores, URLs reordered) fails
here, as it would for the user.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from brokers import MosquittoBroker, TlsFiles, free_port
from test_cli import run_cli

from alerts.settings import PASSWORD_ENV, MqttSettings
from common.errors import ConfigError
from physio.broker_args import BROKER_ENV, broker_settings
from physio.dashboard.cli import build_config
from posture_monitor.cli import build_parser, main

COMMANDS = ("watch", "status", "dashboard", "report")
# What each command needs besides the broker flags to parse at all.
_REQUIRED: dict[str, tuple[str, ...]] = {"report": ("--patient", "p-001", "--out", "r.html")}


def parse(command: str, *argv: str) -> argparse.Namespace:
    """``argv`` through the parser a user's ``posture-monitor COMMAND`` uses."""
    words = [command, *_REQUIRED.get(command, ()), *argv]
    return build_parser(command).parse_args(words)


def settings_of(command: str, *argv: str) -> MqttSettings:
    args = parse(command, *argv)
    settings = broker_settings(args, insecure=True)
    if command == "dashboard":
        # The dashboard's own path: its validated configuration.
        assert build_config(args).broker == settings
    return settings


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")  # only its path travels here
    return path


@pytest.fixture(autouse=True)
def no_password_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(BROKER_ENV, raising=False)


CLUSTER = (
    "--broker",
    "mqtts://physio@mq1.example:8883",
    "--broker",
    "mqtts://mq2.example:8884,mqtts://mq3.example",
)


def test_every_command_gives_the_same_settings_for_the_same_flags(
    tmp_path: Path, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("from-file\nignored second line\n")
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    with_file = {
        c: settings_of(
            c, *CLUSTER, "--ca-file", str(ca_file), "--broker-password-file", str(secret)
        )
        for c in COMMANDS
    }
    with_env = {c: settings_of(c, *CLUSTER, "--ca-file", str(ca_file)) for c in COMMANDS}
    monkeypatch.delenv(PASSWORD_ENV)
    without = {c: settings_of(c, *CLUSTER) for c in COMMANDS}

    for command in COMMANDS:
        settings = with_file[command]
        assert settings.addresses == ("mq1.example:8883", "mq2.example:8884", "mq3.example:8883")
        assert (settings.tls, settings.ca_file) == (True, str(ca_file))
        assert (settings.username, settings.password) == ("physio", "from-file")  # file wins
        assert with_env[command].password == "from-env"
        assert without[command].password is None
        assert without[command].ca_file is None
        assert "from-" not in repr(settings)
    for found in (with_file, with_env, without):
        assert all(found[c] == found["watch"] for c in COMMANDS), found


def test_watch_and_status_default_to_the_environment_then_the_local_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for command in ("watch", "status"):
        assert settings_of(command).addresses == ("127.0.0.1:1883",)
        monkeypatch.setenv(BROKER_ENV, "mqtt://a:1,mqtt://b:2")
        assert settings_of(command).addresses == ("a:1", "b:2")
        monkeypatch.delenv(BROKER_ENV)
        settings = settings_of(
            command, "--broker", "mqtt://h:1", "--protocol", "3.1.1", "--connect-timeout", "0.5"
        )
        assert (settings.protocol, settings.connect_timeout_s) == ("3.1.1", 0.5)


def test_a_password_in_the_url_is_warned_about_by_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in COMMANDS:
        settings_of(command, "--broker", "mqtt://physio:in-url@127.0.0.1:1883")
        err = capsys.readouterr().err
        assert "visible to every user" in err and "in-url" not in err, (command, err)


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_broker_files_are_the_same_clear_error_everywhere(
    command: str, tmp_path: Path, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"mqtts://physio@127.0.0.1:{free_port()}"
    cases = {
        ("--broker-password-file", str(tmp_path / "none")): "--broker-password-file",
        ("--broker-password-file", str(ca_file.with_name("empty"))): "the first line is empty",
        ("--ca-file", str(tmp_path / "none.pem")): "no such file",
    }
    ca_file.with_name("empty").write_text("\n")
    for flags, phrase in cases.items():
        with pytest.raises(ConfigError, match=phrase):
            broker_settings(parse(command, "--broker", url, *flags), insecure=True)
        # And the user sees it as one line and exit status 2, no traceback.
        assert main([command, *_REQUIRED.get(command, ()), "--broker", url, *flags]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and phrase in err and "Traceback" not in err, err


@pytest.mark.timeout(90)
async def test_status_and_report_log_in_with_the_password_and_ca_file(
    tmp_path: Path, tls_broker: MosquittoBroker, tls_files: TlsFiles
) -> None:
    """Over TLS with the CA file, behind a dead first node, the password from
    the environment or the file: ``status`` (which ignored both before) and
    ``report`` get in; a wrong one is refused."""
    username: str = tls_broker.username  # type: ignore[attr-defined]
    password: str = tls_broker.password  # type: ignore[attr-defined]
    secret = tmp_path / "mqtt-password"
    secret.write_text(password + "\n")
    brokers = [f"mqtts://{username}@127.0.0.1:{free_port()}", tls_broker.url]
    flags = ["--broker", ",".join(brokers), "--ca-file", str(tls_files.ca_cert)]

    async def cli(env_password: str, *argv: str) -> tuple[int, str]:
        result = await run_cli(*argv, *flags, env={PASSWORD_ENV: env_password})
        return result.returncode, result.stderr

    status = ("status", "--wait", "0.2")
    report = ("report", "--patient", "p-001", "--out", str(tmp_path / "r.html"), "--timeout", "5")
    # Logged in: no gateway has published a status (1), no summary of p-001 (1).
    for argv in (status, report):
        code, err = await cli(password, *argv)
        assert code == 1 and "not authorized" not in err.lower(), (argv, err)
        code, err = await cli("wrong", *argv, "--broker-password-file", str(secret))
        assert code == 1, (argv, err)  # the file wins over the environment
        code, err = await cli("wrong", *argv)
        assert code == 2 and "not authorized" in err.lower(), (argv, err)
        assert password not in err
