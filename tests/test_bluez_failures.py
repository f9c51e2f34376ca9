"""The failures BlueZ really produces, each ending with the wearable streaming again.

The gateway runs unchanged on bleak's BlueZ backend; the stand-in makes
bluetoothd misbehave: scripted ``Connect`` errors, a device that drops and
leaves the object tree, one still cached while out of range, the adapter
powered off and on, unplugged and re-plugged, bluetoothd restarting, and
notifications that stop while the link stays up. Where the gateway cannot
scan, a subscriber must read it in the retained gateway status.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from typing import Any

import pytest
from bluez_harness import until

from device_gateway import GatewayConfig
from physio import status as status_cli
from simulator import Scenario, parse_scenario
from simulator.bluez import ConnectFailure

pytestmark = [pytest.mark.bluez, pytest.mark.timeout(60)]

ADDRESS = "C0:FF:EE:00:03:01"
STATUS = "posture/v1/gateways/ward-bz/status"


def calm_patient(*faults: dict[str, Any]) -> Scenario:
    """One seated patient; ``faults`` are timeline entries (docs/scenarios.md)."""
    return parse_scenario(
        {
            "scenario": {"name": "bluez", "duration_s": 600.0},
            "patients": [
                {
                    "id": "p-bz",
                    "wearable": {"address": ADDRESS},
                    "timeline": [{"at_s": 0.0, "activity": "sit"}, *faults],
                }
            ],
        }
    )


def quick_config(**ble: Any) -> GatewayConfig:
    """Short timeouts and backoff, so a recovery takes seconds."""
    settings = {
        "connect_timeout_s": 3.0,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 1.0,
        "notify_timeout_s": 1.5,
        "disconnect_grace_s": 30.0,
        **ble,
    }
    return GatewayConfig.from_mapping(
        {
            "gateway_id": "ward-bz",
            "ble": settings,
            "wearables": [{"address": ADDRESS, "patient_id": "p-bz"}],
        }
    )


def degraded(collector: Any) -> list[str | None]:
    """``metrics.degraded`` of every live (not retained) status, in order."""
    return [
        json.loads(m.payload)["metrics"].get("degraded")
        for m in collector.on_topic(STATUS)
        if not m.retain and json.loads(m.payload)["status"] == "online"
    ]


async def status_says(collector: Any, text: str | None) -> None:
    """Wait for a live status whose degraded reason contains ``text`` (None: healthy)."""

    def matches(value: str | None) -> bool:
        return value is None if text is None else value is not None and text in value

    await collector.wait_for(
        lambda _messages: any(matches(v) for v in degraded(collector)[-1:]), timeout_s=20.0
    )


async def status_command(broker: Any) -> tuple[int, str]:
    """``posture-monitor status --broker URL``: (exit code, what it printed)."""
    parser = argparse.ArgumentParser()
    status_cli.configure_parser(parser)
    args = parser.parse_args(["--broker", broker.url, "--gateway", "ward-bz", "--wait", "5"])
    out = io.StringIO()
    code = await asyncio.to_thread(status_cli.run, args, out)
    return code, out.getvalue()


async def test_connect_errors_are_retried_until_streaming(bluez_ward: Any) -> None:
    async with bluez_ward(calm_patient(), quick_config(), speed=2.0) as ward:
        ward.standin.fail_connect(
            ADDRESS,
            ConnectFailure("org.bluez.Error.InProgress", "In Progress"),
            ConnectFailure("org.bluez.Error.Failed", "Software caused connection abort"),
            # The link came up and dropped: bleak retries this one inside connect().
            ConnectFailure("org.bluez.Error.Failed", "le-connection-abort-by-local", True),
        )
        await ward.streaming(ADDRESS)
        supervisor = ward.supervisor(ADDRESS)
        assert [error for _address, error in ward.standin.failed_connects] == [
            "org.bluez.Error.InProgress: In Progress",
            "org.bluez.Error.Failed: Software caused connection abort",
            "org.bluez.Error.Failed: le-connection-abort-by-local",
        ]
        # Two attempts failed in the gateway, the third recovered inside bleak.
        assert supervisor.reconnects == 2
        # The flap's disconnected callback must not end the session it preceded.
        await ward.streaming(ADDRESS, packets=25)
        assert supervisor.reconnects == 2
        assert ward.standin.connected(ADDRESS)


async def test_device_that_disconnects_and_leaves_the_tree_comes_back(
    bluez_ward: Any,
) -> None:
    # Out of range for 8 s (scenario time, 2.7 s real); BlueZ forgets an
    # unseen device after 1 s (real) here.
    scenario = calm_patient({"at_s": 6.0, "fault": "disconnect", "duration_s": 8.0})
    options = {"temporary_timeout_s": 1.0, "le_connect_timeout_s": 1.0}
    async with bluez_ward(scenario, quick_config(), speed=3.0, standin_options=options) as ward:
        await ward.streaming(ADDRESS)
        await until(lambda: ADDRESS in ward.standin.removed_devices, "the device leaves the tree")
        assert not ward.standin.known(ADDRESS)
        await ward.world.sleep_until(14.5)  # back in range
        await ward.streaming(ADDRESS)
        assert ward.standin.known(ADDRESS) and ward.standin.connected(ADDRESS)
        assert ward.supervisor(ADDRESS).reconnects >= 1


async def test_cached_device_out_of_range_waits_for_its_advertisement(bluez_ward: Any) -> None:
    scenario = calm_patient({"at_s": 6.0, "fault": "disconnect", "duration_s": 6.0})
    options = {"temporary_timeout_s": 600.0}
    async with bluez_ward(scenario, quick_config(), speed=3.0, standin_options=options) as ward:
        await ward.streaming(ADDRESS)
        await until(lambda: not ward.standin.connected(ADDRESS), "the link drops")
        calls = ward.standin.connect_calls
        # BlueZ keeps the object of the vanished device; the gateway does not
        # hammer it with Connect calls that would fail, it waits for an
        # advertisement.
        await ward.world.sleep_until(11.5)
        assert ward.standin.known(ADDRESS)
        assert ward.standin.connect_calls == calls
        # Back in range: only an RSSI change on the cached object tells (no
        # InterfacesAdded), and that is enough.
        await ward.streaming(ADDRESS)
        assert ward.standin.removed_devices == []
        assert ward.standin.connect_calls == calls + 1


async def test_adapter_powered_off_and_on(bluez_ward: Any, broker: Any, collector: Any) -> None:
    status = await collector(broker, [STATUS])
    async with bluez_ward(calm_patient(), quick_config(), speed=2.0) as ward:
        await ward.streaming(ADDRESS)
        ward.standin.power("hci0", False)
        await status_says(status, "ble adapter_off: adapter hci0 is powered off")
        assert not ward.standin.connected(ADDRESS)
        # What the person on call runs: it says so, and exits non-zero.
        code, table = await status_command(broker)
        assert code == 3 and "DEGRADED: ble adapter_off" in table, table
        ward.standin.power("hci0", True)
        # BlueZ ended our discovery session at power-off: the gateway must
        # start a new one itself, or the wearable never comes back.
        await ward.streaming(ADDRESS)
        await status_says(status, None)
        assert ward.gateway.directory is not None
        assert ward.gateway.directory.scans_started == 2


async def test_adapter_removed_and_added_again(
    bluez_ward: Any, broker: Any, collector: Any
) -> None:
    status = await collector(broker, [STATUS])
    async with bluez_ward(calm_patient(), quick_config(), speed=2.0) as ward:
        await ward.streaming(ADDRESS)
        ward.standin.unplug("hci0")
        await status_says(status, "ble no_adapter")
        ward.standin.plug("hci0")
        await ward.streaming(ADDRESS)
        await status_says(status, None)


async def test_gateway_started_without_an_adapter_waits_for_one(
    bluez_ward: Any, broker: Any, collector: Any
) -> None:
    status = await collector(broker, [STATUS])
    options = {"absent": ("hci0",)}
    async with bluez_ward(
        calm_patient(), quick_config(), speed=2.0, standin_options=options
    ) as ward:
        # It keeps running and says why nothing can be monitored.
        await status_says(status, "ble no_adapter: no Bluetooth adapter (any adapter) present")
        assert not ward.service.done()
        ward.standin.plug("hci0")
        await ward.streaming(ADDRESS)
        await status_says(status, None)


async def test_bluetoothd_restart(bluez_ward: Any, broker: Any, collector: Any) -> None:
    status = await collector(broker, [STATUS])
    async with bluez_ward(calm_patient(), quick_config(), speed=2.0) as ward:
        await ward.streaming(ADDRESS)
        await ward.standin.crash()
        await status_says(status, "ble bluez_not_running")
        await ward.standin.start()
        await ward.streaming(ADDRESS)
        await status_says(status, None)


async def test_system_bus_restart(
    bluez_ward: Any, system_bus: Any, broker: Any, collector: Any
) -> None:
    status = await collector(broker, [STATUS])
    async with bluez_ward(calm_patient(), quick_config(), speed=2.0) as ward:
        await ward.streaming(ADDRESS)
        await ward.standin.crash()
        await system_bus.crash()  # dbus-daemon restarted: every connection drops
        await status_says(status, "ble no_system_bus")
        await system_bus.start()
        await status_says(status, "ble bluez_not_running")
        await ward.standin.start()
        await ward.streaming(ADDRESS)
        await status_says(status, None)


async def test_notifications_that_stop_while_the_link_stays_up(bluez_ward: Any) -> None:
    async with bluez_ward(calm_patient(), quick_config(), speed=2.0) as ward:
        await ward.streaming(ADDRESS)
        supervisor = ward.supervisor(ADDRESS)
        ward.standin.mute(ADDRESS)
        # The link stays up (no Connected=false): only silence tells.
        await until(lambda: supervisor.stalls == 1, "the gateway notices the silence")
        await ward.streaming(ADDRESS)
        assert supervisor.reconnects >= 1


async def test_adapter_chosen_in_the_config(bluez_ward: Any) -> None:
    options = {"adapters": ("hci0", "hci1")}
    config = quick_config(adapter="hci1")
    async with bluez_ward(calm_patient(), config, speed=2.0, standin_options=options) as ward:
        await ward.streaming(ADDRESS)
        assert ward.standin.connected(ADDRESS, adapter="hci1")
        assert not ward.standin.known(ADDRESS, adapter="hci0")
