"""The simulator's batched physics against its per-wearable reference.

``WardSensors`` (wearables laid out across arrays) must measure what each
wearable's ``SensorModel`` measures on its own, whatever else is measured in
the same call and however the samples are split into blocks; the packets it
feeds must be byte for byte what the protocol's own encoder builds.
"""

from __future__ import annotations

import numpy as np
import pytest

from device_gateway.protocol import AccRange, decode_imu_packet, encode_imu_packet
from simulator import (
    Mounting,
    Patient,
    SensorErrors,
    SimulatedWearable,
    WearableConfig,
    builtin_scenario_path,
    demo_scenario,
    load_scenario,
)
from simulator.emissions import Notification
from simulator.noise import stream_key
from simulator.packets import PacketEncoder
from simulator.specs import FallSpec, SitDownSpec, SitSpec, StandSpec, WalkSpec
from simulator.ward import WardSensors
from simulator.ward_motion import TrajectoryTable


def ward_of_many() -> list[SimulatedWearable]:
    """Every shipped role and family of falls, rates 25-200 Hz, odd mountings and ranges."""
    wearables = [
        SimulatedWearable(p, index=i, seed=0) for i, p in enumerate(demo_scenario(9).patients)
    ]
    falls = load_scenario(builtin_scenario_path("ward_falls")).patients
    wearables += [SimulatedWearable(p, index=i, seed=1) for i, p in enumerate(falls)]
    odd = WearableConfig(
        address="C0:FF:EE:00:00:99",
        sample_rate_hz=25,
        acc_range_g=16,
        gyr_range_dps=250,
        mounting=Mounting(spin_deg=200.0, tilt_deg=-30.0, yaw_deg=20.0),
        errors=SensorErrors(gyr_bias_dps=5.0, gyr_drift_dps=3.0),
    )
    timeline = (
        StandSpec(at_s=0.0),
        WalkSpec(at_s=2.0, step_hz=2.4, vertical_g=0.6),
        FallSpec(at_s=7.0, direction="backward", impact_g=9.0),
    )
    wearables.append(SimulatedWearable(Patient("odd", odd, timeline), index=0, seed=9))
    hard = WearableConfig(address="C0:FF:EE:00:00:98", sample_rate_hz=200, model="acc_only")
    sits = (StandSpec(at_s=0.0), SitDownSpec(at_s=1.0, style="hard", impact_g=3.5))
    wearables.append(SimulatedWearable(Patient("hard", hard, sits), index=0, seed=2))
    return wearables


def reference_counts(
    w: SimulatedWearable, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    interval_s = 1.0 / w.config.sample_rate_hz
    t = index * interval_s
    return w.sensor.measure(t, window_s=interval_s, since_boot_s=t, sample_index=index, boot=0)


@pytest.mark.parametrize("start_s", [0.0, 1.7, 7.2, 35.3, 61.0, 240.0])
def test_the_ward_measures_what_each_sensor_measures_alone(start_s: float) -> None:
    wearables = ward_of_many()
    ward = WardSensors([w.sensor for w in wearables])
    rows = np.arange(len(wearables))
    n = 40
    rates = np.asarray([w.config.sample_rate_hz for w in wearables], dtype=np.float64)
    index = np.round(start_s * rates).astype(np.int64)[:, None] + np.arange(n)
    t = index / rates[:, None]
    keys = np.asarray([stream_key(w.sensor.key, "noise", 0) for w in wearables], dtype=np.uint64)
    acc, gyr = ward.measure(
        rows, t, window_s=1.0 / rates, since_boot_s=t, sample_index=index, noise_key=keys
    )
    differing = 0
    for i, w in enumerate(wearables):
        ref_acc, ref_gyr = reference_counts(w, index[i])
        # Rounding may put a value on the other side of a quantisation step.
        assert np.abs(acc[i].astype(int) - ref_acc).max() <= 1
        differing += int((acc[i] != ref_acc).sum())
        if ref_gyr is not None:
            assert np.abs(gyr[i].astype(int) - ref_gyr).max() <= 1
            differing += int((gyr[i] != ref_gyr).sum())
    assert differing <= 0.001 * acc.size * 2


def test_a_sample_does_not_depend_on_what_else_is_measured_with_it() -> None:
    wearables = ward_of_many()
    ward = WardSensors([w.sensor for w in wearables])
    everyone = np.arange(len(wearables))
    index = 1700 + np.arange(60, dtype=np.int64)
    t = np.tile(index * 0.02, (len(wearables), 1))
    keys = np.arange(len(wearables), dtype=np.uint64) + 11
    window = np.full(len(wearables), 0.02)
    idx = np.tile(index, (len(wearables), 1))
    acc, gyr = ward.measure(
        everyone, t, window_s=window, since_boot_s=t, sample_index=idx, noise_key=keys
    )
    # Two wearables alone, in another order, in two blocks of other lengths.
    pick = np.asarray([len(wearables) - 1, 3])
    for lo, hi in ((0, 17), (17, 60)):
        part_acc, part_gyr = ward.measure(
            pick,
            t[pick, lo:hi],
            window_s=window[pick],
            since_boot_s=t[pick, lo:hi],
            sample_index=idx[pick, lo:hi],
            noise_key=keys[pick],
        )
        assert np.array_equal(part_acc, acc[pick, lo:hi])
        assert np.array_equal(part_gyr, gyr[pick, lo:hi])


def test_the_trajectory_table_is_each_trajectory() -> None:
    wearables = ward_of_many()
    table = TrajectoryTable([w.trajectory for w in wearables])
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0.0, 80.0, (len(wearables), 300)), axis=1)
    q = table.orientation(np.arange(len(wearables)), t)
    acc = table.pelvis_acc_g(np.arange(len(wearables)), t)
    for i, w in enumerate(wearables):
        ref = w.trajectory.orientation(t[i]).as_quat()
        same_sign = np.where(np.sum(ref * q[i], axis=1, keepdims=True) < 0, -q[i], q[i])
        assert np.abs(same_sign - ref).max() < 1e-12
        assert np.abs(acc[i] - w.trajectory.pelvis_acc_g(t[i])).max() < 1e-12


