"""The wire codec (device_gateway/protocol.py) against docs/protocol.md."""

from __future__ import annotations

import binascii
import contextlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import PacketError
from device_gateway.protocol import (
    ACC_LSB_PER_G,
    GYR_LSB_PER_DPS,
    HEADER_SIZE,
    MAX_ATT_PAYLOAD,
    AccRange,
    BuzzCommand,
    BuzzPattern,
    SetSampleRateCommand,
    decode_battery_level,
    decode_control,
    decode_imu_packet,
    encode_battery_level,
    encode_buzz,
    encode_imu_packet,
    encode_set_sample_rate,
    max_samples_per_packet,
)


def _counts(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32768, size=(n, 3), dtype=np.int64)


def _packet(
    n: int = 10, *, gyro: bool = True, acc_range: AccRange = AccRange.G8, **kw: int
) -> bytes:
    args = {"sequence": 7, "t0_ms": 123_456, "interval_us": 20_000} | kw
    return encode_imu_packet(
        acc_range=acc_range,
        acc_counts=_counts(n, 1),
        gyr_counts=_counts(n, 2) if gyro else None,
        **args,
    )


@pytest.mark.parametrize("gyro", [True, False])
@pytest.mark.parametrize("acc_range", list(AccRange))
def test_round_trip_preserves_every_field_and_sample(gyro: bool, acc_range: AccRange) -> None:
    n = max_samples_per_packet(gyro)
    acc, gyr = _counts(n, 1), _counts(n, 2)
    data = encode_imu_packet(
        sequence=65535,
        t0_ms=4_000_000_000,
        interval_us=5000,
        acc_range=acc_range,
        acc_counts=acc,
        gyr_counts=gyr if gyro else None,
    )
    packet = decode_imu_packet(bytearray(data))  # bleak hands over a bytearray
    assert (packet.sequence, packet.t0_ms, packet.interval_us) == (65535, 4_000_000_000, 5000)
    assert packet.acc_range is acc_range and packet.sample_count == n
    assert packet.sample_rate_hz == 200.0
    np.testing.assert_array_equal(packet.acc_g * ACC_LSB_PER_G[acc_range], acc)
    if gyro:
        assert packet.gyr_dps is not None
        np.testing.assert_allclose(packet.gyr_dps * GYR_LSB_PER_DPS, gyr, atol=1e-9)
    else:
        assert packet.gyr_dps is None


def test_layout_is_the_documented_one() -> None:
    acc = np.array([[1, -2, 3]])
    gyr = np.array([[-4, 5, -6]])
    data = encode_imu_packet(
        sequence=0x0102,
        t0_ms=0x03040506,
        interval_us=20_000,
        acc_range=AccRange.G16,
        acc_counts=acc,
        gyr_counts=gyr,
    )
    assert len(data) == HEADER_SIZE + 12 + 2 == 25
    assert data[0] == 1  # version
    assert data[1] == 0b11  # bit0 gyro present, bit1 ±16 g
    assert data[2:4] == b"\x02\x01"  # u16 little-endian sequence
    assert data[4:8] == b"\x06\x05\x04\x03"  # u32 t0 ms
    assert struct.unpack("<H", data[8:10])[0] == 20_000  # interval µs
    assert data[10] == 1  # sample count
    assert struct.unpack("<6h", data[11:23]) == (1, -2, 3, -4, 5, -6)  # acc xyz then gyr xyz
    assert struct.unpack("<H", data[23:25])[0] == binascii.crc_hqx(data[:23], 0xFFFF)


def test_crc_is_crc16_ccitt_false() -> None:
    # The standard check value of CRC-16/CCITT-FALSE (init 0xFFFF, poly 0x1021).
    assert binascii.crc_hqx(b"123456789", 0xFFFF) == 0x29B1


def test_scales_are_the_documented_ones() -> None:
    assert ACC_LSB_PER_G[AccRange.G8] == 4096.0
    assert ACC_LSB_PER_G[AccRange.G16] == 2048.0
    assert pytest.approx(16.384) == GYR_LSB_PER_DPS


def test_samples_per_packet_fill_a_247_byte_mtu() -> None:
    assert max_samples_per_packet(True) == 19
    assert max_samples_per_packet(False) == 38
    for gyro in (True, False):
        n = max_samples_per_packet(gyro)
        assert len(_packet(n, gyro=gyro)) <= MAX_ATT_PAYLOAD == 244
        with pytest.raises(ValueError, match="do not fit"):
            _packet(n + 1, gyro=gyro)


def test_sequence_and_clock_wrap_at_16_and_32_bits() -> None:
    packet = decode_imu_packet(_packet(sequence=65536 + 5, t0_ms=2**32 + 7))
    assert (packet.sequence, packet.t0_ms) == (5, 7)


