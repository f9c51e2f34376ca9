"""The simulated wearables through the real bleak API (BleakScanner, BleakClient)."""

from __future__ import annotations

import asyncio
import itertools
import time
import tomllib
from collections.abc import Callable

import numpy as np
import pytest
from bleak import BleakClient, BleakGATTCharacteristic, BleakScanner
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError

from device_gateway.protocol import (
    BATTERY_LEVEL_CHAR_UUID,
    CONTROL_CHAR_UUID,
    IMU_CHAR_UUID,
    POSTURE_SERVICE_UUID,
    BuzzCommand,
    BuzzPattern,
    ImuPacket,
    decode_battery_level,
    decode_imu_packet,
    encode_buzz,
    encode_set_sample_rate,
)
from simulator import Scenario, SimulatedWorld, demo_scenario, parse_scenario

FAULTY = """
[[patients]]
id = "p-drop"
[patients.wearable]
address = "C0:FF:EE:00:00:0A"
[[patients.timeline]]
at_s = 0.0
activity = "sit"
[[patients.timeline]]
at_s = 3.0
fault = "disconnect"
duration_s = 20.0

[[patients]]
id = "p-reboot"
[patients.wearable]
address = "C0:FF:EE:00:00:0B"
sequence_start = 900
[[patients.timeline]]
at_s = 0.0
activity = "stand"
[[patients.timeline]]
at_s = 3.0
fault = "reboot"
down_s = 1.0

[[patients]]
id = "p-battery"
[patients.wearable]
address = "C0:FF:EE:00:00:0C"
battery_pct = 50.0
[[patients.timeline]]
at_s = 0.0
activity = "sit"
[[patients.timeline]]
at_s = 1.0
fault = "battery_drain"
pct_per_h = 7200.0
"""


# Only a guard against a hang, never a measurement: a loaded machine may take
# many times longer than an idle one, and nothing here depends on how long.
HANG_S = 30.0


