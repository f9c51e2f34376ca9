"""The whole service: simulated wearables → gateway → engine → a real broker.

A subscriber on the broker sees what a physiotherapist's view would see: the
faller raises one fall alert, the sloucher a slouch alert after the dwell,
the control patient neither; the sloucher's wearable is buzzed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from ward import all_events_arrived, connected_then_speed_up, gateway_running

from alerts import AlertPublisher, MemorySink, parse_utc
from posture_monitor.demo import DEMO_SLOUCH_DWELL_S, demo_config
from simulator import SimulatedWorld, builtin_scenario_path, demo_scenario, load_scenario

SPEED = 20.0
SCENARIO_S = 60.0
THRESHOLD_DEG = 25.0


async def run_ward(broker: Any, collector: Any, *, seed: int = 7) -> tuple[Any, SimulatedWorld]:
    scenario = demo_scenario(3)
    config = demo_config(scenario)
    events = await collector(broker, ["posture/v1/#"])
    async with (
        SimulatedWorld(scenario, seed=seed, speed=1.0) as world,
        AlertPublisher(broker.settings(), gateway_id=config.gateway_id) as publisher,
        gateway_running(config, sink := MemorySink(forward=publisher), world),
    ):
        await connected_then_speed_up(sink, config, world, SPEED)
        await world.sleep_until(SCENARIO_S)
    await all_events_arrived(events, publisher)
    return events, world


def events_of(collector: Any, patient_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(m.payload)
        for m in collector.on_topic(f"posture/v1/patients/{patient_id}/events")
    ]


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@pytest.mark.timeout(60)
async def test_ward_alerts_reach_the_broker(broker: Any, collector: Any) -> None:
    received, world = await run_ward(broker, collector)
    sloucher, faller, control = (p.wearable.address for p in demo_scenario(3).patients)

    # The faller: exactly one fall alert, soon after the true impact.
    faller_events = events_of(received, "p-002")
    falls = [e for e in faller_events if e["type"] == "fall_detected"]
    assert len(falls) == 1, types_of(faller_events)
    assert falls[0]["severity"] == "high"
    # Wall and monotonic-derived times both travel (mono_time: alerts/clock.py).
    assert abs(parse_utc(falls[0]["mono_time"]) - parse_utc(falls[0]["time"])).total_seconds() < 30
    truth = world.truth(faller)
    (impact_s,) = truth.fall_impact_s
    impact_device_s = float(np.interp(impact_s, truth.t_s, truth.device_t_s))
    assert 0.0 <= falls[0]["device_time_s"] - impact_device_s <= 5.0

    # The sloucher: slouch_started once the flexion has stayed past the
    # threshold for the dwell time, and a buzz on the wearable.
    sloucher_events = events_of(received, "p-001")
    starts = [e for e in sloucher_events if e["type"] == "slouch_started"]
    assert len(starts) == 1, types_of(sloucher_events)
    truth = world.truth(sloucher)
    crossing = int(np.argmax(truth.flexion_deg > THRESHOLD_DEG))
    expected_device_s = truth.device_t_s[crossing] + DEMO_SLOUCH_DWELL_S
    assert abs(starts[0]["device_time_s"] - expected_device_s) < 1.0
    assert starts[0]["flexion_deg"] > THRESHOLD_DEG
    buzz_times = [t for t, _command in world.haptic_log(sloucher)]
    assert buzz_times, "the sloucher's wearable was never buzzed"

    # The control patient: no posture alert at all.
    control_types = types_of(events_of(received, "p-003"))
    assert "slouch_started" not in control_types
    assert "fall_detected" not in control_types
    assert world.haptic_log(control) == []

    # Retained state and gateway status, as a physiotherapist's view sees them.
    for patient_id in ("p-001", "p-002", "p-003"):
        states = received.on_topic(f"posture/v1/patients/{patient_id}/state")
        assert states, f"no state for {patient_id}"
        assert json.loads(states[-1].payload)["device_connected"] is True
        assert "mono_time" in json.loads(states[-1].payload)
    status = received.on_topic("posture/v1/gateways/demo-gateway/status")
    assert json.loads(status[0].payload)["status"] == "online"


@pytest.mark.timeout(60)
async def test_every_fall_type_on_rotated_pucks(broker: Any, collector: Any) -> None:
    # Pucks stuck on at any angle: the gateway has no calibration for the
    # patients who never walk before falling, and must still catch the falls.
    scenario = load_scenario(builtin_scenario_path("falls"))
    spins = [200.0, 135.0, 290.0, 90.0, 250.0]
    patients = tuple(
        replace(p, wearable=replace(p.wearable, mounting=replace(p.wearable.mounting, spin_deg=s)))
        for p, s in zip(scenario.patients, spins, strict=True)
    )
    scenario = replace(scenario, patients=patients)
    config = demo_config(scenario)
    received = await collector(broker, ["posture/v1/patients/+/events"])
    async with (
        SimulatedWorld(scenario, seed=2, speed=1.0) as world,
        AlertPublisher(broker.settings(), gateway_id=config.gateway_id) as publisher,
        gateway_running(config, sink := MemorySink(forward=publisher), world),
    ):
        await connected_then_speed_up(sink, config, world, SPEED)
        await world.sleep_until(90.0)
    await all_events_arrived(received, publisher)
    for patient in scenario.patients:
        kinds = types_of(events_of(received, patient.id))
        expected = 0 if patient.id == "confounders" else 1
        assert kinds.count("fall_detected") == expected, (patient.id, kinds)
        assert "slouch_started" not in kinds, (patient.id, kinds)
