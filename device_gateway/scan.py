"""``posture-monitor scan``: which adapters this machine has, which wearables it hears.

For the person installing a gateway: without reading logs, it shows the
BlueZ adapters (powered or not, scanning or not), then scans for a few
seconds on the adapter the gateway would use and lists the wearables heard
(address, advertised name, signal strength), marking those a gateway config
allow-lists and naming those it does not hear.

Exit status: 0 when the scan ran and (with ``--config``) heard every
allow-listed wearable; 1 when some allow-listed wearable was not heard;
2 when Bluetooth is unusable (no system bus, no bluetoothd, no adapter,
adapter powered off).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from common.errors import BluetoothUnavailableError, ConfigError
from device_gateway.config import GatewayConfig
from device_gateway.protocol import POSTURE_SERVICE_UUID

__all__ = ["configure_parser", "run", "scan"]

_MAX_SCAN_S = 120.0


@dataclass(frozen=True, slots=True)
class Heard:
    """One device heard during the scan (RSSI in dBm: the strongest heard)."""

    address: str
    name: str | None
    rssi_dbm: int
    wearable: bool


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="gateway config: use its [ble] adapter, mark its wearables"
    )
    parser.add_argument("--adapter", help="adapter to scan with, e.g. hci1 (overrides --config)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="how long to scan (default 10 s)"
    )
    parser.add_argument(
        "--all", action="store_true", help="list every BLE device heard, not only wearables"
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Entry point of ``posture-monitor scan`` (exit codes in the module doc).

    Raises:
        ConfigError: the config file is invalid.
        BluetoothUnavailableError: Bluetooth cannot be used (exit 2).
    """
    out = sys.stdout if out is None else out
    if not 0.5 <= args.seconds <= _MAX_SCAN_S:
        raise ConfigError(f"--seconds must be 0.5..{_MAX_SCAN_S:g}, got {args.seconds:g}")
    config = GatewayConfig.load(args.config) if args.config else None
    adapter = args.adapter or (config.ble.adapter if config else None)
    return asyncio.run(scan(config, adapter, args.seconds, every_device=args.all, out=out))


async def scan(
    config: GatewayConfig | None,
    adapter: str | None,
    seconds: float,
    *,
    every_device: bool = False,
    out: TextIO,
) -> int:
    """Print the adapters, scan ``seconds`` s, print what was heard; the exit code."""
    await _print_adapters(adapter, out)
    heard: dict[str, Heard] = {}

    def on_advertisement(device: BLEDevice, adv: AdvertisementData) -> None:
        address = device.address.upper()
        wearable = POSTURE_SERVICE_UUID in [u.lower() for u in adv.service_uuids]
        before = heard.get(address)
        rssi = adv.rssi if before is None else max(before.rssi_dbm, adv.rssi)
        heard[address] = Heard(address, adv.local_name or device.name, rssi, wearable)

    scanner = BleakScanner(
        on_advertisement,
        service_uuids=None if every_device else [POSTURE_SERVICE_UUID],
        bluez={} if adapter is None else {"adapter": adapter},
    )
    where = adapter or "the default adapter"
    print(f"Scanning {seconds:g} s on {where}...", file=out, flush=True)
    try:
        async with scanner:
            await asyncio.sleep(seconds)
    except (BleakError, OSError, EOFError) as exc:
        raise BluetoothUnavailableError(f"cannot scan on {where}: {exc}") from exc
    return _report(config, heard, every_device, out)


async def _print_adapters(adapter: str | None, out: TextIO) -> None:
    if not sys.platform.startswith("linux"):
        return
    from device_gateway.bluez import BluezWatch

    try:
        async with BluezWatch(adapter) as watch:
            adapters, health = watch.adapters(), watch.health()
    except ConnectionError as exc:
        raise BluetoothUnavailableError(str(exc)) from exc
    print("Bluetooth adapters:", file=out)
    for info in adapters:
        state = ("powered" if info.powered else "POWERED OFF") + (
            ", scanning" if info.discovering else ""
        )
        chosen = "  <- used" if info.name == health.adapter else ""
        print(f"  {info.name:6} {info.address}  {state}{chosen}", file=out)
    if not adapters:
        print("  (none)", file=out)
    if not health.ok:
        raise BluetoothUnavailableError(health.detail)


def _report(
    config: GatewayConfig | None, heard: dict[str, Heard], every_device: bool, out: TextIO
) -> int:
    patients = {w.address.upper(): w.patient_id for w in config.wearables} if config else {}
    rows = sorted(heard.values(), key=lambda h: (not h.wearable, -h.rssi_dbm, h.address))
    print(f"{'ADDRESS':19}{'NAME':14}{'RSSI':>6}  WEARABLE", file=out)
    for h in rows:
        kind = ("allow-listed: " + patients[h.address]) if h.address in patients else ""
        kind = kind or ("posture wearable, not allow-listed" if h.wearable else "other device")
        print(f"{h.address:19}{(h.name or '?')[:13]:14}{h.rssi_dbm:>6}  {kind}", file=out)
    wearables = sum(h.wearable for h in heard.values())
    extra = f" ({len(heard)} devices in all)" if every_device else ""
    print(f"{wearables} wearable(s) heard{extra}.", file=out)
    missing = sorted(a for a in patients if a not in heard)
    for address in missing:
        print(f"NOT HEARD: {address} ({patients[address]})", file=out)
    return 1 if missing else 0
