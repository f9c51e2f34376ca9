"""The systemd units in deploy/ start commands that exist, as a dedicated user.

systemd is not PID 1 on the build machine, so the units cannot be started
here; this checks what would break them silently after a refactor: the
ExecStart command line must still parse with today's CLI, the stop timeout
must leave room for the gateway's shutdown grace, and the outbox must live
in the unit's StateDirectory.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alerts import MqttSettings
from posture_monitor.cli import build_parser

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"


def read_unit(name: str) -> dict[str, list[str]]:
    """``{"Section.Key": [values...]}``, backslash continuations joined."""
    text = (UNITS / name).read_text().replace("\\\n", " ")
    section = ""
    values: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


@pytest.mark.parametrize("name", ["posture-gateway.service", "posture-dashboard.service"])
def test_units_run_the_cli_as_a_dedicated_user_and_restart(name: str) -> None:
    unit = read_unit(name)
    (exec_start,) = unit["Service.ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/posture-monitor/bin/posture-monitor"
    command = argv[1]
    args = build_parser(command).parse_args(argv[1:])  # SystemExit if an option vanished
    assert args.command == command
    assert unit["Service.User"] == ["posture-monitor"]
    assert unit["Service.Restart"] == ["always"]
    assert unit["Unit.StartLimitIntervalSec"] == ["0"]
    assert unit["Service.NoNewPrivileges"] == ["yes"]
    assert unit["Service.ProtectSystem"] == ["strict"]
    if command == "dashboard":
        assert MqttSettings.from_urls(args.broker).addresses == (
            "mq1.hospital.example:8883",
            "mq2.hospital.example:8883",
            "mq3.hospital.example:8883",
        )


def test_dashboard_unit_keeps_the_alert_record_in_its_state_directory() -> None:
    # physio.dashboard.record.default_database() uses $STATE_DIRECTORY: without
    # it the record would go to a home folder that ProtectHome hides.
    unit = read_unit("posture-dashboard.service")
    assert unit["Service.StateDirectory"] == ["posture-monitor"]
    assert (
        "/var/lib/posture-monitor/alerts.sqlite3"
        in (UNITS / "posture-dashboard.service").read_text()
    )


def test_gateway_unit_keeps_the_outbox_and_waits_for_the_flush() -> None:
    unit = read_unit("posture-gateway.service")
    assert unit["Service.StateDirectory"] == ["posture-monitor"]
    header = (UNITS / "posture-gateway.service").read_text()
    assert 'outbox_path = "/var/lib/posture-monitor/outbox.sqlite"' in header
    assert "bluetooth" in unit["Service.SupplementaryGroups"]
    # AlertPublisher: 5 s outbox grace + 2 s for "offline" + BLE disconnects.
    assert seconds(unit["Service.TimeoutStopSec"][0]) >= 15


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    venv_cli = str(Path(sys.executable).parent / "posture-monitor")
    if not Path(venv_cli).exists():
        pytest.skip("the posture-monitor script is not installed beside this Python")
    for unit in UNITS.glob("*.service"):
        text = unit.read_text().replace("/opt/posture-monitor/bin/posture-monitor", venv_cli)
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
