"""One BLE scanner for the whole gateway, filtered by service and allow-list,
kept alive while Bluetooth comes and goes.

Several concurrent scanners on one adapter fight over it (BlueZ allows one
discovery per client), so the gateway runs a single scan and every
wearable's supervisor waits here for its own address to advertise.

A scanner that dies silently is the worst failure of a BLE gateway: no
wearable that disconnects can come back, so its falls go undetected while
the gateway looks healthy. On BlueZ, :meth:`DeviceDirectory.supervise`
follows bluetoothd and the adapter (``device_gateway.bluez``): it restarts
the scan when bluetoothd or the adapter comes back or discovery stopped
under it, and reports every change of :class:`RadioHealth` so the
gateway's retained status says when it cannot scan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

from common.backoff import Backoff
from common.errors import BluetoothUnavailableError
from device_gateway.protocol import POSTURE_SERVICE_UUID

if TYPE_CHECKING:
    from device_gateway.bluez import BluezWatch

__all__ = ["DeviceDirectory", "RadioHealth"]

_log = logging.getLogger(__name__)

# BlueZ may report Discovering a moment after StartDiscovery returns; a scan
# still not discovering after this long has been stopped under us.
_DISCOVERY_GRACE_S = 3.0
_SCAN_ERRORS = (BleakError, OSError, EOFError)
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RadioHealth:
    """Whether the gateway can scan: ``ok``, else a ``reason`` code and a sentence."""

    ok: bool
    reason: str = ""
    detail: str = ""
    adapter: str | None = None
    discovering: bool = False

    @classmethod
    def up(cls, adapter: str | None, *, discovering: bool = True) -> RadioHealth:
        return cls(True, adapter=adapter, discovering=discovering)

    @classmethod
    def down(cls, reason: str, detail: str) -> RadioHealth:
        return cls(False, reason, detail)

    def same_report(self, other: RadioHealth | None) -> bool:
        return other is not None and (self.ok, self.reason) == (other.ok, other.reason)


class DeviceDirectory:
    """Latest advertisement of each allow-listed wearable.

    An async context manager: scanning runs while it is open. Wearables not on
    the allow-list are ignored (and counted), whatever they advertise.

    Args:
        allowed_addresses: the wearables to report.
        backend: a bleak scanner backend; None for the platform's.
        adapter: BlueZ adapter name (``hci1``); None for bleak's default.
        watch: BlueZ's state (when on bleak's BlueZ backend); without it a
            scan that fails to start raises and is never restarted.
        on_health: called with each new :class:`RadioHealth`.
    """

    def __init__(
        self,
        allowed_addresses: Iterable[str],
        *,
        backend: type[BaseBleakScanner] | None = None,
        adapter: str | None = None,
        watch: BluezWatch | None = None,
        on_health: Callable[[RadioHealth], None] | None = None,
    ) -> None:
        self._allowed = {a.upper() for a in allowed_addresses}
        self._backend = backend
        self._adapter = adapter
        self._watch = watch
        self._on_health = on_health
        self._seen: dict[str, BLEDevice] = {}
        self._arrived: dict[str, asyncio.Event] = {a: asyncio.Event() for a in self._allowed}
        self._scanner: BleakScanner | None = None
        self._scan_generation = -1
        self._scan_adapter: str | None = None
        self._scan_started_s = 0.0
        self.health: RadioHealth | None = None
        self.ignored_devices = 0
        self.scans_started = 0

    async def __aenter__(self) -> DeviceDirectory:
        if self._watch is None:
            try:
                await self._start_scan()
            except _SCAN_ERRORS as exc:
                # BlueZ missing, adapter powered off, no D-Bus: nothing we can
                # retry our way out of; tell the operator plainly.
                raise BluetoothUnavailableError(
                    "no usable Bluetooth adapter (is BlueZ running and an adapter present and "
                    f"powered?): {exc}"
                ) from exc
            self._report(RadioHealth.up(self._adapter))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop_scan()

    # -- scanning -------------------------------------------------------------
    async def _start_scan(self) -> None:
        scanner = BleakScanner(
            detection_callback=self._on_advertisement,
            service_uuids=[POSTURE_SERVICE_UUID],
            bluez={} if self._adapter is None else {"adapter": self._adapter},
            backend=self._backend,
        )
        await scanner.start()
        self.scans_started += 1
        self._scanner = scanner
        self._scan_started_s = asyncio.get_running_loop().time()
        if self._watch is not None:
            self._scan_generation = self._watch.generation

    async def _stop_scan(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            try:
                # A scan on a bus that just died may never get its answer.
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await scanner.stop()
            except (*_SCAN_ERRORS, TimeoutError) as exc:
                # The adapter or bluetoothd that ran it is gone: nothing to stop.
                _log.debug("stopping the scanner failed: %s", exc)

    async def supervise(self) -> None:
        """Keep a scan running on a usable adapter, until cancelled (BlueZ only)."""
        watch = self._watch
        if watch is None:
            return
        backoff = Backoff(1.0, 30.0)
        loop = asyncio.get_running_loop()
        while True:
            seen = watch.version
            health = watch.health()
            retry_in_s: float | None = None
            if not health.ok:
                await self._stop_scan()
                self._report(health)
            elif self._scan_is_dead(health, loop.time()):
                retry_in_s = await self._restart_scan(health, backoff)
            else:
                backoff.reset()
                self._report(health)
                if not health.discovering:
                    retry_in_s = _DISCOVERY_GRACE_S
            try:
                async with asyncio.timeout(retry_in_s):
                    await watch.wait_changed(seen)
            except TimeoutError:
                pass

    def _scan_is_dead(self, health: RadioHealth, now_s: float) -> bool:
        assert self._watch is not None
        if self._scanner is None or self._scan_generation != self._watch.generation:
            return True
        if health.adapter != self._scan_adapter:
            return True  # the default adapter changed (another one was unplugged)
        return not health.discovering and now_s - self._scan_started_s > _DISCOVERY_GRACE_S

    async def _restart_scan(self, health: RadioHealth, backoff: Backoff) -> float | None:
        """Stop what is left of the scan and start a new one; None, or when to retry (s)."""
        await self._stop_scan()
        self._forget_all()
        try:
            await self._start_scan()
            self._scan_adapter = health.adapter
        except _SCAN_ERRORS as exc:
            delay_s = backoff.next_delay()
            self._report(RadioHealth.down("scan_failed", f"cannot scan on {health.adapter}: {exc}"))
            return delay_s
        if self.scans_started > 1:
            _log.warning("scanning restarted on %s", health.adapter)
        self._report(RadioHealth.up(health.adapter, discovering=health.discovering))
        return _DISCOVERY_GRACE_S

    def _report(self, health: RadioHealth) -> None:
        if health.same_report(self.health):
            self.health = health
            return
        self.health = health
        if health.ok:
            _log.info("scanning for wearables on %s", health.adapter or "the default adapter")
        else:
            _log.error("cannot scan for wearables: %s", health.detail)
        if self._on_health is not None:
            self._on_health(health)

    # -- the directory ------------------------------------------------------------
    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        address = device.address.upper()
        if address not in self._allowed:
            self.ignored_devices += 1
            return
        self._seen[address] = device
        self._arrived[address].set()

    def _forget_all(self) -> None:
        # Device handles from a dead scan may name objects BlueZ no longer has.
        for address in list(self._seen):
            self.forget(address)

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