def test_encoder_rejects_bad_shapes_and_intervals() -> None:
    with pytest.raises(ValueError):
        encode_imu_packet(
            sequence=0,
            t0_ms=0,
            interval_us=20_000,
            acc_range=AccRange.G8,
            acc_counts=np.zeros((0, 3), dtype=np.int16),
            gyr_counts=None,
        )
    with pytest.raises(ValueError):
        encode_imu_packet(
            sequence=0,
            t0_ms=0,
            interval_us=20_000,
            acc_range=AccRange.G8,
            acc_counts=np.zeros((2, 3), dtype=np.int16),
            gyr_counts=np.zeros((3, 3), dtype=np.int16),
        )
    with pytest.raises(ValueError):
        _packet(interval_us=70_000)


def test_every_single_byte_flip_and_truncation_is_detected() -> None:
    data = _packet(10)
    for pos in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[pos] ^= mask
            with pytest.raises(PacketError):
                decode_imu_packet(damaged)
    for length in range(len(data)):
        with pytest.raises(PacketError):
            decode_imu_packet(data[:length])


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", binascii.crc_hqx(body, 0xFFFF))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (struct.pack("<BBHIHB", 2, 0, 0, 0, 20_000, 1), "version"),
        (struct.pack("<BBHIHB", 1, 0x04, 0, 0, 20_000, 1), "flags"),
        (struct.pack("<BBHIHB", 1, 0, 0, 0, 300, 1), "interval"),
        (struct.pack("<BBHIHB", 1, 0, 0, 0, 20_000, 0), "samples"),
        (struct.pack("<BBHIHB", 1, 0, 0, 0, 20_000, 2), "samples"),
    ],
)
def test_well_formed_but_invalid_packets_are_rejected(header: bytes, reason: str) -> None:
    with pytest.raises(PacketError, match=reason):
        decode_imu_packet(_with_crc(header + bytes(6)))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_packet_error(data: bytes) -> None:
    try:
        packet = decode_imu_packet(data)
    except PacketError:
        return
    assert packet.sample_count >= 1  # astronomically unlikely, but valid if so


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=19),
    st.lists(st.tuples(st.integers(0, 300), st.integers(1, 255)), min_size=1, max_size=4),
    st.integers(0, 300),
)
def test_damaged_valid_packets_raise_only_packet_error(
    n: int, flips: list[tuple[int, int]], cut: int
) -> None:
    damaged = bytearray(_packet(n))
    for pos, mask in flips:
        damaged[pos % len(damaged)] ^= mask
    for data in (bytes(damaged), bytes(damaged[: cut % (len(damaged) + 1)])):
        # Anything but PacketError (or success, on a CRC collision) fails the test.
        with contextlib.suppress(PacketError):
            decode_imu_packet(data)


def test_control_commands_round_trip() -> None:
    assert decode_control(encode_buzz(BuzzPattern.LONG, 3, 250)) == BuzzCommand(
        BuzzPattern.LONG, 3, 250
    )
    assert decode_control(bytearray(encode_set_sample_rate(100))) == SetSampleRateCommand(100)
    assert encode_buzz(BuzzPattern.SHORT) == bytes([0x01, 1, 1]) + struct.pack("<H", 300)
    assert encode_set_sample_rate(25) == b"\x02\x19\x00"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x09",
        b"\x01\x01\x01\x2c",
        b"\x01\x07\x01\x2c\x01",
        b"\x01\x01\x00\x2c\x01",
        b"\x01\x01\x0b\x2c\x01",
        b"\x02\x20\x00",
        b"\x02\x32\x00\x00",
    ],
)
def test_bad_control_writes_raise_packet_error(data: bytes) -> None:
    with pytest.raises(PacketError):
        decode_control(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=8))
def test_random_control_writes_decode_or_raise_packet_error(data: bytes) -> None:
    try:
        command = decode_control(data)
    except PacketError:
        return
    assert isinstance(command, BuzzCommand | SetSampleRateCommand)


def test_control_encoders_validate() -> None:
    with pytest.raises(ValueError):
        encode_buzz(BuzzPattern.SHORT, repeat=11)
    with pytest.raises(ValueError):
        encode_set_sample_rate(60)


def test_battery_level() -> None:
    for percent in (0, 57, 100):
        assert decode_battery_level(bytearray(encode_battery_level(percent))) == percent
    for bad in (b"", b"\x65", b"\x10\x00"):
        with pytest.raises(PacketError):
            decode_battery_level(bad)
    with pytest.raises(ValueError):
        encode_battery_level(101)
