"""What a simulated wearable emits, and how it damages packets.

:meth:`SimulatedWearable.advance` returns these in time order; the world
(simulator/world.py) delivers them to the connected client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.errors import PacketError
from device_gateway.protocol import decode_imu_packet
from simulator.noise import stream_key, uniform

__all__ = [
    "BatteryLevel",
    "Emission",
    "Notification",
    "RadioChange",
    "WearableStats",
    "corrupt",
]


@dataclass(frozen=True, slots=True)
class Notification:
    """An IMU notification sent at scenario time ``t_s``.

    ``kind`` is "packet", "corrupted" or "duplicate" (a flood).
    """

    t_s: float
    data: bytes
    sequence: int
    kind: str = "packet"


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """The battery level changed to ``percent`` at ``t_s``."""

    t_s: float
    percent: int


@dataclass(frozen=True, slots=True)
class RadioChange:
    """The wearable became (un)reachable at ``t_s``, and why."""

    t_s: float
    reachable: bool
    reason: str


Emission = Notification | BatteryLevel | RadioChange


@dataclass(slots=True)
class WearableStats:
    """Counters since the start of the simulation."""

    packets_assembled: int = 0
    packets_notified: int = 0
    packets_lost: int = 0
    packets_corrupted: int = 0
    duplicates: int = 0
    boots: int = 1
    rate_changes: list[tuple[float, int]] = field(default_factory=list)


def corrupt(data: bytes, *, truncate: bool, key: int) -> bytes:
    """Damage a packet so that decoding fails: cut it short, or flip 1-3 bytes.

    The CRC catches almost every such damage; the rare damaged packet that
    still decodes is damaged further, so the result never decodes.
    """
    draws = uniform(stream_key(key, "corrupt"), np.arange(64))
    damaged = bytearray(data)
    if truncate:
        del damaged[1 + int(draws[0] * (len(damaged) - 1)) :]
    else:
        for i in range(1 + int(draws[0] * 3)):
            pos = int(draws[1 + 2 * i] * len(damaged))
            damaged[pos] ^= 1 + int(draws[2 + 2 * i] * 255)
    extra = 8
    while _decodes(bytes(damaged)):
        if truncate and len(damaged) > 1:
            del damaged[-1]
        else:
            damaged[int(draws[extra % 64] * len(damaged))] ^= 0x5A
        extra += 1
    return bytes(damaged)


def _decodes(data: bytes) -> bool:
    try:
        decode_imu_packet(data)
    except PacketError:
        return False
    return True
