"""A tick's arrays (device_gateway.tick_samples) hold, device last, bit for bit
the samples and times of decoding each packet on its own."""

from __future__ import annotations

import numpy as np
import pytest

from device_gateway.protocol import (
    AccRange,
    decode_imu_header,
    decode_imu_packet,
    encode_imu_packet,
)
from device_gateway.tick_samples import Chunk, chunk_arrays
from device_gateway.timeline import Timeline


def packets(
    rng: np.random.Generator, sizes: list[int], gyro: bool, acc_range: AccRange, t0_ms: int
) -> list[bytes]:
    """One wearable's consecutive packets of ``sizes`` samples at 50 Hz."""
    out = []
    for k, n in enumerate(sizes):
        out.append(
            encode_imu_packet(
                sequence=k,
                t0_ms=t0_ms,
                interval_us=20_000,
                acc_range=acc_range,
                acc_counts=rng.integers(-32768, 32768, (n, 3)),
                gyr_counts=rng.integers(-32768, 32768, (n, 3)) if gyro else None,
            )
        )
        t0_ms += 20 * n
    return out


@pytest.mark.parametrize(
    ("gyro", "acc_range", "sizes"),
    [
        (True, AccRange.G8, [[10, 10], [10, 10], [10, 10]]),  # the usual tick
        (False, AccRange.G16, [[10], [10], [10], [10]]),
        (True, AccRange.G16, [[10, 4], [7, 7], [14]]),  # packets of several lengths
    ],
    ids=["gyro", "acc_only_16g", "uneven_packets"],
)
def test_arrays_are_each_packets_own_decoding_device_last(
    gyro: bool, acc_range: AccRange, sizes: list[list[int]]
) -> None:
    rng = np.random.default_rng(len(sizes))
    chunks: list[Chunk] = []
    want_t: list[tuple[int, np.ndarray]] = []
    want_acc: list[tuple[int, np.ndarray]] = []
    want_gyr: list[tuple[int, np.ndarray | None]] = []
    for d, wearable_sizes in enumerate(sizes):
        raw = packets(rng, wearable_sizes, gyro, acc_range, t0_ms=1000 * d + 7)
        timeline, reference = Timeline(), Timeline()
        chunk = None
        for data in raw:
            header = decode_imu_header(data)
            start_s = timeline.place(header, 1.0e9)
            assert start_s is not None
            chunk = chunk or Chunk.of(header)
            chunk.add(header, start_s)
            block = reference.accept(decode_imu_packet(data), 1.0e9)
            assert block is not None
            want_t.append((d, block.t_s))
            want_acc.append((d, block.acc_g))
            want_gyr.append((d, block.gyr_dps))
        assert chunk is not None
        chunks.append(chunk)
    t, acc, gyr = chunk_arrays(chunks)
    n = chunks[0].samples
    assert t.shape == (n, len(sizes)) and acc.shape == (n, 3, len(sizes))
    assert t.flags.c_contiguous and acc.flags.c_contiguous
    assert (gyr is not None) == gyro
    if gyr is not None:
        assert gyr.shape == acc.shape and gyr.flags.c_contiguous
    for got, want in ((t, want_t), (acc, want_acc), (gyr, want_gyr)):
        if got is None:
            continue
        for d in range(len(sizes)):
            rows = [x for dev, x in want if dev == d and x is not None]
            # Bit for bit: assert_array_equal, not a tolerance.
            np.testing.assert_array_equal(got[..., d], np.concatenate(rows))