async def until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds (checked every 10 ms), or fail on a hang."""
    async with asyncio.timeout(HANG_S):
        while not condition():
            await asyncio.sleep(0.01)


def faulty() -> Scenario:
    return parse_scenario(tomllib.loads(FAULTY), source="faulty.toml")


class Recorder:
    """Notification callback that decodes, and remembers when packets came."""

    def __init__(self, world: SimulatedWorld) -> None:
        self.world = world
        self.packets: list[ImuPacket] = []
        self.raw: list[bytes] = []
        self.received_s: list[float] = []
        self.arrived = asyncio.Event()

    def __call__(self, sender: BleakGATTCharacteristic, data: bytearray) -> None:
        assert isinstance(data, bytearray)
        self.raw.append(bytes(data))
        self.packets.append(decode_imu_packet(data))
        self.received_s.append(self.world.scenario_time())
        self.arrived.set()


async def test_scanner_discovers_the_wearables_by_service_uuid() -> None:
    async with SimulatedWorld(demo_scenario(), seed=1, speed=20) as world:
        async with BleakScanner(
            service_uuids=[POSTURE_SERVICE_UUID], backend=world.scanner_backend
        ) as scanner:
            await until(
                lambda: (
                    set(scanner.discovered_devices_and_advertisement_data) == set(world.addresses)
                )
            )
        found = scanner.discovered_devices_and_advertisement_data
        assert set(found) == set(world.addresses)
        for device, adv in found.values():
            assert adv.local_name is not None and adv.local_name.startswith("PW-")
            assert device.name == adv.local_name
            assert POSTURE_SERVICE_UUID in adv.service_uuids
            assert -100 <= adv.rssi <= -20
        heart_rate = ["0000180d-0000-1000-8000-00805f9b34fb"]
        others = await BleakScanner.discover(
            timeout=0.05, service_uuids=heart_rate, backend=world.scanner_backend
        )
        assert others == []
        by_name = await BleakScanner.find_device_by_filter(
            lambda d, ad: ad.local_name == "PW-0003", timeout=HANG_S, backend=world.scanner_backend
        )
        assert by_name is not None and by_name.address == "C0:FF:EE:00:00:03"
        by_address = await BleakScanner.find_device_by_address(
            "c0:ff:ee:00:00:02", timeout=HANG_S, backend=world.scanner_backend
        )
        assert by_address is not None and by_address.name == "PW-0002"


async def test_client_connects_and_streams_packets_that_decode() -> None:
    async with SimulatedWorld(demo_scenario(), seed=1, speed=20) as world:
        device = await BleakScanner.find_device_by_address(
            "C0:FF:EE:00:00:02", timeout=HANG_S, backend=world.scanner_backend
        )
        assert device is not None
        recorder = Recorder(world)
        async with BleakClient(device, backend=world.client_backend, timeout=HANG_S) as client:
            assert client.is_connected and client.mtu_size == 247 and client.name == "PW-0002"
            service = client.services.get_service(POSTURE_SERVICE_UUID)
            assert service is not None
            assert {c.uuid for c in service.characteristics} == {IMU_CHAR_UUID, CONTROL_CHAR_UUID}
            assert "notify" in client.services.get_characteristic(IMU_CHAR_UUID).properties  # type: ignore[union-attr]
            await client.start_notify(IMU_CHAR_UUID, recorder)
            await until(lambda: len(recorder.packets) >= 25)
            assert decode_battery_level(await client.read_gatt_char(BATTERY_LEVEL_CHAR_UUID)) == 64
            assert (
                await client.read_gatt_char("00002a24-0000-1000-8000-00805f9b34fb") == b"acc_gyro"
            )
            cccd = client.services.get_characteristic(IMU_CHAR_UUID).descriptors[0]  # type: ignore[union-attr]
            assert await client.read_gatt_descriptor(cccd.handle) == b"\x01\x00"
        assert not client.is_connected
    packets = recorder.packets
    assert [p.sequence for p in packets] == list(
        range(packets[0].sequence, packets[0].sequence + len(packets))
    )
    for packet, received in zip(packets, recorder.received_s, strict=True):
        assert packet.interval_us == 10_000 and packet.gyr_dps is not None
        last_sample_s = packet.t0_ms / 1000 + (packet.sample_count - 1) * 0.01
        # Never sent before its samples exist. How promptly is the world's
        # pacing (test_a_machine_that_falls_behind_...), not a wall-clock limit.
        assert received >= last_sample_s
        assert 0.5 < float(np.linalg.norm(packet.acc_g, axis=1).max()) < 2.5  # walking


async def test_control_writes_buzz_and_sample_rate() -> None:
    async with SimulatedWorld(demo_scenario(), seed=1, speed=20) as world:
        recorder = Recorder(world)
        async with BleakClient(
            "C0:FF:EE:00:00:01", backend=world.client_backend, timeout=HANG_S
        ) as client:
            await client.start_notify(IMU_CHAR_UUID, recorder)
            await until(lambda: len(recorder.packets) > 0)  # streams at the old rate first
            before = world.scenario_time()
            await client.write_gatt_char(
                CONTROL_CHAR_UUID, encode_buzz(BuzzPattern.DOUBLE, 2), response=True
            )
            await client.write_gatt_char(
                CONTROL_CHAR_UUID, encode_buzz(BuzzPattern.SHORT), response=False
            )
            log = world.haptic_log("C0:FF:EE:00:00:01")
            assert [cmd for _, cmd in log] == [
                BuzzCommand(BuzzPattern.DOUBLE, 2, 300),
                BuzzCommand(BuzzPattern.SHORT, 1, 300),
            ]
            assert before <= log[0][0] <= world.scenario_time()
            with pytest.raises(BleakGATTProtocolError):
                await client.write_gatt_char(CONTROL_CHAR_UUID, b"\x07\x00", response=True)
            await client.write_gatt_char(CONTROL_CHAR_UUID, b"\x07\x00", response=False)
            with pytest.raises(BleakGATTProtocolError):
                await client.write_gatt_char(BATTERY_LEVEL_CHAR_UUID, b"\x10", response=True)
            await client.write_gatt_char(
                CONTROL_CHAR_UUID, encode_set_sample_rate(200), response=True
            )
            await until(lambda: bool(recorder.packets) and recorder.packets[-1].interval_us == 5000)
            assert world.status("C0:FF:EE:00:00:01").sample_rate_hz == 200
    intervals = [p.interval_us for p in recorder.packets]
    assert intervals[0] == 20_000 and intervals[-1] == 5000
    assert len(world.haptic_log("C0:FF:EE:00:00:01")) == 2


async def test_link_loss_calls_back_and_reconnects_after_the_fault() -> None:
    async with SimulatedWorld(faulty(), seed=1, speed=10) as world:
        lost = asyncio.Event()
        recorder = Recorder(world)
        client = BleakClient(
            "C0:FF:EE:00:00:0A", lambda c: lost.set(), backend=world.client_backend, timeout=HANG_S
        )
        await client.connect()
        await client.start_notify(IMU_CHAR_UUID, recorder)
        await asyncio.wait_for(lost.wait(), timeout=HANG_S)
        assert world.scenario_time() >= 3.0  # not before the fault
        # Nothing sampled after the fault at 3 s reached the client.
        last = recorder.packets[-1]
        assert last.t0_ms / 1000 + (last.sample_count - 1) * 0.01 < 3.0
        assert not client.is_connected
        assert not world.status("C0:FF:EE:00:00:0A").reachable
        with pytest.raises(BleakError):
            await client.read_gatt_char(BATTERY_LEVEL_CHAR_UUID)
        # Out of range until 23 s (20 scenario s of margin, 2 s real at speed
        # 10): the connect times out.
        with pytest.raises(TimeoutError):
            await client.connect(timeout=0.05)
        await client.connect(timeout=HANG_S)  # back in range at 23 s
        assert world.scenario_time() >= 23.0
        recorder.arrived.clear()
        await client.start_notify(IMU_CHAR_UUID, recorder)
        await asyncio.wait_for(recorder.arrived.wait(), timeout=HANG_S)
        sequences = [p.sequence for p in recorder.packets]
        assert max(b - a for a, b in itertools.pairwise(sequences)) >= 15
        await client.disconnect()


async def test_reboot_through_bleak_restarts_sequence_and_clock() -> None:
    async with SimulatedWorld(faulty(), seed=1, speed=10) as world:
        lost = asyncio.Event()
        recorder = Recorder(world)
        client = BleakClient(
            "C0:FF:EE:00:00:0B", lambda c: lost.set(), backend=world.client_backend, timeout=HANG_S
        )
        await client.connect()
        await client.start_notify(IMU_CHAR_UUID, recorder)
        await asyncio.wait_for(lost.wait(), timeout=HANG_S)
        first_boot = list(recorder.packets)
        assert first_boot[0].sequence >= 900
        await client.connect(timeout=HANG_S)
        recorder.packets.clear()
        recorder.received_s.clear()
        recorder.arrived.clear()
        await client.start_notify(IMU_CHAR_UUID, recorder)
        await asyncio.wait_for(recorder.arrived.wait(), timeout=HANG_S)
        # Sequence and device clock restart at the boot (scenario 4 s): the
        # clock reads the time since then, whenever the reconnect happened.
        packet = recorder.packets[0]
        assert packet.sequence < first_boot[0].sequence
        assert packet.t0_ms / 1000 + 4.0 <= recorder.received_s[0]
        assert world.status("C0:FF:EE:00:00:0B").stats.boots == 2
        await client.disconnect()


async def test_battery_level_notifies_and_reads() -> None:
    async with SimulatedWorld(faulty(), seed=1, speed=10) as world:
        levels: list[int] = []
        async with BleakClient(
            "C0:FF:EE:00:00:0C", backend=world.client_backend, timeout=HANG_S
        ) as client:
            await client.start_notify(
                BATTERY_LEVEL_CHAR_UUID, lambda c, d: levels.append(decode_battery_level(d))
            )
            await until(lambda: len(levels) >= 4)
            now = decode_battery_level(await client.read_gatt_char(BATTERY_LEVEL_CHAR_UUID))
        assert len(levels) >= 4 and levels == sorted(levels, reverse=True)
        assert levels[-1] - 1 <= now <= levels[-1]  # drains 2 % per scenario second


async def test_unknown_address_busy_wearable_and_bad_lifecycle() -> None:
    world = SimulatedWorld(demo_scenario(), seed=1, speed=20)
    with pytest.raises(BleakError):  # not started: no Bluetooth
        await BleakScanner.discover(timeout=0.01, backend=world.scanner_backend)
    await world.start()
    with pytest.raises(RuntimeError):
        await world.start()
    with pytest.raises(BleakDeviceNotFoundError):
        await BleakClient("AA:BB:CC:DD:EE:FF", backend=world.client_backend).connect()
    first = BleakClient("C0:FF:EE:00:00:03", backend=world.client_backend, timeout=HANG_S)
    await first.connect()
    with pytest.raises(TimeoutError):  # one central at a time; it stops advertising
        await BleakClient("C0:FF:EE:00:00:03", backend=world.client_backend, timeout=0.1).connect()
    await world.stop()
    frozen = world.scenario_time()
    await asyncio.sleep(0.02)
    assert world.scenario_time() == frozen
    assert not first.is_connected
    await world.stop()  # idempotent


async def test_a_raising_callback_does_not_stop_the_world() -> None:
    async with SimulatedWorld(demo_scenario(), seed=1, speed=20) as world:
        calls: list[int] = []

        def broken(sender: BleakGATTCharacteristic, data: bytearray) -> None:
            calls.append(len(data))
            raise RuntimeError("gateway bug")

        async with BleakClient(
            "C0:FF:EE:00:00:01", backend=world.client_backend, timeout=HANG_S
        ) as client:
            await client.start_notify(IMU_CHAR_UUID, broken)
            await until(lambda: len(calls) >= 5)  # still delivering after raising


async def test_same_seed_same_bytes_through_bleak() -> None:
    async def collect(seed: int) -> dict[int, bytes]:
        async with SimulatedWorld(demo_scenario(), seed=seed, speed=20) as world:
            recorder = Recorder(world)
            async with BleakClient(
                "C0:FF:EE:00:00:03", backend=world.client_backend, timeout=HANG_S
            ) as client:
                await client.start_notify(IMU_CHAR_UUID, recorder)
                await until(lambda: len(recorder.packets) >= 20)
        return {p.sequence: raw for p, raw in zip(recorder.packets, recorder.raw, strict=True)}

    first, second, other = await collect(7), await collect(7), await collect(8)
    common = set(first) & set(second)
    assert len(common) >= 10
    assert all(first[s] == second[s] for s in common)
    assert any(first[s] != other[s] for s in set(first) & set(other))


async def test_a_machine_that_falls_behind_slows_the_scenario_instead_of_bursting() -> None:
    """A stalled event loop (an overloaded machine) must not make every
    wearable hand over seconds of packets at once: scenario time slips."""
    async with SimulatedWorld(demo_scenario(), seed=1, speed=10) as world:
        recorder = Recorder(world)
        async with BleakClient(
            "C0:FF:EE:00:00:02", backend=world.client_backend, timeout=HANG_S
        ) as client:
            await client.start_notify(IMU_CHAR_UUID, recorder)
            await world.sleep(1.0)
            before = len(recorder.packets)
            time.sleep(0.6)  # the loop stalls: 6 scenario s at speed 10
            await recorder_grows(recorder, before)
            burst = len(recorder.packets) - before
            await world.sleep(1.0)
        # The stall was 6 scenario s; at most max(1 s, 10 ticks) = 2 s was
        # caught up, the rest given up. A loaded machine only stalls longer.
        assert world.slipped_s > 2.0
        # 100 Hz, 10 samples a packet: 10 packets per scenario second.
        assert burst <= 10 * 2.5
        packets = recorder.packets
        assert [p.sequence for p in packets] == list(
            range(packets[0].sequence, packets[0].sequence + len(packets))
        )


async def recorder_grows(recorder: Recorder, count: int) -> None:
    async with asyncio.timeout(HANG_S):
        while len(recorder.packets) <= count:
            recorder.arrived.clear()
            await recorder.arrived.wait()
