"""The gateway's engines and slots: a wearable that changes its sample rate
keeps its calibration; the slot it leaves starts over for the next wearable,
with that patient's slouch prescription."""

from __future__ import annotations

import numpy as np
import pytest

from device_gateway.engine_slots import EngineSlots, SlotHolder, StreamShape
from posture import SlouchSettings

AT_50_HZ = StreamShape(50.0, True)
AT_100_HZ = StreamShape(100.0, True)


def still_upright(
    slots: EngineSlots,
    holder: SlotHolder,
    shape: StreamShape,
    seconds: float,
    *,
    start_s: float = 0.0,
    tilt_deg: float = 0.0,
) -> None:
    """Feed ``holder`` ``seconds`` of a wearable at rest (its face tilted by
    ``tilt_deg`` about the sensor x axis) in 10-sample blocks from ``start_s``."""
    rng = np.random.default_rng(1)
    rate = shape.sample_rate_hz
    tilt = np.radians(tilt_deg)
    gravity = [0.0, np.cos(tilt), np.sin(tilt)]
    for k in range(int(seconds * rate / 10)):
        t = start_s + (k * 10 + np.arange(10)) / rate
        acc = np.tile(gravity, (10, 1)) + rng.normal(0.0, 0.002, (10, 3))
        gyr = rng.normal(0.0, 0.1, (10, 3))
        slot = slots.place(holder, shape)
        slots.process(shape, np.array([slot]), t[:, None], acc[:, :, None], gyr[:, :, None])


@pytest.mark.timeout(60)
def test_a_rate_change_keeps_the_calibration_and_the_slot_left_starts_over() -> None:
    slots = EngineSlots()
    strict = SlouchSettings(threshold_deg=15.0)
    lenient = SlouchSettings(threshold_deg=40.0)
    first, second = SlotHolder(strict), SlotHolder(lenient)

    still_upright(slots, first, AT_50_HZ, 8.0)
    assert slots.calibrated(first)
    calibration = slots.engines[AT_50_HZ].calibration(0)

    # The wearable now streams at 100 Hz: another engine, the same calibration.
    slot = slots.place(first, AT_100_HZ)
    assert first.placed == (AT_100_HZ, slot)
    assert slots.engines[AT_100_HZ].calibration(slot) == calibration
    assert slots.engines[AT_100_HZ].slouch_settings(slot) == strict

    # The next wearable at 50 Hz takes the slot left behind, fresh, with its own rule.
    reused = slots.place(second, AT_50_HZ)
    assert reused == 0
    assert not slots.calibrated(second)
    stats = slots.stats(second)
    assert stats is not None and stats.samples == 0
    assert slots.engines[AT_50_HZ].slouch_settings(reused) == lenient


@pytest.mark.timeout(60)
@pytest.mark.parametrize("requested", [False, True])
def test_a_requested_calibration_reaches_the_engine_before_the_next_samples(
    requested: bool,
) -> None:
    slots = EngineSlots()
    holder = SlotHolder(SlouchSettings())
    still_upright(slots, holder, AT_50_HZ, 8.0, start_s=0.0)
    before = slots.engines[AT_50_HZ].calibration(0)
    assert before is not None
    # A long absence: the wearable may have been put back on differently.
    holder.calibration_requested = requested
    still_upright(slots, holder, AT_50_HZ, 8.0, start_s=20.0, tilt_deg=25.0)
    after = slots.engines[AT_50_HZ].calibration(0)
    assert (after != before) == requested
    assert not holder.calibration_requested  # handed to the engine, once
