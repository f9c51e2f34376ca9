"""Sample timeline: duplicates, gaps, clock wrap and reboots."""

from __future__ import annotations

import numpy as np
import pytest

from device_gateway.protocol import AccRange, ImuPacket
from device_gateway.timeline import SampleBlock, Timeline

INTERVAL_US = 20_000  # 50 Hz


def packet(seq: int, t0_ms: int, n: int = 10) -> ImuPacket:
    acc = np.tile([0.0, 1.0, 0.0], (n, 1))
    return ImuPacket(seq & 0xFFFF, t0_ms & 0xFFFFFFFF, INTERVAL_US, AccRange.G8, acc, None)


def test_consecutive_packets_make_a_continuous_timeline() -> None:
    timeline = Timeline()
    first = timeline.accept(packet(1, 1000), 100.0)
    second = timeline.accept(packet(2, 1200), 100.2)
    assert first is not None and second is not None
    times = np.concatenate([first.t_s, second.t_s])
    assert np.allclose(np.diff(times), 0.02)
    assert timeline.counters.lost == 0


def test_duplicate_packet_is_dropped_and_counted() -> None:
    timeline = Timeline()
    timeline.accept(packet(1, 1000), 100.0)
    assert timeline.accept(packet(1, 1000), 100.0) is None
    assert timeline.counters.duplicates == 1


def test_sequence_gap_counts_lost_packets() -> None:
    timeline = Timeline()
    timeline.accept(packet(65534, 1000), 100.0)
    block = timeline.accept(packet(2, 1800), 100.8)  # 65535, 0, 1 missing (wrapped)
    assert block is not None
    assert timeline.counters.lost == 3


def test_clock_wrap_keeps_time_monotonic() -> None:
    timeline = Timeline()
    a = timeline.accept(packet(1, 2**32 - 100), 100.0)
    b = timeline.accept(packet(2, 100), 100.2)
    assert a is not None and b is not None
    assert np.isclose(b.t_s[0] - a.t_s[0], 0.2)


def test_reboot_continues_after_the_last_sample() -> None:
    timeline = Timeline()
    a = timeline.accept(packet(500, 600_000), 100.0)
    timeline.new_connection()
    b = timeline.accept(packet(0, 0), 108.0)  # clock restarted, 8 s later
    assert a is not None and b is not None
    assert timeline.counters.reboots == 1
    assert b.t_s[0] > a.t_s[-1] + 7.9
    assert timeline.utc(b.t_s[0]).timestamp() == pytest.approx(108.0 - (b.t_s[-1] - b.t_s[0]))


def test_a_fast_device_clock_is_resynchronised_to_arrival_time() -> None:
    timeline = Timeline()
    timeline.accept(packet(1, 0), 100.0)
    # The device clock says 10 s passed; the wall clock says 2 s.
    block = timeline.accept(packet(2, 10_000), 102.0)
    assert block is not None
    assert timeline.utc(block.t_s[-1]).timestamp() == pytest.approx(102.0)
    assert timeline.counters.clock_resyncs == 1


def test_a_normal_clock_keeps_its_anchor() -> None:
    timeline = Timeline()
    timeline.accept(packet(1, 0), 100.18)
    block = timeline.accept(packet(2, 200), 100.39)  # 10 ms of radio latency
    assert block is not None
    assert timeline.utc(block.t_s[-1]).timestamp() == pytest.approx(100.38)
    assert timeline.counters.clock_resyncs == 0


def test_consecutive_blocks_concatenate_into_one() -> None:
    timeline = Timeline()
    blocks = [timeline.accept(packet(i, 1000 + 200 * i), 100.0 + 0.2 * i) for i in range(3)]
    joined = SampleBlock.concatenate([b for b in blocks if b is not None])
    assert joined.t_s.shape == (30,) and joined.acc_g.shape == (30, 3)
    assert joined.gyr_dps is None
    assert np.allclose(np.diff(joined.t_s), 0.02)
