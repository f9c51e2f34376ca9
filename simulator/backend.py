"""bleak backends that talk to a :class:`~simulator.world.SimulatedWorld`.

``make_backends(world)`` returns a scanner and a client class bound to one
world; callers pass them to bleak's own API unchanged::

    async with BleakScanner(backend=world.scanner_backend) as scanner: ...
    device = await BleakScanner.find_device_by_address(addr, backend=world.scanner_backend)
    async with BleakClient(device, backend=world.client_backend) as client: ...

They behave like bleak's BlueZ backend where it matters to a gateway:
``connect`` waits for the device up to its timeout and raises
``TimeoutError``, unknown addresses raise ``BleakDeviceNotFoundError``,
GATT calls on a lost link raise ``BleakError("Not connected")``, peripheral
refusals raise ``BleakGATTProtocolError``, and a link loss calls the
disconnected callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

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
from bleak.exc import BleakError, BleakGATTProtocolError

from simulator.gatt import CCCD_UUID, CONTROL_HANDLE, MTU, build_services

if TYPE_CHECKING:
    from simulator.link import Link
    from simulator.world import SimulatedWorld

__all__ = ["SimulatedClient", "SimulatedScanner", "make_backends"]

logger = logging.getLogger(__name__)


class SimulatedScanner(BaseBleakScanner):
    """Scanner backend: reports the world's advertising wearables."""

    _world: ClassVar[SimulatedWorld]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None = None,
        service_uuids: list[str] | None = None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        # ``scanning_mode`` is accepted for bleak's signature; passive scans
        # get the same data, since the name and UUID are in the advertisement.
        super().__init__(detection_callback, service_uuids)

    async def start(self) -> None:
        self.seen_devices = {}
        self._world._add_scanner(self)

    async def stop(self) -> None:
        self._world._remove_scanner(self)

    def _on_advertisement(self, address: str, name: str, adv: AdvertisementData) -> None:
        if not self.is_allowed_uuid(adv.service_uuids):
            return
        device = self.create_or_update_device(address, address, name, {"simulated": True}, adv)
        self.call_detection_callbacks(device, adv)


class SimulatedClient(BaseBleakClient):
    """Client backend: a GATT connection to one simulated wearable."""

    _world: ClassVar[SimulatedWorld]

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
        self._link: Link | None = None

    @property
    def name(self) -> str:
        return self._world.local_name(self.address) or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return MTU

    @property
    def is_connected(self) -> bool:
        return self._link is not None and self._link.client is self

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect, waiting up to ``timeout`` s (real time) for the wearable.

        Raises:
            BleakError: already connected, the world is not running, or the
                simulated connection attempt failed.
            BleakDeviceNotFoundError: no wearable has this address.
            TimeoutError: the wearable stayed unreachable for ``timeout``.
        """
        if self.is_connected:
            raise BleakError("Client is already connected")
        timeout = float(kwargs.get("timeout", self._timeout))
        link = await self._world._connect(self, timeout)
        self._link = link
        self.services = build_services(link.wearable.config)

    async def disconnect(self) -> None:
        if self._link is not None:
            self._link.detach(self)
        self._lost()

    def _lost(self) -> None:
        """The link is gone (called by the world or by disconnect)."""
        self._link = None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        # The profile needs no bonding; a real BlueZ pair would succeed too.
        self._connected_link()

    async def unpair(self) -> None:
        await self.disconnect()

    def _connected_link(self) -> Link:
        link = self._link
        if link is None or link.client is not self:
            raise BleakError("Not connected")
        return link

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        link = self._connected_link()
        await self._world._att(link, self)
        return bytearray(link.read(characteristic.handle))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        link = self._connected_link()
        await self._world._att(link, self)
        if descriptor.uuid != CCCD_UUID:
            raise BleakGATTProtocolError(0x02)  # Read Not Permitted
        on = descriptor.characteristic_handle in link.subscriptions
        return bytearray(b"\x01\x00" if on else b"\x00\x00")

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        link = self._connected_link()
        if characteristic.handle != CONTROL_HANDLE:
            raise BleakGATTProtocolError(0x03)  # Write Not Permitted
        await self._world._att(link, self)
        link.write_control(bytes(data), response=response, now_s=self._world.scenario_time())

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        self._connected_link()
        raise BleakGATTProtocolError(0x03)  # Write Not Permitted

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        link = self._connected_link()
        if "notify" not in characteristic.properties:
            raise BleakError(f"characteristic {characteristic.uuid} does not notify")
        await self._world._att(link, self)  # the CCCD write
        link.subscriptions[characteristic.handle] = callback

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        link = self._connected_link()
        await self._world._att(link, self)
        link.subscriptions.pop(characteristic.handle, None)


def make_backends(
    world: SimulatedWorld,
) -> tuple[type[SimulatedScanner], type[SimulatedClient]]:
    """Scanner and client backend classes bound to ``world``."""
    scanner = type("SimulatedScanner", (SimulatedScanner,), {"_world": world})
    client = type("SimulatedClient", (SimulatedClient,), {"_world": world})
    return scanner, client
