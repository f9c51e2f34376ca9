"""One BLE scanner for the whole gateway, filtered by service and allow-list.

Several concurrent scanners on one adapter fight over it (BlueZ allows one
discovery per client), so the gateway runs a single scan and every
wearable's supervisor waits here for its own address to advertise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

from common.errors import BluetoothUnavailableError
from device_gateway.protocol import POSTURE_SERVICE_UUID

__all__ = ["DeviceDirectory"]

_log = logging.getLogger(__name__)


class DeviceDirectory:
    """Latest advertisement of each allow-listed wearable.

    An async context manager: scanning runs while it is open. Wearables not on
    the allow-list are ignored (and counted), whatever they advertise.
    """

    def __init__(
        self,
        allowed_addresses: Iterable[str],
        *,
        backend: type[BaseBleakScanner] | None = None,
    ) -> None:
        self._allowed = {a.upper() for a in allowed_addresses}
        self._backend = backend
        self._seen: dict[str, BLEDevice] = {}
        self._arrived: dict[str, asyncio.Event] = {a: asyncio.Event() for a in self._allowed}
        self._scanner: BleakScanner | None = None
        self.ignored_devices = 0

    async def __aenter__(self) -> DeviceDirectory:
        self._scanner = BleakScanner(
            detection_callback=self._on_advertisement,
            service_uuids=[POSTURE_SERVICE_UUID],
            backend=self._backend,
        )
        try:
            await self._scanner.start()
        except (BleakError, OSError) as exc:
            # BlueZ missing, adapter powered off, no D-Bus: nothing we can
            # retry our way out of; tell the operator plainly.
            raise BluetoothUnavailableError(
                "no usable Bluetooth adapter (is BlueZ running and an adapter present and "
                f"powered?): {exc}"
            ) from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._scanner is not None:
            try:
                await self._scanner.stop()
            except (BleakError, OSError) as exc:
                _log.warning("stopping the scanner failed: %s", exc)

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        address = device.address.upper()
        if address not in self._allowed:
            self.ignored_devices += 1
            return
        self._seen[address] = device
        self._arrived[address].set()

    def forget(self, address: str) -> None:
        """Drop the last advertisement, so the next wait needs a fresh one."""
        address = address.upper()
        self._seen.pop(address, None)
        self._arrived[address].clear()

    async def wait_for(self, address: str) -> BLEDevice:
        """Wait until ``address`` advertises; return its device handle."""
        address = address.upper()
        await self._arrived[address].wait()
        return self._seen[address]
