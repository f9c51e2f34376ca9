"""``posture-monitor scan`` as an installer runs it, against the BlueZ stand-in."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator import SimulatedWorld, demo_scenario
from simulator.bluez import BluezStandIn, PrivateSystemBus

pytestmark = [pytest.mark.bluez, pytest.mark.timeout(60)]

CONFIG = """gateway_id = "ward-1"
[ble]
adapter = "hci1"
[[wearables]]
address = "C0:FF:EE:00:00:01"
patient_id = "p-001"
[[wearables]]
address = "C0:FF:EE:00:00:09"
patient_id = "p-009"
"""


async def scan_cli(*args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "posture_monitor",
        "scan",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    out, err = await asyncio.wait_for(process.communicate(), 45.0)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


@pytest.fixture
async def standin(system_bus: PrivateSystemBus) -> AsyncIterator[BluezStandIn]:
    async with (
        SimulatedWorld(demo_scenario(3), seed=3, speed=1.0) as world,
        BluezStandIn(world, bus_address=system_bus.address, adapters=("hci0", "hci1")) as bluez,
    ):
        yield bluez


async def test_scan_lists_adapters_and_wearables(standin: BluezStandIn, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    standin.power("hci0", False)
    result = await scan_cli("--config", str(config), "--seconds", "1.5")
    lines = result.stdout.splitlines()
    assert any(line.split()[:1] == ["hci0"] and "POWERED OFF" in line for line in lines)
    assert any(line.split()[:1] == ["hci1"] and "<- used" in line for line in lines)
    assert any(
        line.startswith("C0:FF:EE:00:00:01") and "PW-0001" in line and "allow-listed: p-001" in line
        for line in lines
    ), result.stdout
    assert any(
        line.startswith("C0:FF:EE:00:00:02") and "not allow-listed" in line for line in lines
    )
    # The allow-listed wearable that is not there is named, and the exit says so.
    assert "NOT HEARD: C0:FF:EE:00:00:09 (p-009)" in result.stdout
    assert result.returncode == 1


async def test_scan_on_a_powered_off_adapter_is_a_clear_error(standin: BluezStandIn) -> None:
    standin.power("hci0", False)
    result = await scan_cli("--adapter", "hci0", "--seconds", "1")
    assert result.returncode == 2
    assert "adapter hci0 is powered off" in result.stderr
    assert "Traceback" not in result.stderr
