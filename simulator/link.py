"""The radio link between one simulated wearable and at most one client.

A :class:`Link` is the wearable's side of a connection: who is connected,
which characteristics they subscribed to, whether the radio has gone
silent (and since when), and the GATT server that answers reads and
control writes. simulator/world.py owns the links and the timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bleak.exc import BleakGATTProtocolError

from common.errors import PacketError
from common.ids import mask_id
from device_gateway.protocol import BuzzCommand, decode_control, encode_battery_level
from simulator.emissions import BatteryLevel, Emission, Notification, RadioChange
from simulator.gatt import BATTERY_LEVEL_HANDLE, IMU_HANDLE, read_only_values
from simulator.wearable import SimulatedWearable

if TYPE_CHECKING:
    from simulator.backend import SimulatedClient

__all__ = ["Link"]

logger = logging.getLogger(__name__)

_GONE = ("reboot", "battery_empty")  # radio changes after which the connection is lost for good
_READ_NOT_PERMITTED = 0x02
_VALUE_NOT_ALLOWED = 0x13


class Link:
    """One wearable's connection state and GATT server.

    ``key`` seeds the link's random numbers (RSSI jitter, connect failures).
    """

    def __init__(self, wearable: SimulatedWearable, key: int) -> None:
        self.wearable = wearable
        self.key = key
        self.client: SimulatedClient | None = None
        self.radio_lost_s: float | None = None  # silent since (scenario s)
        self.dead = False  # the wearable lost the connection state (reboot, empty)
        self.subscriptions: dict[int, Callable[[bytearray], None]] = {}
        self.connect_attempts = 0
        self.adverts = 0
        self.haptics: list[tuple[float, BuzzCommand]] = []
        self.bad_writes = 0

    @property
    def streaming(self) -> bool:
        """A client is connected, the radio works and IMU notifications are on."""
        return (
            self.client is not None
            and self.radio_lost_s is None
            and IMU_HANDLE in self.subscriptions
        )

    def attach(self, client: SimulatedClient) -> None:
        self.client = client
        self.radio_lost_s = None
        self.dead = False
        self.subscriptions.clear()
        logger.info("connected to %s", mask_id(self.wearable.address))

    def detach(self, client: SimulatedClient) -> None:
        """The client disconnects on purpose (no disconnected callback)."""
        if self.client is client:
            self.client = None
            self.radio_lost_s = None
            self.dead = False
            self.subscriptions.clear()

    def deliver(self, emission: Emission) -> None:
        """Hand one emission of the wearable to the connected client."""
        if isinstance(emission, RadioChange):
            if emission.reachable:
                if self.client is not None and not self.dead:
                    # Judge the supervision timeout when the radio came back,
                    # not at the pump's next step: a coarse step (a loaded
                    # machine) that spans the whole silence must not skip a drop.
                    self.supervise(emission.t_s)
                if self.client is not None and not self.dead:
                    self.radio_lost_s = None  # back before the supervision timeout
            elif self.client is not None and self.radio_lost_s is None:
                self.radio_lost_s = emission.t_s
                self.dead = emission.reason in _GONE
            return
        if self.client is None or self.radio_lost_s is not None:
            return
        if isinstance(emission, Notification):
            callback = self.subscriptions.get(IMU_HANDLE)
            payload = emission.data
        else:
            assert isinstance(emission, BatteryLevel)
            callback = self.subscriptions.get(BATTERY_LEVEL_HANDLE)
            payload = encode_battery_level(emission.percent)
        if callback is not None:
            try:
                callback(bytearray(payload))
            except Exception:
                # A real Bluetooth stack logs a failing callback and carries on.
                logger.exception("notification callback raised")

    def supervise(self, now_s: float) -> None:
        """Drop the connection once the radio was silent for the supervision timeout."""
        if self.client is None or self.radio_lost_s is None:
            return
        if now_s >= self.radio_lost_s + self.wearable.config.supervision_timeout_s:
            self.drop("supervision timeout")

    def drop(self, reason: str, *, notify: bool = True) -> None:
        """The connection is lost: tell the client, schedule its callback."""
        client = self.client
        if client is None:
            return
        self.detach(client)
        logger.info("link to %s lost (%s)", mask_id(self.wearable.address), reason)
        client._lost()
        callback = client._disconnected_callback
        if notify and callback is not None:
            asyncio.get_running_loop().call_soon(callback)

    def read(self, handle: int) -> bytes:
        """Value of a readable characteristic.

        Raises:
            BleakGATTProtocolError: the characteristic is not readable.
        """
        if handle == BATTERY_LEVEL_HANDLE:
            return encode_battery_level(self.wearable.battery_percent)
        values = read_only_values(self.wearable.config)
        if handle in values:
            return values[handle]
        raise BleakGATTProtocolError(_READ_NOT_PERMITTED)

    def write_control(self, data: bytes, *, response: bool, now_s: float) -> None:
        """Carry out a control write (buzz, set sample rate).

        Raises:
            BleakGATTProtocolError: malformed command written with response;
                without response it is ignored (and counted), like firmware.
        """
        try:
            command = decode_control(data)
        except PacketError as exc:
            self.bad_writes += 1
            logger.warning("bad control write to %s: %s", mask_id(self.wearable.address), exc)
            if response:
                raise BleakGATTProtocolError(_VALUE_NOT_ALLOWED) from exc
            return
        if isinstance(command, BuzzCommand):
            self.haptics.append((now_s, command))
        else:
            self.wearable.request_sample_rate(command.rate_hz, now_s=now_s)
