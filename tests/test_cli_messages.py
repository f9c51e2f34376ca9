"""What a user sees from the commands in the corner cases (issue 8's papercuts):
the dashboard takes the URL it prints as ``--listen``, a port in use is one
clear line and exit 2, ``report`` exits 2 for an unreachable broker as every
command does, ``--add-user`` needs no broker, ``run`` logs without ``-v``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

from brokers import free_port
from test_cli import CLI, HANG_S, assert_clear_error, read_until, run_cli

from physio.dashboard.auth import Credentials
from simulator import builtin_scenario_path, load_scenario


async def start(*args: str, stdin: bytes | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
        start_new_session=True,  # no controlling terminal: getpass reads stdin
    )


async def interrupt(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """Ctrl-C, then the exit status and the rest of the output."""
    process.send_signal(signal.SIGINT)
    output, _ = await asyncio.wait_for(process.communicate(), HANG_S)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_dashboard_listens_on_the_url_it_prints_without_asking_for_a_login() -> None:
    port = free_port()
    # The broker is down: a service waits for it rather than failing.
    dashboard = await start(
        "dashboard",
        "--broker",
        f"mqtt://127.0.0.1:{free_port()}",
        "--listen",
        f"http://127.0.0.1:{port}/",
    )
    assert dashboard.stdout is not None
    seen = await read_until(dashboard.stdout, "dashboard: http://")
    assert f"dashboard: http://127.0.0.1:{port}/" in seen
    code, rest = await interrupt(dashboard)
    assert code == 0 and "login" not in seen + rest and "Traceback" not in seen + rest


async def test_dashboard_on_https_or_an_exposed_address_says_what_to_do() -> None:
    broker = f"mqtt://127.0.0.1:{free_port()}"
    https = await run_cli("dashboard", "--broker", broker, "--listen", "https://127.0.0.1:8443")
    assert_clear_error(https, "reverse proxy")
    # The intended rule: any address other than loopback needs a login.
    exposed = await run_cli("dashboard", "--broker", broker, "--listen", "http://0.0.0.0:8080")
    assert_clear_error(exposed, "refusing to listen on 0.0.0.0 without a login")


async def test_dashboard_port_in_use_is_one_clear_line_and_exit_2(broker: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_cli("dashboard", "--broker", broker.url, "--listen", f"127.0.0.1:{port}")
    assert_clear_error(result, f"cannot listen on 127.0.0.1:{port}: the port is in use")
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Errno" not in result.stderr


async def test_report_exits_2_for_an_unreachable_broker(tmp_path: Path) -> None:
    result = await run_cli(
        "report",
        "--patient",
        "p-001",
        "--broker",
        f"mqtt://127.0.0.1:{free_port()}",
        "--out",
        str(tmp_path / "report.html"),
        "--timeout",
        "0.5",
    )
    assert_clear_error(result, "127.0.0.1")
    assert not (tmp_path / "report.html").exists()


async def test_add_user_needs_no_broker_but_serving_does(tmp_path: Path) -> None:
    users = tmp_path / "users"
    adding = await start(
        "dashboard", "--add-user", "Anna Berg", "--password-file", str(users), stdin=b""
    )
    assert adding.stdin is not None
    output, _ = await asyncio.wait_for(
        adding.communicate(b"correct horse\ncorrect horse\n"), HANG_S
    )
    assert adding.returncode == 0, output.decode()
    assert f"Anna Berg added to {users}" in output.decode()
    assert Credentials.load(users, None).check("Anna Berg", "correct horse") == "Anna Berg"
    serving = await run_cli("dashboard", "--password-file", str(users))
    assert_clear_error(serving, "--broker URL is required")


async def test_run_logs_its_start_and_events_without_v(tmp_path: Path, broker: Any) -> None:
    scenario = builtin_scenario_path("demo")
    address = load_scenario(scenario).patients[0].wearable.address
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'gateway_id = "ward-1"\n[broker]\nurl = "{broker.url}"\n'
        f'[[wearables]]\naddress = "{address}"\npatient_id = "p-001"\n'
    )
    gateway = await start(
        "run", "--config", str(config), "--simulate", str(scenario), "--speed", "10"
    )
    assert gateway.stdout is not None
    seen = await read_until(gateway.stdout, "supervising 1 wearables")
    seen += await read_until(gateway.stdout, "device_connected")
    code, rest = await interrupt(gateway)
    assert code == 0
    assert "connected to MQTT broker" in seen
    assert "DEBUG" not in seen + rest  # info, not the debug firehose
