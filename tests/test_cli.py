"""The ``posture-monitor`` command as a user runs it, in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from brokers import free_port

from simulator import builtin_scenario_path, load_scenario

CLI = [sys.executable, "-m", "posture_monitor"]
# Only a guard against a hang, never a measurement (see tests/brokers.py).
HANG_S = 60.0


async def run_cli(
    *args: str, timeout_s: float = 60.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``posture-monitor ARGS``; ``env`` adds to (or overrides) this environment."""
    process = await start_cli(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


async def start_cli(*args: str, env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
    """``posture-monitor ARGS`` started, its output piped; ``env`` as for :func:`run_cli`."""
    return await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


async def read_until(stream: asyncio.StreamReader, phrase: str) -> str:
    """The lines of ``stream`` up to and including the first with ``phrase``."""
    seen: list[str] = []
    async with asyncio.timeout(HANG_S):
        while not seen or phrase not in seen[-1]:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {phrase!r}: {''.join(seen)[-2000:]}")
            seen.append(line.decode())
    return "".join(seen)


def assert_clear_error(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


async def test_missing_config_is_one_clear_line(tmp_path: Path) -> None:
    result = await run_cli("run", "--config", str(tmp_path / "gateway.toml"))
    assert_clear_error(result, "gateway.toml does not exist")


async def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('gateway_id = "a/b"\n[[wearables]]\naddress = "x"\npatient_id = "p"\n')
    result = await run_cli("run", "--config", str(config))
    assert_clear_error(result, "gateway_id")


async def test_unreachable_broker_is_a_clear_error() -> None:
    result = await run_cli("watch", "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert_clear_error(result, "127.0.0.1")


@pytest.mark.skipif(
    Path("/run/dbus/system_bus_socket").exists(), reason="this machine has a D-Bus system bus"
)
async def test_no_bluetooth_adapter_is_a_clear_error(tmp_path: Path, broker: Any) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'gateway_id = "ward-1"\n[broker]\nurl = "{broker.url}"\n'
        '[[wearables]]\naddress = "C0:FF:EE:00:00:01"\npatient_id = "p-001"\n'
    )
    result = await run_cli("run", "--config", str(config))
    assert_clear_error(result, "no usable Bluetooth adapter")


async def test_password_never_shown(tmp_path: Path, broker: Any) -> None:
    secret = "pw-never-shown-7f3a"
    address = load_scenario(builtin_scenario_path("demo")).patients[0].wearable.address
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'gateway_id = "ward-1"\n[broker]\nurl = "{broker.url}"\nusername = "gw"\n'
        f'password = "{secret}"\n'
        f'[[wearables]]\naddress = "{address}"\npatient_id = "p-001"\n'
    )
    help_text = await run_cli("run", "--help")
    assert secret not in help_text.stdout
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "-vv",
        "run",
        "--config",
        str(config),
        "--simulate",
        str(builtin_scenario_path("demo")),
        "--speed",
        "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    # Running and logging: the broker connection (the line that would carry
    # the URL) is logged; then stop it like a user does.
    assert process.stdout is not None
    head = await read_until(process.stdout, "connected to MQTT broker")
    process.send_signal(signal.SIGINT)
    output, _ = await asyncio.wait_for(process.communicate(), HANG_S)
    text = head + output.decode()
    assert secret not in text


@pytest.mark.timeout(120)
async def test_demo_publishes_to_a_broker_and_watch_shows_it(broker: Any) -> None:
    watch = await start_cli("watch", "--broker", broker.url, "--duration", "600")  # Ctrl-C below
    assert watch.stdout is not None
    await read_until(watch.stdout, "watching ")  # subscribed before the demo starts
    demo = await run_cli(
        "demo", "--broker", broker.url, "--duration", "60", "--speed", "6", timeout_s=90
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    watch.send_signal(signal.SIGINT)
    out, _err = await asyncio.wait_for(watch.communicate(), HANG_S)
    seen = out.decode()
    lines = seen.splitlines()
    assert any("FALL" in line and "p-002" in line for line in lines), seen[-3000:]
    assert any("SLOUCH STARTED" in line and "p-001" in line for line in lines), seen[-3000:]
    assert not any("p-003" in line and ("FALL" in line or "SLOUCH" in line) for line in lines)


@pytest.mark.timeout(120)
async def test_demo_runs_on_its_embedded_broker() -> None:
    result = await run_cli("demo", "--duration", "45", "--speed", "6", timeout_s=90)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "SLOUCH STARTED" in result.stdout
    assert "FALL DETECTED" in result.stdout


@pytest.mark.timeout(120)
async def test_sigterm_stops_the_demo_as_ctrl_c_does() -> None:
    """``timeout``, ``docker stop`` and service managers stop with SIGTERM: the
    demo then winds down as on Ctrl-C (says so, exit 0) instead of dying
    with the signal's status."""
    demo = await start_cli("demo", env={"PYTHONUNBUFFERED": "1"})
    assert demo.stdout is not None
    await read_until(demo.stdout, "DEVICE CONNECTED")  # running, patients streaming
    demo.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(demo.communicate(), HANG_S)
    assert demo.returncode == 0, err.decode()[-2000:]
    assert "demo stopped" in err.decode()
    assert "Traceback" not in err.decode()


@pytest.mark.timeout(120)
async def test_sigterm_ends_watch_as_ctrl_c_does(broker: Any) -> None:
    watch = await start_cli("watch", "--broker", broker.url)
    assert watch.stdout is not None
    await read_until(watch.stdout, "watching ")
    watch.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(watch.communicate(), HANG_S)
    assert watch.returncode == 0, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
