"""`dashboard` and `report` take the broker password from the environment or a file,
never from the command line, and a CA file for TLS (issue 10, item 7)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import pytest
from brokers import MOSQUITTO, MosquittoBroker, TlsFiles, make_password_file

from alerts.settings import PASSWORD_ENV
from common.errors import ConfigError
from physio.dashboard.cli import build_config, configure_parser


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(list(argv))


def test_the_password_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    config = build_config(parse("--broker", "mqtt://dash@127.0.0.1:1883"))
    assert (config.broker.username, config.broker.password) == ("dash", "from-env")
    secret = tmp_path / "mqtt-password"
    secret.write_text("from-file\n")
    config = build_config(
        parse("--broker", "mqtt://dash@127.0.0.1:1883", "--broker-password-file", str(secret))
    )
    assert config.broker.password == "from-file"  # the file wins over the environment
    assert "from-file" not in repr(config)
    assert capsys.readouterr().err == ""
    # Still accepted in the URL, but the user is told it is visible to everyone.
    build_config(parse("--broker", "mqtt://dash:in-url@127.0.0.1:1883"))
    assert "visible to every user" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="broker-password-file"):
        build_config(parse("--broker", "mqtt://h:1", "--broker-password-file", str(tmp_path)))


def test_a_ca_file_is_checked_and_needs_mqtts(tmp_path: Path, tls_files: TlsFiles) -> None:
    config = build_config(
        parse("--broker", "mqtts://127.0.0.1:8883", "--ca-file", str(tls_files.ca_cert))
    )
    assert config.broker.tls and config.broker.ca_file == str(tls_files.ca_cert)
    with pytest.raises(ConfigError, match="no such file"):
        build_config(parse("--broker", "mqtts://h:8883", "--ca-file", str(tmp_path / "none")))
    with pytest.raises(ConfigError, match="tls"):
        build_config(parse("--broker", "mqtt://h:1883", "--ca-file", str(tls_files.ca_cert)))


@pytest.mark.timeout(60)
async def test_report_logs_in_with_the_password_from_the_environment(tmp_path: Path) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    users = make_password_file(tmp_path / "users", "clinic", "s3cret-pw")
    broker = MosquittoBroker(tmp_path / "broker", password_file=users)
    await broker.start()
    try:

        async def report(password: str) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "physio.dashboard",
                "report",
                "--patient",
                "p-001",
                "--broker",
                f"mqtt://clinic@127.0.0.1:{broker.port}",
                "--out",
                str(tmp_path / "r.html"),
                "--timeout",
                "1",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, PASSWORD_ENV: password},
            )
            _out, err = await asyncio.wait_for(process.communicate(), 30)
            assert process.returncode is not None
            return process.returncode, err.decode()

        # Logged in: the broker simply has no summary for this patient.
        code, err = await report("s3cret-pw")
        assert code == 1 and "no summary of patient p-001" in err, err
        code, err = await report("wrong")
        assert code == 2 and "not authorized" in err.lower() and "s3cret" not in err, err
    finally:
        await broker.stop()
