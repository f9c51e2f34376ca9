"""Many wearables through one gateway's engine tick give each patient what
a posture engine of its own gives on the same samples.

The gateway runs every wearable's samples through batched engines, one pass
per tick (``device_gateway/engine_tick.py``). What a physiotherapist sees must
not change: each patient's slouch and fall events at the same sample times,
with that patient's own slouch prescription, across wearables that drop out
and come back, one that is out of range when the gateway starts, and two
stream shapes (50 Hz with gyroscope, 25 Hz accelerometer only). The reference
is a ``PostureEngine`` per wearable fed the very packets the gateway
received, tapped at bleak's notification callback.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from bluez_harness import until

from alerts import EventType, MemorySink
from common.errors import PacketError
from device_gateway import Gateway, GatewayConfig
from device_gateway.protocol import IMU_CHAR_UUID, decode_imu_packet
from device_gateway.timeline import Timeline
from posture import EngineConfig, PostureEngine, PostureEventKind, SlouchSettings
from simulator import Scenario, SimulatedWorld, parse_scenario

SPEED = 8.0
SCENARIO_S = 40.0
POSTURE_TYPES = ("slouch_started", "slouch_ended", "fall_detected", "fall_cancelled")
DWELL_S = 4.0


def _patient(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scenario entry and gateway config entry of patient ``i`` (roles cycle)."""
    address = f"C0:FF:EE:00:0A:{i:02X}"
    pid = f"t-{i:03d}"
    role = i % 6
    wearable: dict[str, Any] = {"address": address}
    settings: dict[str, Any] = {"address": address, "patient_id": pid, "slouch_dwell_s": DWELL_S}
    if role in (0, 1):  # the same 35° slouch: reminded at 20°, not at 45°
        timeline = [
            {"at_s": 0.0, "activity": "sit"},
            {"at_s": 6.0, "activity": "slouch", "flexion_deg": 35.0, "duration_s": 14.0},
        ]
        settings["slouch_threshold_deg"] = 20.0 if role == 0 else 45.0
    elif role == 2:
        timeline = [
            {"at_s": 0.0, "activity": "stand"},
            {"at_s": 3.0, "activity": "walk"},
            {"at_s": 9.0 + i % 5, "activity": "fall", "direction": "forward"},
        ]
    elif role == 3:  # another stream shape: accelerometer only, 25 Hz
        wearable.update(model="acc_only", sample_rate_hz=25)
        timeline = [
            {"at_s": 0.0, "activity": "sit"},
            {"at_s": 5.0, "activity": "slouch", "flexion_deg": 40.0, "duration_s": 15.0},
        ]
    elif role == 4:  # drops out mid-run and comes back
        timeline = [
            {"at_s": 0.0, "activity": "stand"},
            {"at_s": 2.0, "activity": "walk", "duration_s": 30.0},
            {"at_s": 12.0, "fault": "disconnect", "duration_s": 6.0},
        ]
    else:  # out of range at start: connects mid-run, then falls
        timeline = [
            {"at_s": 0.0, "activity": "stand"},
            {"at_s": 0.0, "fault": "disconnect", "duration_s": 10.0},
            {"at_s": 14.0, "activity": "walk"},
            {"at_s": 22.0, "activity": "fall", "direction": "forward"},
        ]
    return {"id": pid, "wearable": wearable, "timeline": timeline}, settings


def ward(patients: int) -> tuple[Scenario, GatewayConfig]:
    entries = [_patient(i) for i in range(patients)]
    scenario = parse_scenario(
        {"scenario": {"name": "tick-ward"}, "patients": [e for e, _ in entries]},
        source="<tick ward>",
    )
    config = GatewayConfig.from_mapping(
        {
            "gateway_id": "tick-test",
            "ble": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5},
            "wearables": [s for _, s in entries],
        }
    )
    return scenario, config


class NotificationTap:
    """Every IMU notification the gateway's bleak client received, per
    wearable and connection, in order (a client backend that records and
    passes on)."""

    def __init__(self, world: SimulatedWorld) -> None:
        self.connections: dict[str, list[list[bytes]]] = defaultdict(list)
        tap = self

        class TappedClient(world.client_backend):  # type: ignore[name-defined]
            async def start_notify(
                self, characteristic: Any, callback: Callable[[bytearray], None], **kwargs: Any
            ) -> None:
                if characteristic.uuid == IMU_CHAR_UUID:
                    packets: list[bytes] = []
                    tap.connections[self.address.upper()].append(packets)

                    def tapped(data: bytearray) -> None:
                        packets.append(bytes(data))
                        callback(data)

                    await super().start_notify(characteristic, tapped, **kwargs)
                else:
                    await super().start_notify(characteristic, callback, **kwargs)

        self.client_backend = TappedClient


