"""The supervisor of one wearable's BLE link.

It finds the wearable, connects with a timeout, subscribes to its IMU and
battery notifications, hands packets to the gateway's engine tick
(``engine_tick.py``, which decodes them and runs every wearable's samples in
one pass) and reconnects with backoff whenever the radio fails. Notification
callbacks only enqueue onto the wearable's bounded inbox: under a flood the
newest raw packets are dropped and counted rather than letting memory grow
or the event loop stall. Nothing a wearable sends can raise out of here; only
a bug can, and then the traceback names this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError

from alerts.topics import mask_id
from common.backoff import Backoff
from common.errors import PacketError
from device_gateway.config import BleSettings
from device_gateway.engine_tick import EngineTick
from device_gateway.patient import PatientMonitor
from device_gateway.protocol import (
    BATTERY_LEVEL_CHAR_UUID,
    CONTROL_CHAR_UUID,
    IMU_CHAR_UUID,
    BuzzPattern,
    decode_battery_level,
    encode_buzz,
)
from device_gateway.scanner import DeviceDirectory

if TYPE_CHECKING:
    from device_gateway.bluez import BluezWatch

__all__ = ["WearableSupervisor"]

_log = logging.getLogger(__name__)

# Failures of the radio link, as opposed to bugs: these are retried.
_LINK_ERRORS = (BleakError, TimeoutError, OSError, EOFError)
_BUZZ_TIMEOUT_S = 3.0
# A session shorter than this does not reset the backoff: a wearable that
# connects and drops at once must not be hammered.
_STABLE_SESSION_S = 10.0
# The notification watchdog trusts its clock only if the loop woke it this promptly.
_LOOP_LAG_S = 0.5


class WearableSupervisor:
    """Keeps one wearable connected for as long as the gateway runs."""

    def __init__(
        self,
        monitor_factory: Callable[[Callable[[], None]], PatientMonitor],
        address: str,
        settings: BleSettings,
        directory: DeviceDirectory,
        tick: EngineTick,
        *,
        client_backend: type[BaseBleakClient] | None = None,
        wall_clock: Callable[[], float] = time.time,
        bluez: BluezWatch | None = None,
    ) -> None:
        self.address = address
        self.label = mask_id(address)
        self.monitor = monitor_factory(self._request_buzz)
        self.counters = self.monitor.timeline.counters
        self.reconnects = 0
        self._settings = settings
        self._directory = directory
        self._client_backend = client_backend
        self._wall_clock = wall_clock
        self._tick = tick
        self._ticked = tick.register(self.monitor, self.label, settings.queue_packets)
        self._battery_readings: asyncio.Queue[int] = asyncio.Queue(16)
        self._buzz_pending = asyncio.Event()
        self._reported_connected: bool | None = None
        self._last_link_loss: float | None = None
        self._bluez = bluez
        self._last_packet_s = 0.0
        self.stalls = 0
        """Links dropped because notifications stopped while connected."""

    async def run(self) -> None:
        """Supervise forever (until cancelled)."""
        backoff = Backoff(self._settings.backoff_initial_s, self._settings.backoff_max_s)
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tasks:
            grace: asyncio.Task[None] | None = None
            while True:
                device = await self._directory.wait_for(self.address)
                started = loop.time()
                try:
                    await self._session(device, grace)
                except _LINK_ERRORS as exc:
                    _log.info("wearable %s: link failed: %s", self.label, exc or type(exc).__name__)
                self._directory.forget(self.address)
                if self.monitor.connected:
                    await self.monitor.link_down()
                    self._last_link_loss = loop.time()
                    grace = tasks.create_task(
                        self._report_after_grace(), name=f"grace {self.label}"
                    )
                if loop.time() - started > _STABLE_SESSION_S:
                    backoff.reset()
                await asyncio.sleep(backoff.next_delay())
                self.reconnects += 1

    async def _session(self, device: BLEDevice, grace: asyncio.Task[None] | None) -> None:
        """One connection, from connect to link loss."""
        lost = asyncio.Event()
        adapter = self._settings.adapter
        client = BleakClient(
            device,
            disconnected_callback=lambda _client: lost.set(),
            timeout=self._settings.connect_timeout_s,
            bluez={} if adapter is None else {"adapter": adapter},
            backend=self._client_backend,
        )
        stop_battery: Callable[[], None] | None = None
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                await client.connect()
            # bleak retries a BlueZ "le-connection-abort-by-local" inside
            # connect(), after a Connected true/false flap that already called
            # the disconnected callback: only a loss after connecting counts.
            lost.clear()
            if not client.is_connected:
                lost.set()
            if grace is not None:
                grace.cancel()
            stop_battery = await self._on_connected(client, device)
            async with asyncio.TaskGroup() as tasks:
                buzzer = tasks.create_task(self._buzz_loop(client), name=f"buzz {self.label}")
                battery = tasks.create_task(self._battery_loop(), name=f"battery {self.label}")
                stream = tasks.create_task(self._watch_stream(lost), name=f"stream {self.label}")
                await lost.wait()
                _log.info("wearable %s: disconnected", self.label)
                # Packets already queued may hold the fall: process them all.
                await self._tick.flush(self._ticked)
                buzzer.cancel()
                battery.cancel()
                stream.cancel()
        finally:
            if stop_battery is not None:
                stop_battery()
            with contextlib.suppress(*_LINK_ERRORS):
                await client.disconnect()

    async def _watch_stream(self, lost: asyncio.Event) -> None:
        """End the session when IMU notifications stop although the link is up."""
        loop = asyncio.get_running_loop()
        timeout_s = self._settings.notify_timeout_s
        self._last_packet_s = loop.time()
        late_s = 0.0
        while True:
            idle_s = loop.time() - self._last_packet_s
            if idle_s >= timeout_s and late_s < _LOOP_LAG_S:
                self.stalls += 1
                _log.warning(
                    "wearable %s: no notification for %.1f s while connected; reconnecting",
                    self.label,
                    idle_s,
                )
                lost.set()
                return
            # After a held-up event loop, packets may wait unread in the
            # socket: look again shortly instead of blaming the wearable.
            wait_s = _LOOP_LAG_S if idle_s >= timeout_s else timeout_s - idle_s
            wake_s = loop.time() + wait_s
            await asyncio.sleep(wait_s)
            late_s = loop.time() - wake_s

    async def _on_connected(
        self, client: BleakClient, device: BLEDevice
    ) -> Callable[[], None] | None:
        """Subscribe; returns what stops the BlueZ battery watch, if one was started."""
        services = client.services
        if services.get_characteristic(IMU_CHAR_UUID) is None:
            raise BleakError("wearable has no IMU characteristic")
        loop = asyncio.get_running_loop()
        away_s = loop.time() - self._last_link_loss if self._last_link_loss else 0.0
        recalibrate = away_s > self._settings.recalibrate_after_s
        self._buzz_pending.clear()  # a reminder from before the link loss is stale
        await self.monitor.link_up(recalibrate=recalibrate)
        _log.info("wearable %s: connected", self.label)
        await client.start_notify(IMU_CHAR_UUID, self._on_imu_notify)
        if self._reported_connected is not True:
            self._reported_connected = True
            await self.monitor.report_connection(True)
        if services.get_characteristic(BATTERY_LEVEL_CHAR_UUID) is not None:
            await self._on_battery(await client.read_gatt_char(BATTERY_LEVEL_CHAR_UUID))
            await client.start_notify(BATTERY_LEVEL_CHAR_UUID, self._on_battery_notify)
            return None
        # Stock BlueZ hides the Battery Service from GATT clients (its battery
        # plugin claims it) and shows the level as org.bluez.Battery1.
        path = _bluez_path(device)
        if self._bluez is not None and path is not None:
            return self._bluez.watch_battery(path, self._on_battery_percent)
        return None

    def _on_battery_percent(self, percent: int) -> None:
        self._on_battery_notify(None, bytearray([percent]) if 0 <= percent <= 255 else b"")

    def _on_imu_notify(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        # Runs in bleak's callback: enqueue only.
        self._last_packet_s = asyncio.get_running_loop().time()
        if not self._ticked.offer(bytes(data), self._wall_clock()):
            self.counters.queue_dropped += 1
            if (
                self.counters.queue_dropped in (1, 10, 100)
                or self.counters.queue_dropped % 1000 == 0
            ):
                _log.warning(
                    "wearable %s: sample queue full, %d packets dropped",
                    self.label,
                    self.counters.queue_dropped,
                )

    def _on_battery_notify(
        self, _char: BleakGATTCharacteristic | None, data: bytearray | bytes
    ) -> None:
        try:
            percent = decode_battery_level(data)
        except PacketError as exc:
            self.counters.malformed += 1
            _log.warning("wearable %s: %s", self.label, exc)
            return
        # Readings are minutes apart; a full queue means the loop is stalled.
        with contextlib.suppress(asyncio.QueueFull):
            self._battery_readings.put_nowait(percent)

    async def _battery_loop(self) -> None:
        while True:
            await self.monitor.battery(await self._battery_readings.get())

    async def _on_battery(self, data: bytearray) -> None:
        try:
            await self.monitor.battery(decode_battery_level(data))
        except PacketError as exc:
            self.counters.malformed += 1
            _log.warning("wearable %s: %s", self.label, exc)

    def _request_buzz(self) -> None:
        self._buzz_pending.set()

    async def _buzz_loop(self, client: BleakClient) -> None:
        while True:
            await self._buzz_pending.wait()
            self._buzz_pending.clear()
            try:
                async with asyncio.timeout(_BUZZ_TIMEOUT_S):
                    await client.write_gatt_char(
                        CONTROL_CHAR_UUID, encode_buzz(BuzzPattern.DOUBLE), response=True
                    )
            except _LINK_ERRORS as exc:
                # The link supervisor will notice a dead link; the alert still
                # goes to the physiotherapist over MQTT.
                _log.warning("wearable %s: slouch buzz failed: %s", self.label, exc)

    async def _report_after_grace(self) -> None:
        await asyncio.sleep(self._settings.disconnect_grace_s)
        if not self.monitor.connected and self._reported_connected:
            self._reported_connected = False
            await self.monitor.report_connection(False)


def _bluez_path(device: BLEDevice) -> str | None:
    """The D-Bus object path of a device found by bleak's BlueZ backend, else None."""
    details: Any = device.details
    path = details.get("path") if isinstance(details, dict) else None
    return path if isinstance(path, str) else None
