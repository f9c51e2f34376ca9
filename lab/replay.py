"""Recorded wearables replayed in real time, as a bleak backend.

``bench gateway`` measures what the gateway itself costs per wearable. Over
the simulator's backend that figure would include the simulator's physics
(about as much again), so here each wearable's notifications are computed
once, before the measurement, by the simulator (:func:`record`), and a
:class:`ReplayWard` hands the same bytes to the gateway at their recorded
times through bleak's own ``BleakScanner``/``BleakClient`` API: the gateway
runs unchanged, and the only work added per packet is one heap operation
and the notification callback, which a real BLE stack costs too.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import (
    AdvertisementData,
    AdvertisementDataCallback,
    BaseBleakScanner,
)
from bleak.exc import BleakError

from device_gateway.protocol import (
    BATTERY_LEVEL_CHAR_UUID,
    IMU_CHAR_UUID,
    POSTURE_SERVICE_UUID,
    encode_battery_level,
)
from simulator import Patient, SimulatedWearable
from simulator.emissions import Notification
from simulator.gatt import MTU, build_services

__all__ = ["Recording", "ReplayWard", "record"]


@dataclass(frozen=True)
class Recording:
    """One patient's notifications: ``(scenario time s, bytes)`` in time order."""

    patient: Patient
    packets: tuple[tuple[float, bytes], ...]
    fall_impacts_s: tuple[float, ...]
    """Scenario times of the true impacts, for latency."""
    battery_pct: int


def record(patient: Patient, seconds: float, *, index: int = 0, seed: int = 0) -> Recording:
    """Run ``patient``'s wearable for ``seconds`` of scenario time and keep its packets."""
    wearable = SimulatedWearable(patient, index=index, seed=seed)
    packets: list[tuple[float, bytes]] = []
    step_s = 1.0
    t = 0.0
    while t < seconds:
        t = min(t + step_s, seconds)
        for emission in wearable.advance(t, streaming=True):
            if isinstance(emission, Notification) and emission.kind == "packet":
                packets.append((emission.t_s, emission.data))
    impacts = tuple(f.impact_s for f in wearable.trajectory.falls if f.impact_s < seconds)
    return Recording(patient, tuple(packets), impacts, wearable.battery_percent)


class ReplayWard:
    """``len(assignment)`` wearables, wearable ``i`` replaying ``recordings[assignment[i]]``.

    Wearable ``i`` starts its recording ``start_offsets_s[i]`` after it is
    subscribed to, so that packets and falls of many wearables spread out in
    time as they would on a ward. Pass ``scanner_backend`` and
    ``client_backend`` to the gateway; run :meth:`run` beside it.
    """

    def __init__(
        self,
        recordings: Sequence[Recording],
        assignment: Sequence[int],
        start_offsets_s: Sequence[float],
    ) -> None:
        if len(assignment) != len(start_offsets_s):
            raise ValueError("one start offset per wearable expected")
        self.recordings = tuple(recordings)
        self.addresses = tuple(_address(i) for i in range(len(assignment)))
        self._recording = dict(zip(self.addresses, assignment, strict=True))
        self._offset_s = dict(zip(self.addresses, start_offsets_s, strict=True))
        self._subscribed: dict[str, Callable[[bytearray], None]] = {}
        self.started_at: dict[str, float] = {}
        """``loop.time()`` at which each wearable's recording time 0 was (or will be) replayed."""
        self._due: list[tuple[float, int, str, int]] = []  # (loop time, tie, address, packet)
        self._wake = asyncio.Event()
        self._tie = 0
        self.delivered = 0
        self.late_s_max = 0.0
        """Largest delay between a packet's due time and its delivery (the replay keeping up)."""
        self.scanner_backend: type[BaseBleakScanner] = type(
            "ReplayScanner", (_ReplayScanner,), {"_ward": self}
        )
        self.client_backend: type[BaseBleakClient] = type(
            "ReplayClient", (_ReplayClient,), {"_ward": self}
        )

    def recording_of(self, address: str) -> Recording:
        return self.recordings[self._recording[address]]

    def subscribed_count(self) -> int:
        return len(self._subscribed)

    def _subscribe(self, address: str, deliver: Callable[[bytearray], None]) -> None:
        loop = asyncio.get_running_loop()
        self._subscribed[address] = deliver
        start = loop.time() + self._offset_s[address]
        self.started_at[address] = start
        if self.recording_of(address).packets:
            self._push(start + self.recording_of(address).packets[0][0], address, 0)

    def _unsubscribe(self, address: str) -> None:
        self._subscribed.pop(address, None)

    def _push(self, due: float, address: str, index: int) -> None:
        self._tie += 1
        heapq.heappush(self._due, (due, self._tie, address, index))
        self._wake.set()

    async def run(self) -> None:
        """Deliver every subscribed wearable's packets at their times, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._due:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = loop.time()
            due, _, address, index = self._due[0]
            if due > now:
                self._wake.clear()
                # Wake at the next due packet, or earlier if a subscription adds one.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due - now):
                        await self._wake.wait()
                continue
            heapq.heappop(self._due)
            deliver = self._subscribed.get(address)
            if deliver is None:
                continue  # unsubscribed (the link went down): the recording stops
            self.late_s_max = max(self.late_s_max, now - due)
            packets = self.recording_of(address).packets
            deliver(bytearray(packets[index][1]))
            self.delivered += 1
            if index + 1 < len(packets):
                self._push(self.started_at[address] + packets[index + 1][0], address, index + 1)


def _address(i: int) -> str:
    return "D0:" + ":".join(f"{(i >> s) & 0xFF:02X}" for s in (32, 24, 16, 8, 0))


class _ReplayScanner(BaseBleakScanner):
    """Every replayed wearable advertises once, as soon as scanning starts."""

    _ward: ClassVar[ReplayWard]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None = None,
        service_uuids: list[str] | None = None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)

    async def start(self) -> None:
        self.seen_devices = {}
        for address in self._ward.addresses:
            adv = AdvertisementData(
                local_name="PostureWear",
                manufacturer_data={},
                service_data={},
                service_uuids=[POSTURE_SERVICE_UUID],
                tx_power=None,
                rssi=-60,
                platform_data=(),
            )
            if self.is_allowed_uuid(adv.service_uuids):
                device = self.create_or_update_device(address, address, "PostureWear", {}, adv)
                self.call_detection_callbacks(device, adv)

    async def stop(self) -> None:
        return None


class _ReplayClient(BaseBleakClient):
    """A connection that always succeeds and notifies the recorded packets."""

    _ward: ClassVar[ReplayWard]

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._connected = False

    @property
    def mtu_size(self) -> int:
        return MTU

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self.address not in self._ward._recording:
            raise BleakError(f"no replayed wearable {self.address}")
        self.services = build_services(self._ward.recording_of(self.address).patient.wearable)
        self._connected = True

    async def disconnect(self) -> None:
        self._ward._unsubscribe(self.address)
        self._connected = False

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def unpair(self) -> None:
        return None

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        if characteristic.uuid == BATTERY_LEVEL_CHAR_UUID:
            return bytearray(
                encode_battery_level(self._ward.recording_of(self.address).battery_pct)
            )
        raise BleakError(f"characteristic {characteristic.uuid} is not replayed")

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        raise BleakError("descriptors are not replayed")

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        return None  # a buzz: accepted, as a wearable would

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        raise BleakError("descriptors are not replayed")

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        if characteristic.uuid == IMU_CHAR_UUID:
            self._ward._subscribe(self.address, callback)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        if characteristic.uuid == IMU_CHAR_UUID:
            self._ward._unsubscribe(self.address)
