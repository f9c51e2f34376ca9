"""Wearable faults, driven offline through SimulatedWearable.advance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from common.errors import PacketError
from device_gateway.protocol import ImuPacket, decode_imu_packet
from simulator import Patient, SimulatedWearable, WearableConfig
from simulator.emissions import BatteryLevel, Emission, Notification, RadioChange
from simulator.specs import (
    BatteryDrainSpec,
    CorruptionSpec,
    DisconnectSpec,
    FaultSpec,
    FloodSpec,
    PacketLossSpec,
    RebootSpec,
    SitSpec,
)


def make(*faults: FaultSpec, **config: object) -> SimulatedWearable:
    wearable = WearableConfig(address="C0:FF:EE:00:00:09", **config)  # type: ignore[arg-type]
    patient = Patient(
        "p", wearable, (SitSpec(at_s=0),), tuple(sorted(faults, key=lambda f: f.at_s))
    )
    return SimulatedWearable(patient, index=0, seed=5)


def run(w: SimulatedWearable, until_s: float, step_s: float = 0.1) -> list[Emission]:
    out: list[Emission] = []
    for now in np.arange(step_s, until_s + step_s / 2, step_s):
        out += w.advance(float(now), streaming=True)
    return out


def packets(out: list[Emission], kind: str = "packet") -> list[tuple[float, ImuPacket]]:
    return [
        (e.t_s, decode_imu_packet(e.data))
        for e in out
        if isinstance(e, Notification) and e.kind == kind
    ]


def test_packets_follow_the_sample_clock() -> None:
    w = make(sample_rate_hz=50, samples_per_packet=10)
    got = packets(run(w, 10.0))
    assert len(got) == 50  # 5 packets per second
    for k, (t_s, packet) in enumerate(got):
        assert packet.sequence == k and packet.t0_ms == 200 * k and packet.interval_us == 20_000
        assert t_s == pytest.approx(0.2 * k + 0.18)  # emitted once its last sample is taken


def test_reboot_resets_sequence_and_clock() -> None:
    w = make(RebootSpec(at_s=5.0, down_s=2.0), clock_start_ms=1_000_000, sequence_start=100)
    out = run(w, 12.0)
    radio = [e for e in out if isinstance(e, RadioChange)]
    assert [(e.t_s, e.reachable, e.reason) for e in radio] == [
        (5.0, False, "reboot"),
        (7.0, True, "reboot"),
    ]
    got = packets(out)
    before = [(t, p) for t, p in got if t < 5.0]
    after = [(t, p) for t, p in got if t > 5.0]
    assert before[0][1].sequence == 100 and before[0][1].t0_ms == 1_000_000
    assert all(t >= 7.0 for t, _ in after)  # nothing while off
    assert after[0][1].sequence == 0 and after[0][1].t0_ms == 0
    assert w.stats.boots == 2
    assert np.isnan(w.device_time_s(np.array([6.0]))[0])
    assert w.device_time_s(np.array([8.0]))[0] == pytest.approx(1.0)


def test_sequence_and_clock_wrap_on_the_wire() -> None:
    w = make(clock_start_ms=2**32 - 1000, sequence_start=65533)
    got = [p for _, p in packets(run(w, 2.0))]
    assert [p.sequence for p in got[:6]] == [65533, 65534, 65535, 0, 1, 2]
    assert [p.t0_ms for p in got[:7]] == [
        2**32 - 1000,
        2**32 - 800,
        2**32 - 600,
        2**32 - 400,
        2**32 - 200,
        0,
        200,
    ]


def test_disconnect_makes_the_wearable_unreachable_for_its_duration() -> None:
    w = make(DisconnectSpec(at_s=3.0, duration_s=4.0))
    out = run(w, 10.0)
    assert [(e.t_s, e.reachable) for e in out if isinstance(e, RadioChange)] == [
        (3.0, False),
        (7.0, True),
    ]
    times = [t for t, _ in packets(out)]
    assert not any(3.0 <= t < 7.0 for t in times)
    got = [p for t, p in packets(out)]
    gap = [b.sequence - a.sequence for a, b in itertools.pairwise(got)]
    assert max(gap) == 21  # the wearable kept sampling; 20 packets never arrived


def test_packet_loss_and_corruption_rates() -> None:
    w = make(
        PacketLossSpec(at_s=0.0, duration_s=100.0, probability=0.3),
        CorruptionSpec(at_s=0.0, duration_s=100.0, probability=0.2, truncated_fraction=0.5),
    )
    out = run(w, 100.0, step_s=0.5)
    notes = [e for e in out if isinstance(e, Notification)]
    assert w.stats.packets_assembled == 500
    assert w.stats.packets_lost == pytest.approx(150, abs=40)
    corrupted = [e for e in notes if e.kind == "corrupted"]
    assert len(corrupted) == w.stats.packets_corrupted == pytest.approx(70, abs=30)
    full_length = len(notes[0].data) if notes[0].kind == "packet" else 133
    truncated = sum(len(e.data) < full_length for e in corrupted)
    assert 0.25 < truncated / len(corrupted) < 0.75
    for e in corrupted:
        with pytest.raises(PacketError):
            decode_imu_packet(e.data)
    sequences = [decode_imu_packet(e.data).sequence for e in notes if e.kind == "packet"]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


def test_flood_sends_duplicates_at_the_rate() -> None:
    w = make(FloodSpec(at_s=2.0, duration_s=1.0, rate_hz=300.0))
    out = run(w, 4.0, step_s=0.05)
    duplicates = [e for e in out if isinstance(e, Notification) and e.kind == "duplicate"]
    assert len(duplicates) == pytest.approx(300, abs=2)
    assert all(2.0 <= e.t_s < 3.0 for e in duplicates)
    originals = {e.data for e in out if isinstance(e, Notification) and e.kind == "packet"}
    assert all(e.data in originals for e in duplicates)


def test_distinct_flood_sends_new_valid_packets_at_the_wrong_rate() -> None:
    # A sensor at the wrong rate: 200 packets/s of new samples for 1 s, each
    # packet valid with its own sequence number and the nominal interval in
    # its header, so the headers' clock runs ahead; then the normal rate.
    w = make(FloodSpec(at_s=2.0, duration_s=1.0, rate_hz=200.0, distinct=True))
    out = run(w, 6.0, step_s=0.05)
    sent = packets(out)
    assert not [e for e in out if isinstance(e, Notification) and e.kind != "packet"]
    sequences = [p.sequence for _, p in sent]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    during = [(t, p) for t, p in sent if 2.0 < t <= 3.0]
    assert len(during) == pytest.approx(200, abs=2)
    assert len({p.acc_g.tobytes() for _, p in during}) == len(during)  # distinct
    interval_ms = w.config.samples_per_packet * 1000 / w.config.sample_rate_hz
    t0 = [p.t0_ms for _, p in sent]
    assert np.diff(t0) == pytest.approx(interval_ms, abs=1)  # nominal in every header
    after = [t for t, _ in sent if t > 3.1]
    assert np.diff(after) == pytest.approx(interval_ms / 1000, abs=1e-6)  # normal rate again
    # The headers' clock ran ahead: 200 packets of 0.2 s in 1 s of real time.
    last_sample_s = t0[-1] / 1000 + interval_ms / 1000 - 1 / w.config.sample_rate_hz
    assert last_sample_s - after[-1] == pytest.approx(200 * interval_ms / 1000 - 1.0, abs=0.3)


def test_battery_drains_notifies_and_finally_switches_off() -> None:
    w = make(
        BatteryDrainSpec(at_s=2.0, pct_per_h=3600.0), battery_pct=5.0, battery_drain_pct_per_h=0.0
    )
    out = run(w, 10.0)
    levels = [(e.t_s, e.percent) for e in out if isinstance(e, BatteryLevel)]
    assert [p for _, p in levels] == [4, 3, 2, 1, 0]
    # The characteristic shows the charge rounded up: 4 % once 4.0 % remain.
    assert [t for t, _ in levels] == pytest.approx([3.0, 4.0, 5.0, 6.0, 7.0])
    radio = [e for e in out if isinstance(e, RadioChange)]
    assert [(e.reachable, e.reason) for e in radio] == [(False, "battery_empty")]
    assert radio[0].t_s == pytest.approx(7.0)
    assert not [t for t, _ in packets(out) if t > 7.0]
    assert not w.reachable and w.battery_percent == 0


def test_set_sample_rate_applies_after_the_packet_in_progress() -> None:
    w = make(sample_rate_hz=50)
    out = run(w, 1.0)
    w.request_sample_rate(200)
    out += run(w, 3.0)
    got = [p for _, p in packets(out)]
    intervals = [p.interval_us for p in got]
    switch = intervals.index(5000)
    assert set(intervals[:switch]) == {20_000} and set(intervals[switch:]) == {5000}
    last_old, first_new = got[switch - 1], got[switch]
    assert first_new.t0_ms == last_old.t0_ms + 9 * 20 + 5  # next sample, new spacing
    assert first_new.sequence == last_old.sequence + 1
    assert w.sample_rate_hz == 200


def test_nothing_is_computed_for_nobody() -> None:
    w = make()
    assert not [e for e in w.advance(5.0, streaming=False) if isinstance(e, Notification)]
    assert w.stats.packets_assembled == 25 and w.stats.packets_notified == 0
    later = packets(w.advance(5.4, streaming=True))
    assert [p.sequence for _, p in later] == [25, 26]  # the sequence counts every packet
