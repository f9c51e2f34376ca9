"""The gateway, unchanged, over bleak's real BlueZ backend and the stand-in.

The same demo ward runs twice with the same seed: over the simulator's bleak
backend and over BlueZ (D-Bus, ``InterfacesAdded``, ``ServicesResolved``,
``PropertiesChanged`` on ``Value``). A subscriber on the broker must see the
same alerts for the same patients, at the same device times within one
packet, plus the battery alert of the wearable whose battery runs down.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from ward import gateway_running

from alerts import AlertPublisher
from posture_monitor.demo import demo_config
from simulator import Scenario, SimulatedWorld, demo_scenario

SPEED = 10.0
SCENARIO_S = 60.0
PACKET_S = 10 / 50  # 10 samples at 50 Hz

pytestmark = pytest.mark.bluez


def ward_scenario() -> Scenario:
    """The demo ward; the control patient's battery crosses 20 % during the run."""
    scenario = demo_scenario(3)
    control = scenario.patients[2]
    drained = replace(
        control,
        wearable=replace(control.wearable, battery_pct=22.0, battery_drain_pct_per_h=300.0),
    )
    return replace(scenario, patients=(*scenario.patients[:2], drained))


def alerts_by_patient(collector: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for message in collector.on_topic("posture/v1/patients/+/events"):
        event = json.loads(message.payload)
        out.setdefault(event["patient_id"], []).append(event)
    return out


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if e["type"] != "device_connected"]


async def flushed(publisher: AlertPublisher) -> int:
    """Wait until the broker acknowledged every event; return how many were published."""
    while publisher.metrics.events_pending:
        await asyncio.sleep(0.05)
    return publisher.metrics.events_published


async def all_events_arrived(collector: Any, published: int) -> None:
    await collector.wait_for(
        lambda messages: sum(m.topic.endswith("/events") for m in messages) >= published,
        timeout_s=10.0,
    )


@pytest.mark.timeout(90)
async def test_same_alerts_as_over_the_simulator_backend(
    bluez_ward: Any, broker: Any, collector: Any
) -> None:
    scenario = ward_scenario()
    config = demo_config(scenario)

    reference = await collector(broker, ["posture/v1/#"])
    async with (
        SimulatedWorld(scenario, seed=7, speed=SPEED) as world,
        AlertPublisher(broker.settings(), gateway_id=config.gateway_id) as publisher,
        gateway_running(config, publisher, world),
    ):
        await world.sleep_until(SCENARIO_S)
        published = await flushed(publisher)
    await all_events_arrived(reference, published)
    await reference.stop()

    received = await collector(broker, ["posture/v1/#"])
    async with bluez_ward(scenario, config, seed=7, speed=SPEED) as ward:
        await ward.world.sleep_until(SCENARIO_S)
        notifications = ward.standin.notifications
        haptics = ward.world.haptic_log(scenario.patients[0].wearable.address)
        published = await flushed(ward.publisher)
    await all_events_arrived(received, published)

    expected = alerts_by_patient(reference)
    seen = alerts_by_patient(received)
    # What the simulator backend produced is the reference: a slouch, a fall
    # and a battery alert, one patient each.
    assert "slouch_started" in kinds(expected["p-001"])
    assert kinds(expected["p-002"]).count("fall_detected") == 1
    assert "battery_low" in kinds(expected["p-003"])
    for patient_id in ("p-001", "p-002", "p-003"):
        assert kinds(seen.get(patient_id, [])) == kinds(expected[patient_id]), patient_id
        for ours, theirs in zip(seen[patient_id], expected[patient_id], strict=False):
            if ours.get("device_time_s") is not None and theirs.get("device_time_s") is not None:
                assert abs(ours["device_time_s"] - theirs["device_time_s"]) <= PACKET_S, (
                    patient_id,
                    ours["type"],
                )
    # It really went over D-Bus: every packet was a PropertiesChanged on Value,
    # and the slouch buzz was a WriteValue on the control characteristic.
    assert notifications > 3 * 5 * SCENARIO_S * 0.8
    assert haptics, "the sloucher's wearable was never buzzed over WriteValue"
    statuses = [
        json.loads(m.payload)
        for m in received.on_topic("posture/v1/gateways/demo-gateway/status")
        if not m.retain
    ]
    online = [s for s in statuses if s["status"] == "online"]
    assert online, statuses
    assert all(s["metrics"]["degraded"] is None for s in online), "healthy, yet degraded"
