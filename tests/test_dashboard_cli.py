"""``posture-monitor dashboard`` / ``report`` arguments, logins and the real program."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import stat
import sys
import urllib.request
from pathlib import Path

import pytest
from test_dashboard_support import broker_url_fixture  # noqa: F401  (used by name)

from common.errors import ConfigError
from physio.dashboard.auth import TOKEN_ENV, Credentials
from physio.dashboard.cli import build_config, configure_parser, parse_listen, run


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(["--broker", "mqtt://127.0.0.1:1", *argv])


def test_exposed_listen_address_without_login_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert run(parse("--listen", "0.0.0.0:8080")) == 2
    assert "refusing to listen on 0.0.0.0 without a login" in capsys.readouterr().err


def test_add_user_stores_only_a_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "s3cret-pass")
    password_file = tmp_path / "users"
    assert run(parse("--password-file", str(password_file), "--add-user", "anna")) == 0
    assert run(parse("--password-file", str(password_file), "--add-user", "ben")) == 0
    text = password_file.read_text()
    assert "s3cret-pass" not in text and text.count(":scrypt$") == 2
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    credentials = Credentials.load(password_file, None)
    assert credentials.check("anna", "s3cret-pass") == "anna"
    assert credentials.check("anna", "wrong") is None
    assert credentials.check("carl", "s3cret-pass") is None


def test_token_from_the_environment_is_hashed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "ward-3-token-xyz")
    config = build_config(parse("--listen", "0.0.0.0:8080"))
    assert config.credentials.configured
    assert "ward-3-token-xyz" not in repr(config)
    assert config.credentials.check("Dana", "ward-3-token-xyz") == "Dana (token)"


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("8080", "host:", "host:99999"):
        with pytest.raises(ConfigError, match="--listen"):
            parse_listen(bad)
    users = tmp_path / "users"
    users.write_text("# staff\nanna:plaintext\n")
    with pytest.raises(ConfigError, match=r"users:2"):
        Credentials.load(users, None)
    with pytest.raises(ConfigError, match="escalate"):
        build_config(parse("--escalate-after", "300"))
    with pytest.raises(ConfigError, match="time zone"):
        build_config(parse("--timezone", "Mars/Olympus"))


async def test_the_program_serves_and_stops_on_ctrl_c(broker_url: str, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "physio.dashboard",
        "dashboard",
        "--broker",
        broker_url,
        "--listen",
        "127.0.0.1:0",
        "--timezone",
        "UTC",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # No --database: the record goes to the state folder, here a private one.
        env={**os.environ, TOKEN_ENV: "", "XDG_STATE_HOME": str(tmp_path)},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("dashboard: http://127.0.0.1:")
        assert (tmp_path / "posture-monitor" / "alerts.sqlite3").is_file()
        url = line.split()[1]
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "healthz").read())
        assert json.loads(body)["ok"] is True
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())
        assert b"/static/app.js" in page
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_site_config_and_patients_file_reach_the_dashboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "s3cret-pass")
    site = tmp_path / "site.toml"
    site.write_text(
        "[escalation]\nfirst_after_s = 60\nagain_after_s = 180\n\n"
        '[[notify.webhook]]\nname = "pager"\nurl = "http://127.0.0.1:9/hook"\n',
        encoding="utf-8",
    )
    patients = tmp_path / "patients.toml"
    patients.write_text('[patients.p-001]\nname = "Jürgen Groß"\nbed = "A"\n', encoding="utf-8")
    config = build_config(parse("--config", str(site), "--patients", str(patients)))
    assert (config.escalation.first_after_s, config.escalation.again_after_s) == (60.0, 180.0)
    assert config.notify.webhooks[0].name == "pager"
    assert config.patients.to_dict()["p-001"]["name"] == "Jürgen Groß"
    # The command-line delays override the site file.
    config = build_config(parse("--config", str(site), "--escalate-after", "30"))
    assert (config.escalation.first_after_s, config.escalation.again_after_s) == (30.0, 180.0)
    site.write_text("[escalation]\nfirst_after_s = -1\n", encoding="utf-8")
    assert run(parse("--config", str(site))) == 2
    err = capsys.readouterr().err
    assert str(site) in err and "first_after_s" in err
    # A user name in any script (the password file holds it as written, NFC).
    users = tmp_path / "users"
    assert run(parse("--password-file", str(users), "--add-user", "Dr Müller")) == 0
    credentials = Credentials.load(users, None)
    assert credentials.check("Dr Mu\u0308ller", "s3cret-pass") == "Dr Müller"