def reference_events(
    connections: list[list[bytes]], slouch: SlouchSettings
) -> list[tuple[str, float, float | None]]:
    """A PostureEngine of its own over the same packets, as the gateway
    used to run one per wearable: (type, device time) of its posture events."""
    timeline = Timeline()
    engine: PostureEngine | None = None
    found: list[tuple[str, float, float | None]] = []
    for packets in connections:
        timeline.new_connection()
        for data in packets:
            try:
                packet = decode_imu_packet(data)
            except PacketError:
                continue
            block = timeline.accept(packet, 0.0)
            if block is None:
                continue
            if engine is None:
                engine = PostureEngine(
                    EngineConfig(
                        sample_rate_hz=packet.sample_rate_hz,
                        has_gyro=packet.gyr_dps is not None,
                        slouch=slouch,
                    )
                )
            out = engine.process(block.t_s, block.acc_g, block.gyr_dps)
            found += [
                (e.kind.value, round(e.t_s, 3), _angle(e.flexion_deg))
                for e in out.events
                if e.kind is not PostureEventKind.CALIBRATED
            ]
    return found


def _angle(value: float) -> float | None:
    """As the event carries it (rounded to 0.01°, None when not finite)."""
    return round(value, 2) if math.isfinite(value) else None


@pytest.mark.timeout(120)
async def test_many_wearables_get_the_events_of_an_engine_each() -> None:
    scenario, config = ward(24)
    sink = MemorySink()
    late = {p.id for p in scenario.patients if int(p.id[2:]) % 6 == 5}
    async with SimulatedWorld(scenario, seed=11, speed=1.0) as world:
        tap = NotificationTap(world)
        gateway = Gateway(
            config,
            sink,
            scanner_backend=world.scanner_backend,
            client_backend=tap.client_backend,
        )
        async with asyncio.TaskGroup() as tasks:
            service = tasks.create_task(gateway.run(), name="gateway under test")
            present = {w.patient_id for w in config.wearables} - late
            await until(
                lambda: present <= {e.patient_id for e in sink.of_type(EventType.DEVICE_CONNECTED)},
                "every wearable in range connected",
            )
            world.set_speed(SPEED)
            await world.sleep_until(SCENARIO_S)
            await world.stop()  # no more notifications: what was tapped is all there is
            tick = gateway.tick
            assert tick is not None
            for s in gateway.supervisors:
                await tick.flush(s._ticked)
            haptics = {a: world.haptic_log(a) for a in world.addresses}
            service.cancel()

    by_address = {w.address: w for w in config.wearables}
    got: dict[str, list[tuple[str, float, float | None]]] = defaultdict(list)
    for e in sink.events:
        if e.type.value in POSTURE_TYPES:
            assert e.device_time_s is not None
            got[e.patient_id].append((e.type.value, e.device_time_s, e.flexion_deg))
    expected = {
        by_address[a].patient_id: reference_events(c, by_address[a].slouch)
        for a, c in tap.connections.items()
    }
    assert set(expected) == {w.patient_id for w in config.wearables}  # every one streamed
    for patient_id, events in expected.items():
        assert got[patient_id] == events, patient_id
    # What the ward did, so the comparison above is not of empty lists.
    kinds = {(pid[2:], kind) for pid, evs in got.items() for kind, _, _ in evs}
    for i in range(24):
        role = i % 6
        mine = {k for p, k in kinds if int(p) == i}
        if role in (0, 3):
            assert "slouch_started" in mine, i
        if role == 1:
            assert not mine, i  # 35° is below this patient's 45° threshold
        if role in (2, 5):
            assert "fall_detected" in mine, i
    # The reminder reached the wearable of every patient who was reminded.
    for w in config.wearables:
        reminded = "slouch_started" in {k for k, _, _ in got[w.patient_id]}
        assert bool(haptics[w.address]) == reminded, w.patient_id
    # The wearable that dropped out came back, and the late one connected.
    for role, connections in ((4, 2), (5, 1)):
        for i in range(role, 24, 6):
            assert len(tap.connections[f"C0:FF:EE:00:0A:{i:02X}"]) >= connections, i
    assert sum(s.counters.queue_dropped for s in gateway.supervisors) == 0
    # Two stream shapes, two engines; fewer engine calls than packets.
    assert tick is not None and len(tick.slots.engines) == 2
    packets = sum(len(p) for c in tap.connections.values() for p in c)
    assert tick.engine_calls < packets / 5
