"""One adapter of the BlueZ stand-in: discovery, device objects, connections.

The radio under the adapter is a :class:`~simulator.world.SimulatedWorld`,
reached through the simulator's own bleak backends, the way bluetoothd sits
on the kernel's HCI: discovery sessions start the world's scanner, an
advertisement creates or refreshes an ``org.bluez.Device1`` object,
``Connect`` opens a simulated link and exports its GATT table, and every
notification of the link becomes a ``PropertiesChanged`` on ``Value``. What
BlueZ does on top is modelled here: per-client discovery sessions and UUID
filters, ``Connected`` before ``ServicesResolved``, the battery plugin that
claims the Battery Service and exposes ``org.bluez.Battery1`` instead, GATT
objects removed on disconnect, temporary devices forgotten some time after
they were last seen, and BlueZ's error names for failed connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from dbus_fast import DBusError, Variant

from common.ids import mask_id
from device_gateway.protocol import BATTERY_LEVEL_CHAR_UUID, BATTERY_SERVICE_UUID
from simulator.bluez.gatt_objects import (
    GattCharacteristic1,
    GattDescriptor1,
    GattService1,
    relayed_characteristic,
)
from simulator.bluez.interfaces import (
    ERROR_FAILED,
    ERROR_IN_PROGRESS,
    ERROR_NOT_READY,
    Adapter1,
    Battery1,
    Device1,
)
from simulator.gatt import MTU

if TYPE_CHECKING:
    from simulator.bluez.standin import BluezStandIn

__all__ = ["ConnectFailure", "StandInAdapter"]

logger = logging.getLogger(__name__)

# BlueZ reports a connection attempt that timed out or was cancelled as
# ECONNABORTED; 5.62+ words it "le-connection-abort-by-local".
ABORTED_OLD = "Software caused connection abort"
ABORTED_NEW = "le-connection-abort-by-local"
_SERVICES_RESOLVED_DELAY_S = 0.05  # service discovery after the link is up (real time)


@dataclass(frozen=True, slots=True)
class ConnectFailure:
    """A scripted answer to the next ``Connect``: a BlueZ error.

    ``link_flaps``: the link came up and dropped before the error, so
    ``Connected`` goes true then false (what BlueZ does for
    ``le-connection-abort-by-local``, and what bleak waits for before it
    retries that one).
    """

    error: str
    message: str
    link_flaps: bool = False


@dataclass(slots=True)
class _Device:
    iface: Device1
    last_seen_s: float
    client: BleakClient | None = None
    connecting: asyncio.Task[BleakClient] | None = None
    battery: Battery1 | None = None
    gatt_paths: list[str] = field(default_factory=list)
    chars: dict[str, GattCharacteristic1] = field(default_factory=dict)
    muted: bool = False
    notifications: int = 0


class StandInAdapter:
    """``/org/bluez/{name}``: its discovery sessions and devices."""

    def __init__(self, standin: BluezStandIn, name: str, address: str) -> None:
        self.standin = standin
        self.name = name
        self.path = f"/org/bluez/{name}"
        self.iface = Adapter1(self, address, name)
        self.devices: dict[str, _Device] = {}
        self._sessions: dict[str, list[str]] = {}  # D-Bus sender -> UUID filter
        self._filters: dict[str, list[str]] = {}
        self._radio: BleakScanner | None = None
        self.silent = False  # bluetoothd is gone: no more signals

    # -- helpers -------------------------------------------------------------
    @property
    def powered(self) -> bool:
        return bool(self.iface.values["Powered"])

    def current_sender(self) -> str:
        return self.standin.current_sender

    def device_path(self, address: str) -> str:
        return f"{self.path}/dev_{address.upper().replace(':', '_')}"

    def connected_count(self) -> int:
        return sum(1 for d in self.devices.values() if d.client is not None)

    def _device(self, address: str) -> _Device:
        try:
            return self.devices[address.upper()]
        except KeyError:
            raise KeyError(f"no device {address} on {self.name}") from None

    # -- discovery -------------------------------------------------------------
    def set_discovery_filter(self, sender: str, uuids: list[str]) -> None:
        if not self.powered:
            raise DBusError(ERROR_NOT_READY, "Resource Not Ready")
        self._filters[sender] = [u.lower() for u in uuids]

    def start_discovery(self, sender: str) -> None:
        if not self.powered:
            raise DBusError(ERROR_NOT_READY, "Resource Not Ready")
        if sender in self._sessions:
            raise DBusError(ERROR_IN_PROGRESS, "In Progress")
        self._sessions[sender] = self._filters.get(sender, [])
        self._update_radio()

    def stop_discovery(self, sender: str) -> None:
        if not self.powered:
            raise DBusError(ERROR_NOT_READY, "Resource Not Ready")
        if self._sessions.pop(sender, None) is None:
            raise DBusError(ERROR_FAILED, "No discovery started")
        self._filters.pop(sender, None)
        self._update_radio()

    def client_gone(self, sender: str) -> None:
        """A D-Bus client left the bus: its discovery session ends (as in BlueZ)."""
        self._filters.pop(sender, None)
        if self._sessions.pop(sender, None) is not None:
            self._update_radio()

    def _update_radio(self) -> None:
        want = self.powered and bool(self._sessions)
        if want and self._radio is None:
            self._radio = BleakScanner(
                self._on_advertisement, backend=self.standin.world.scanner_backend
            )
            self.standin.spawn(self._radio.start(), f"{self.name} scan start")
        elif not want and self._radio is not None:
            radio, self._radio = self._radio, None
            self.standin.spawn(radio.stop(), f"{self.name} scan stop")
        self._set(self.iface, Discovering=want)

    def _set(self, iface: Adapter1 | Device1, **values: object) -> None:
        if self.silent:
            iface.values.update(values)
        else:
            iface.update(**values)

    def _on_advertisement(self, ble: BLEDevice, adv: AdvertisementData) -> None:
        if self._radio is None:
            return
        uuids = [u.lower() for u in adv.service_uuids]
        wanted = [set(f) for f in self._sessions.values()]
        if wanted and all(f and not (f & set(uuids)) for f in wanted):
            return  # every session filters on UUIDs this device does not advertise
        address = ble.address.upper()
        now = asyncio.get_running_loop().time()
        device = self.devices.get(address)
        manufacturer = {k: Variant("ay", bytes(v)) for k, v in adv.manufacturer_data.items()}
        service_data = {k: Variant("ay", bytes(v)) for k, v in adv.service_data.items()}
        if device is None:
            path = self.device_path(address)
            values = {
                "Address": address,
                "AddressType": "random",
                "Name": adv.local_name or "",
                "Alias": adv.local_name or address.replace(":", "-"),
                "Adapter": self.path,
                "Paired": False,
                "Bonded": False,
                "Trusted": False,
                "Blocked": False,
                "Connected": False,
                "ServicesResolved": False,
                "RSSI": adv.rssi,
                "TxPower": adv.tx_power if adv.tx_power is not None else 0,
                "UUIDs": uuids,
                "ManufacturerData": manufacturer,
                "ServiceData": service_data,
            }
            device = _Device(Device1(self, path, values), now)
            self.devices[address] = device
            self.standin.export(path, device.iface)
            return
        device.last_seen_s = now
        device.iface.update(
            RSSI=adv.rssi, UUIDs=uuids, ManufacturerData=manufacturer, ServiceData=service_data
        )

    def forget_stale(self, now_s: float, timeout_s: float) -> None:
        """Remove devices not connected and unseen for ``timeout_s`` (BlueZ's TemporaryTimeout)."""
        for device in list(self.devices.values()):
            idle = device.client is None and device.connecting is None
            paired = bool(device.iface.values["Paired"])
            if idle and not paired and now_s - device.last_seen_s > timeout_s:
                self.remove_device(device.iface.path)

    def remove_device(self, path: str) -> None:
        device = next((d for d in self.devices.values() if d.iface.path == path), None)
        if device is None:
            raise DBusError("org.bluez.Error.DoesNotExist", "Does Not Exist")
        if device.client is not None:
            self._drop(device, hang_up=True)
        del self.devices[device.iface.address]
        self.standin.unexport(path)
        self.standin.removed_devices.append(device.iface.address)
        logger.info("%s: device %s removed", self.name, mask_id(device.iface.address))

    # -- connections -------------------------------------------------------------
    async def connect(self, iface: Device1) -> None:
        if not self.powered:
            raise DBusError(ERROR_NOT_READY, "Resource Not Ready")
        device = self._device(iface.address)
        if device.client is not None:
            return  # already connected: BlueZ answers success for LE
        self.standin.connect_calls += 1
        if device.connecting is not None:
            self.standin.record_failure(iface.address, ERROR_IN_PROGRESS)
            raise DBusError(ERROR_IN_PROGRESS, "In Progress")
        scripted = self.standin.scripted_failures.get(iface.address)
        if scripted:
            await self._fail(device, scripted.popleft())
        device.connecting = asyncio.create_task(self._open_link(device))
        try:
            client = await device.connecting
        except (asyncio.CancelledError, TimeoutError):
            # Unreachable until timeout, or cancelled by Disconnect.
            failure = ConnectFailure(ERROR_FAILED, self.standin.abort_message)
        except BleakError:
            # Failed at the link layer: BlueZ says so after the link flapped.
            failure = ConnectFailure(ERROR_FAILED, ABORTED_NEW, link_flaps=True)
        else:
            await self._link_up(device, client)
            return
        finally:
            device.connecting = None
        await self._fail(device, failure)

    async def _fail(self, device: _Device, failure: ConnectFailure) -> None:
        self.standin.record_failure(device.iface.address, f"{failure.error}: {failure.message}")
        await asyncio.sleep(0.01)
        if failure.link_flaps:
            device.iface.update(Connected=True)
            await asyncio.sleep(0.01)
            device.iface.update(Connected=False)
        raise DBusError(failure.error, failure.message)

    async def _open_link(self, device: _Device) -> BleakClient:
        address = device.iface.address
        client = BleakClient(
            address,
            disconnected_callback=lambda c: self._on_link_lost(address, c),
            timeout=self.standin.le_connect_timeout_s,
            backend=self.standin.world.client_backend,
        )
        await client.connect()
        return client

    async def _link_up(self, device: _Device, client: BleakClient) -> None:
        device.client = client
        path = device.iface.path
        for service in client.services:
            if self.standin.battery_plugin and service.uuid == BATTERY_SERVICE_UUID:
                continue  # claimed by BlueZ's battery plugin, never shown to clients
            service_path = f"{path}/service{service.handle:04x}"
            self._export_gatt(
                device, service_path, GattService1(service.uuid, path, service.handle)
            )
            for char in service.characteristics:
                char_path = f"{service_path}/char{char.handle - 1:04x}"
                iface = self._characteristic(device, char, service_path)
                device.chars[char.uuid] = iface
                self._export_gatt(device, char_path, iface)
                for desc in char.descriptors:
                    desc_path = f"{char_path}/desc{desc.handle:04x}"
                    self._export_gatt(
                        device, desc_path, GattDescriptor1(desc.uuid, char_path, desc.handle)
                    )
        if self.standin.battery_plugin and client.services.get_characteristic(
            BATTERY_LEVEL_CHAR_UUID
        ):
            level = (await client.read_gatt_char(BATTERY_LEVEL_CHAR_UUID))[0]
            device.battery = Battery1(int(level))
            self.standin.export(path, device.battery)
            await client.start_notify(BATTERY_LEVEL_CHAR_UUID, self._battery_relay(device))
        device.iface.update(Connected=True)
        logger.info("%s: connected to %s", self.name, mask_id(device.iface.address))
        self.standin.spawn(self._resolve_services(device, client), "services resolved")

    async def _resolve_services(self, device: _Device, client: BleakClient) -> None:
        await asyncio.sleep(_SERVICES_RESOLVED_DELAY_S)
        if device.client is client:
            device.iface.update(ServicesResolved=True)

    def _export_gatt(self, device: _Device, path: str, iface: GattService1 | object) -> None:
        self.standin.export(path, iface)  # type: ignore[arg-type]
        device.gatt_paths.append(path)

    def _characteristic(
        self, device: _Device, char: BleakGATTCharacteristic, service_path: str
    ) -> GattCharacteristic1:
        def relay(data: bytes) -> None:
            iface = device.chars.get(char.uuid)
            if device.muted or iface is None:
                return  # muted, or the link is being torn down
            device.notifications += 1
            self.standin.notifications += 1
            iface.notify("Value", data)

        return relayed_characteristic(char, service_path, MTU, lambda: device.client, relay)

    def _battery_relay(
        self, device: _Device
    ) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        def relay(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            if device.battery is not None and data:
                device.battery.update(Percentage=int(data[0]))

        return relay

    async def disconnect(self, iface: Device1) -> None:
        device = self._device(iface.address)
        if device.connecting is not None:
            device.connecting.cancel()
            return
        if device.client is None:
            raise DBusError("org.bluez.Error.NotConnected", "Not Connected")
        self._drop(device, hang_up=True)

    def _on_link_lost(self, address: str, client: BleakClient) -> None:
        device = self.devices.get(address)
        if device is not None and device.client is client:
            logger.info("%s: link to %s lost", self.name, mask_id(address))
            self._drop(device, hang_up=False)

    def _drop(self, device: _Device, *, hang_up: bool) -> None:
        """The link is gone: GATT objects and Battery1 go, then the properties flip."""
        client, device.client = device.client, None
        device.muted = False  # muting lasts one connection
        if hang_up and client is not None:
            self.standin.spawn(client.disconnect(), "hang up")
        if not self.silent:
            for path in reversed(device.gatt_paths):
                self.standin.unexport(path)
            if device.battery is not None:
                self.standin.unexport(device.iface.path, device.battery)
        device.gatt_paths.clear()
        device.chars.clear()
        device.battery = None
        self._set(device.iface, ServicesResolved=False)
        self._set(device.iface, Connected=False)
        device.last_seen_s = asyncio.get_running_loop().time()

    # -- power -------------------------------------------------------------
    def set_powered(self, on: bool) -> None:
        if on == self.powered:
            return
        if not on:
            self.shut_down()
        self.iface.update(Powered=on)
        logger.info("%s powered %s", self.name, "on" if on else "off")

    def shut_down_silently(self) -> None:
        """bluetoothd died or the adapter vanished: links drop, no signal is sent."""
        self.silent = True
        self.shut_down()

    def shut_down(self) -> None:
        """Power off: every link drops and every discovery session ends."""
        for device in self.devices.values():
            if device.connecting is not None:
                device.connecting.cancel()
            if device.client is not None:
                self._drop(device, hang_up=True)
        self._sessions.clear()
        self._filters.clear()
        self._update_radio()

    def all_paths(self) -> Iterator[str]:
        for device in self.devices.values():
            yield from device.gatt_paths
            yield device.iface.path