@pytest.mark.parametrize(("acc_range", "has_gyro"), [(8, True), (16, True), (8, False)])
def test_packets_are_the_protocols_own_bytes(acc_range: int, has_gyro: bool) -> None:
    rng = np.random.default_rng(acc_range)
    encoder = PacketEncoder(AccRange(acc_range), has_gyro)
    for sequence, t0_ms, count in ((0, 0, 1), (65_537, 2**32 + 5, 10), (7, 123_456, 19)):
        acc = rng.integers(-32768, 32768, (count, 3)).astype(np.int16)
        gyr = rng.integers(-32768, 32768, (count, 3)).astype(np.int16) if has_gyro else None
        body = (acc if gyr is None else np.hstack([acc, gyr])).astype("<i2").tobytes()
        ours = encoder.encode(sequence=sequence, t0_ms=t0_ms, interval_us=20_000, body=body)
        reference = encode_imu_packet(
            sequence=sequence,
            t0_ms=t0_ms,
            interval_us=20_000,
            acc_range=AccRange(acc_range),
            acc_counts=acc,
            gyr_counts=gyr,
        )
        assert ours == reference


def test_packets_carry_the_reference_samples() -> None:
    config = WearableConfig(address="C0:FF:EE:00:00:07", sample_rate_hz=50)
    patient = Patient("p", config, (SitSpec(at_s=0.0), WalkSpec(at_s=2.0)))
    w = SimulatedWearable(patient, index=0, seed=8)
    notes = [e for e in w.advance(6.0, streaming=True) if isinstance(e, Notification)]
    assert len(notes) == 30
    for note in notes:
        packet = decode_imu_packet(note.data)
        index = packet.t0_ms // 20 + np.arange(packet.sample_count)
        ref_acc, ref_gyr = reference_counts(w, index)
        assert ref_gyr is not None and packet.gyr_dps is not None
        assert np.abs(packet.acc_g * 4096 - ref_acc).max() <= 1
        assert np.abs(packet.gyr_dps * 16.384 - ref_gyr).max() <= 1


def test_a_wearable_twice_in_one_call_is_refused() -> None:
    wearables = ward_of_many()[:2]
    ward = WardSensors([w.sensor for w in wearables])
    t = np.zeros((2, 3))
    index = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="at most once"):
        ward.measure(
            np.asarray([1, 1]),
            t,
            window_s=np.full(2, 0.02),
            since_boot_s=t,
            sample_index=index,
            noise_key=np.zeros(2, dtype=np.uint64),
        )
