"""IMU notifications built from samples measured ahead, without per-packet NumPy.

A wearable's samples are measured a block at a time (simulator/blocks.py),
already in the byte layout of a packet's body; :class:`PacketEncoder` puts
a header and the CRC around a slice of it. The format is the one
``device_gateway.protocol.encode_imu_packet`` defines (docs/protocol.md):
the version and flags are taken from that encoder, and
tests/test_ward.py checks the bytes are identical to its output.
"""

from __future__ import annotations

import binascii
import struct

import numpy as np

from device_gateway.protocol import HEADER_SIZE, AccRange, encode_imu_packet

__all__ = ["PacketEncoder"]

# version u8, flags u8, sequence u16, t0 ms u32, interval us u16, count u8; CRC u16
_HEADER = struct.Struct("<BBHIHB")
_CRC = struct.Struct("<H")
if _HEADER.size != HEADER_SIZE:  # the protocol changed: follow it here
    raise ImportError(f"simulator packet header is {_HEADER.size} bytes, protocol {HEADER_SIZE}")


class PacketEncoder:
    """IMU packets of one wearable model (accelerometer range, gyroscope or not)."""

    def __init__(self, acc_range: AccRange, has_gyro: bool) -> None:
        zeros = np.zeros((1, 3), dtype=np.int16)
        reference = encode_imu_packet(
            sequence=0,
            t0_ms=0,
            interval_us=1,
            acc_range=acc_range,
            acc_counts=zeros,
            gyr_counts=zeros if has_gyro else None,
        )
        self._version, self._flags = reference[0], reference[1]
        self.bytes_per_sample = 12 if has_gyro else 6

    def encode(self, *, sequence: int, t0_ms: int, interval_us: int, body: bytes) -> bytes:
        """The notification for ``body`` (little-endian int16 acc[, gyr] per sample).

        ``sequence`` and ``t0_ms`` wrap at 16 and 32 bits as on the device.
        """
        payload = _HEADER.pack(
            self._version,
            self._flags,
            sequence & 0xFFFF,
            t0_ms & 0xFFFFFFFF,
            interval_us,
            len(body) // self.bytes_per_sample,
        )
        payload += body
        return payload + _CRC.pack(binascii.crc_hqx(payload, 0xFFFF))
