"""alerts.MemorySink: the shipped in-memory sink, as a test or an embedder uses it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from brokers import HANG_S
from ward import gateway_running

from alerts import Activity, AlertEvent, AlertSink, EventType, MemorySink, PatientState
from device_gateway import GatewayConfig
from simulator import SimulatedWorld, demo_scenario


def event(kind: EventType, patient_id: str = "p-1") -> AlertEvent:
    return AlertEvent(kind, patient_id, "ward-3", datetime.now(UTC))


def state(patient_id: str, flexion_deg: float) -> PatientState:
    return PatientState(
        patient_id,
        "ward-3",
        datetime.now(UTC),
        flexion_deg,
        0.0,
        Activity.UPRIGHT,
        False,
        True,
        80,
        True,
        25.0,
    )


async def test_a_waiter_is_woken_by_the_event_it_waits_for() -> None:
    sink = MemorySink()
    await sink.publish_event(event(EventType.DEVICE_CONNECTED))
    async with asyncio.timeout(HANG_S):
        assert (await sink.wait_for_event()).type is EventType.DEVICE_CONNECTED  # already kept
        waiting = asyncio.create_task(sink.wait_for_event(EventType.FALL_DETECTED))
        await asyncio.sleep(0)  # the waiter is registered
        await sink.publish_event(event(EventType.SLOUCH_STARTED))
        assert not waiting.done()
        fall = event(EventType.FALL_DETECTED, "p-2")
        await sink.publish_event(fall)
        assert await waiting is fall
        by_patient = await sink.wait_for_event(lambda e: e.patient_id == "p-2")
    assert by_patient is fall
    assert [e.type for e in sink.of_type(EventType.FALL_DETECTED, EventType.SLOUCH_STARTED)] == [
        EventType.SLOUCH_STARTED,
        EventType.FALL_DETECTED,
    ]
    assert sink.for_patient("p-2") == [fall]


async def test_states_and_metrics_keep_the_latest_and_forward_passes_everything_on() -> None:
    downstream = MemorySink()
    sink: AlertSink = MemorySink(forward=downstream)
    assert isinstance(sink, MemorySink)
    sink.update_state(state("p-1", 10.0))
    sink.update_state(state("p-1", 31.0))
    metrics = {"packets": 5}
    sink.set_device_metrics("p-1", metrics)
    metrics["packets"] = 6  # the caller's dict changes later: the sink kept a copy
    the_fall = event(EventType.FALL_DETECTED)
    await sink.publish_event(the_fall)
    for kept in (sink, downstream):
        assert kept.states["p-1"].flexion_deg == 31.0 and len(kept.states) == 1
        assert list(kept.events) == [the_fall]
    assert sink.device_metrics == {"p-1": {"packets": 5}}
    sink.set_degraded("ble", "adapter_off", "adapter hci0 is powered off")
    assert downstream.degraded == {"ble": "ble adapter_off: adapter hci0 is powered off"}
    sink.set_degraded("ble", None)
    assert not sink.degraded and not downstream.degraded


async def test_a_bounded_sink_forgets_the_oldest_and_bad_bounds_are_refused() -> None:
    sink = MemorySink(max_events=2)
    kinds = [EventType.DEVICE_CONNECTED, EventType.SLOUCH_STARTED, EventType.FALL_DETECTED]
    for kind in kinds:
        await sink.publish_event(event(kind))
    assert [e.type for e in sink.events] == kinds[1:]
    sink.clear()
    assert not sink.events and not sink.states
    with pytest.raises(ValueError, match="max_events"):
        MemorySink(max_events=0)


@pytest.mark.timeout(60)
async def test_the_real_gateway_hands_its_fall_to_the_memory_sink() -> None:
    scenario = demo_scenario()
    config = GatewayConfig.from_mapping(
        {
            "gateway_id": "memory-test",
            "wearables": [
                {"address": p.wearable.address, "patient_id": p.id} for p in scenario.patients
            ],
        }
    )
    async with MemorySink() as sink:
        async with (
            SimulatedWorld(scenario, seed=5, speed=10.0) as world,
            gateway_running(config, sink, world),
            asyncio.timeout(HANG_S),
        ):
            fall = await sink.wait_for_event(EventType.FALL_DETECTED)
        assert fall.patient_id == "p-002" and fall.gateway_id == "memory-test"
        assert {"p-001", "p-002", "p-003"} <= set(sink.states)
        assert "packets" in sink.device_metrics["p-002"]  # link counters reach it too
