"""The wearable's GATT profile and its packet formats (see docs/protocol.md).

This module is the contract between a wearable (real or simulated) and the
gateway: UUIDs, the IMU notification packet, the control commands the gateway
writes, and the battery level. Encoders are used by the simulator, decoders by
the gateway; both live here so they cannot drift apart.

All multi-byte fields are little-endian, as in the Bluetooth specification.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from common.errors import PacketError

__all__ = [
    "ACC_LSB_PER_G",
    "BATTERY_LEVEL_CHAR_UUID",
    "BATTERY_SERVICE_UUID",
    "CONTROL_CHAR_UUID",
    "GYR_LSB_PER_DPS",
    "HEADER_SIZE",
    "IMU_CHAR_UUID",
    "MAX_ATT_PAYLOAD",
    "PACKET_VERSION",
    "POSTURE_SERVICE_UUID",
    "SUPPORTED_SAMPLE_RATES_HZ",
    "AccRange",
    "BuzzCommand",
    "BuzzPattern",
    "ControlCommand",
    "ImuHeader",
    "ImuPacket",
    "SetSampleRateCommand",
    "decode_battery_level",
    "decode_control",
    "decode_imu_header",
    "decode_imu_packet",
    "encode_battery_level",
    "encode_buzz",
    "encode_imu_packet",
    "encode_set_sample_rate",
    "imu_samples",
    "max_samples_per_packet",
]

POSTURE_SERVICE_UUID = "7e1a0001-5c2d-4f6b-9d8e-3a1b2c4d5e6f"
IMU_CHAR_UUID = "7e1a0002-5c2d-4f6b-9d8e-3a1b2c4d5e6f"
CONTROL_CHAR_UUID = "7e1a0003-5c2d-4f6b-9d8e-3a1b2c4d5e6f"
BATTERY_SERVICE_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_CHAR_UUID = "00002a19-0000-1000-8000-00805f9b34fb"

PACKET_VERSION = 1
# ATT_MTU 247 (the largest a BLE 4.2+ data-length extension uses in one link
# layer packet) minus the 3-byte ATT notification header.
MAX_ATT_PAYLOAD = 244

# version u8, flags u8, sequence u16, t0 ms u32, interval us u16, count u8
_HEADER = struct.Struct("<BBHIHB")
_CRC = struct.Struct("<H")
HEADER_SIZE = _HEADER.size
_FLAG_GYRO = 0x01
_FLAG_ACC_16G = 0x02
_KNOWN_FLAGS = _FLAG_GYRO | _FLAG_ACC_16G

GYR_LSB_PER_DPS = 32768.0 / 2000.0
"""Gyroscope scale: ±2000 °/s full range in int16 (16.384 LSB per °/s)."""


class AccRange(enum.IntEnum):
    """Accelerometer full-scale range in g."""

    G8 = 8
    G16 = 16


ACC_LSB_PER_G = {AccRange.G8: 32768.0 / 8.0, AccRange.G16: 32768.0 / 16.0}
"""Accelerometer scale per range: 4096 LSB/g at ±8 g, 2048 LSB/g at ±16 g."""


def max_samples_per_packet(has_gyro: bool) -> int:
    """How many samples fit one notification at a 247-byte MTU (19 or 38)."""
    per_sample = 12 if has_gyro else 6
    return (MAX_ATT_PAYLOAD - HEADER_SIZE - _CRC.size) // per_sample


@dataclass(frozen=True, slots=True)
class ImuPacket:
    """One decoded IMU notification.

    ``acc_g`` has shape ``(n, 3)`` in g; ``gyr_dps`` has shape ``(n, 3)`` in
    degrees per second, or is None for an accelerometer-only wearable. Sample
    ``i`` was taken at ``t0_ms + i * interval_us / 1000`` on the device clock.
    """

    sequence: int
    t0_ms: int
    interval_us: int
    acc_range: AccRange
    acc_g: NDArray[np.float64]
    gyr_dps: NDArray[np.float64] | None

    @property
    def sample_count(self) -> int:
        return int(self.acc_g.shape[0])

    @property
    def sample_rate_hz(self) -> float:
        return 1e6 / self.interval_us


def encode_imu_packet(
    *,
    sequence: int,
    t0_ms: int,
    interval_us: int,
    acc_range: AccRange,
    acc_counts: NDArray[np.integer],
    gyr_counts: NDArray[np.integer] | None,
) -> bytes:
    """Build the notification a wearable sends.

    Counts are the raw int16 sensor readings, shape ``(n, 3)``; the caller
    (the simulator's sensor model) has already quantised and clipped them.
    ``sequence`` and ``t0_ms`` wrap at 16 and 32 bits as on the device.
    """
    acc = np.asarray(acc_counts)
    n = acc.shape[0] if acc.ndim == 2 else -1
    if acc.ndim != 2 or acc.shape[1] != 3 or n < 1:
        raise ValueError(f"acc_counts must have shape (n>=1, 3), got {acc.shape}")
    flags = _FLAG_ACC_16G if acc_range == AccRange.G16 else 0
    columns = [acc]
    if gyr_counts is not None:
        gyr = np.asarray(gyr_counts)
        if gyr.shape != acc.shape:
            raise ValueError(f"gyr_counts must have shape {acc.shape}, got {gyr.shape}")
        flags |= _FLAG_GYRO
        columns.append(gyr)
    if n > max_samples_per_packet(gyr_counts is not None):
        raise ValueError(f"{n} samples do not fit one packet")
    for block in columns:
        # The sensor saturates; a count outside int16 would wrap silently.
        if block.min() < -32768 or block.max() > 32767:
            raise ValueError("sample counts must fit int16 (clip before encoding)")
    if not 1 <= interval_us <= 0xFFFF:
        raise ValueError(f"interval_us must be in 1..65535, got {interval_us}")
    body = np.hstack(columns).astype("<i2").tobytes()
    header = _HEADER.pack(
        PACKET_VERSION, flags, sequence & 0xFFFF, t0_ms & 0xFFFFFFFF, interval_us, n
    )
    payload = header + body
    return payload + _CRC.pack(binascii.crc_hqx(payload, 0xFFFF))


class ImuHeader(NamedTuple):
    """A validated IMU notification's header; its samples stay raw bytes.

    The gateway's tick converts the samples of many packets in one NumPy
    operation (:func:`imu_samples`), so per packet only this header is
    decoded in Python (a named tuple: several times cheaper to make than a
    frozen dataclass, and made for every packet). ``body`` holds
    ``sample_count`` rows of int16 counts, 3 (accelerometer) or 6 (and
    gyroscope) per row.
    """

    sequence: int
    t0_ms: int
    interval_us: int
    acc_range: AccRange
    has_gyro: bool
    sample_count: int
    body: bytes

    @property
    def sample_rate_hz(self) -> float:
        return 1e6 / self.interval_us


def decode_imu_header(data: bytes | bytearray | memoryview) -> ImuHeader:
    """Validate one IMU notification (length, version, flags, CRC, interval).

    Raises:
        PacketError: wrong length, unknown version or flags, bad CRC, or an
            implausible sample interval. The gateway counts and logs these.
    """
    raw = bytes(data)
    if len(raw) < HEADER_SIZE + _CRC.size:
        raise PacketError(f"packet of {len(raw)} bytes is shorter than its header")
    (crc,) = _CRC.unpack_from(raw, len(raw) - _CRC.size)
    if binascii.crc_hqx(raw[: -_CRC.size], 0xFFFF) != crc:
        raise PacketError("packet CRC mismatch")
    version, flags, sequence, t0_ms, interval_us, n = _HEADER.unpack_from(raw)
    if version != PACKET_VERSION:
        raise PacketError(f"unsupported packet version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise PacketError(f"unknown packet flags 0x{flags:02x}")
    has_gyro = bool(flags & _FLAG_GYRO)
    per_sample = 12 if has_gyro else 6
    expected = HEADER_SIZE + n * per_sample + _CRC.size
    if n == 0 or len(raw) != expected:
        raise PacketError(f"packet of {len(raw)} bytes does not hold {n} samples")
    # Below 5 Hz or above 2 kHz no posture wearable samples; treat as corrupt.
    if not 500 <= interval_us <= 200_000:
        raise PacketError(f"implausible sample interval {interval_us} us")
    acc_range = AccRange.G16 if flags & _FLAG_ACC_16G else AccRange.G8
    return ImuHeader(
        sequence, t0_ms, interval_us, acc_range, has_gyro, n, raw[HEADER_SIZE : -_CRC.size]
    )


def imu_samples(
    bodies: bytes, rows: int, has_gyro: bool, acc_range: AccRange
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """The samples of packet bodies laid end to end (one range, one layout).

    Returns ``acc_g`` (rows, 3) in g and ``gyr_dps`` (rows, 3) in °/s or
    None; ``rows`` is the total sample count. The same arithmetic as
    :func:`decode_imu_packet`, so the values are bit for bit the same.
    """
    per_sample = 6 if has_gyro else 3
    counts = np.frombuffer(bodies, dtype="<i2", count=rows * per_sample)
    counts = counts.reshape(rows, per_sample).astype(np.float64)
    acc_g = counts[:, :3] / ACC_LSB_PER_G[acc_range]
    gyr_dps = counts[:, 3:6] / GYR_LSB_PER_DPS if has_gyro else None
    return acc_g, gyr_dps


def decode_imu_packet(data: bytes | bytearray | memoryview) -> ImuPacket:
    """Validate and decode one IMU notification.

    Raises:
        PacketError: as :func:`decode_imu_header`.
    """
    header = decode_imu_header(data)
    acc_g, gyr_dps = imu_samples(
        header.body, header.sample_count, header.has_gyro, header.acc_range
    )
    return ImuPacket(
        header.sequence, header.t0_ms, header.interval_us, header.acc_range, acc_g, gyr_dps
    )


class ControlCommand(enum.IntEnum):
    """Opcodes of the control characteristic (first byte of a write)."""

    BUZZ = 0x01
    SET_SAMPLE_RATE = 0x02


class BuzzPattern(enum.IntEnum):
    """Haptic patterns the wearable's motor can play."""

    SHORT = 1
    DOUBLE = 2
    LONG = 3


_BUZZ = struct.Struct("<BBBH")  # opcode, pattern, repeat, intensity-free pause ms
_RATE = struct.Struct("<BH")  # opcode, rate Hz
SUPPORTED_SAMPLE_RATES_HZ = (25, 50, 100, 200)


def encode_buzz(pattern: BuzzPattern, repeat: int = 1, pause_ms: int = 300) -> bytes:
    """Control write that plays ``pattern`` ``repeat`` times (1..10)."""
    if not 1 <= repeat <= 10:
        raise ValueError(f"repeat must be 1..10, got {repeat}")
    if not 0 <= pause_ms <= 5000:
        raise ValueError(f"pause_ms must be 0..5000, got {pause_ms}")
    return _BUZZ.pack(ControlCommand.BUZZ, BuzzPattern(pattern), repeat, pause_ms)


def encode_set_sample_rate(rate_hz: int) -> bytes:
    """Control write that changes the IMU sample rate."""
    if rate_hz not in SUPPORTED_SAMPLE_RATES_HZ:
        raise ValueError(f"rate_hz must be one of {SUPPORTED_SAMPLE_RATES_HZ}, got {rate_hz}")
    return _RATE.pack(ControlCommand.SET_SAMPLE_RATE, rate_hz)


@dataclass(frozen=True, slots=True)
class BuzzCommand:
    pattern: BuzzPattern
    repeat: int
    pause_ms: int


@dataclass(frozen=True, slots=True)
class SetSampleRateCommand:
    rate_hz: int


def decode_control(data: bytes | bytearray) -> BuzzCommand | SetSampleRateCommand:
    """Decode a control write (the wearable's side of the characteristic).

    Raises:
        PacketError: unknown opcode or wrong length or value.
    """
    raw = bytes(data)
    if not raw:
        raise PacketError("empty control write")
    if raw[0] == ControlCommand.BUZZ and len(raw) == _BUZZ.size:
        _, pattern, repeat, pause_ms = _BUZZ.unpack(raw)
        if pattern not in BuzzPattern.__members__.values():
            raise PacketError(f"unknown buzz pattern {pattern}")
        if not 1 <= repeat <= 10:
            raise PacketError(f"buzz repeat {repeat} out of range")
        return BuzzCommand(BuzzPattern(pattern), repeat, pause_ms)
    if raw[0] == ControlCommand.SET_SAMPLE_RATE and len(raw) == _RATE.size:
        _, rate = _RATE.unpack(raw)
        if rate not in SUPPORTED_SAMPLE_RATES_HZ:
            raise PacketError(f"unsupported sample rate {rate}")
        return SetSampleRateCommand(rate)
    raise PacketError(f"bad control write {raw.hex()}")


def encode_battery_level(percent: int) -> bytes:
    """Battery Level characteristic (0x2A19): one byte, 0..100 %."""
    if not 0 <= percent <= 100:
        raise ValueError(f"battery percent must be 0..100, got {percent}")
    return bytes([percent])


def decode_battery_level(data: bytes | bytearray) -> int:
    """Decode 0x2A19. Raises PacketError unless one byte in 0..100."""
    if len(data) != 1 or data[0] > 100:
        raise PacketError(f"bad battery level {bytes(data).hex()}")
    return int(data[0])
