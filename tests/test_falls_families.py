"""Each family of falls and fall-like everyday movements, on simulated patients.

The families are those of docs/falls.md: backward falls from a chair that
end half reclined, slow collapses with a soft impact, two-stage falls (sit
on the floor, lie back later), falls out of bed, a patient lying when the
wearable connects, a fall followed by getting up at once, the everyday
movements of elderly patients that look like falls, and a gyroscope that
saturates. The samples come from the simulator's sensor model and go to the
full engine packet by packet, as the gateway feeds it; with and without a
gyroscope, several mountings and seeds, and at 20 Hz (a chest-worn sensor).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lab.resample import resample_imu
from posture import EngineConfig, PostureEngine, PostureEvent, PostureEventKind
from simulator import SimulatedWearable, parse_scenario

PACKET = 10
Timeline = list[dict[str, Any]]


def run_patient(
    timeline: Timeline,
    end_s: float,
    *,
    model: str = "acc_gyro",
    spin_deg: float = 0.0,
    seed: int = 1,
    start_s: float = 0.0,
    rate_hz: float = 50.0,
    gyr_range_dps: int = 2000,
) -> tuple[list[PostureEvent], SimulatedWearable]:
    """Stream a patient from ``start_s`` (the wearable connects then) to ``end_s``."""
    wearable_rate = 200 if rate_hz not in (25.0, 50.0, 100.0, 200.0) else int(rate_hz)
    scenario = parse_scenario(
        {
            "patients": [
                {
                    "id": "p",
                    "seed": seed,
                    "wearable": {
                        "address": "C0:FF:EE:00:00:09",
                        "model": model,
                        "sample_rate_hz": wearable_rate,
                        "acc_range_g": 16,
                        "gyr_range_dps": gyr_range_dps,
                        "mounting": {"spin_deg": spin_deg, "tilt_deg": 10.0},
                    },
                    "timeline": timeline,
                }
            ]
        }
    )
    wearable = SimulatedWearable(scenario.patients[0], index=0, seed=seed)
    block = wearable.render(start_s, end_s)
    acc, gyr = block.acc_g, block.gyr_dps
    t = block.t_s
    if wearable_rate != rate_hz:  # a slower wearable, as it would have sampled
        data = acc if gyr is None else np.hstack([acc, gyr])
        data = resample_imu(data, wearable_rate, rate_hz)
        acc, gyr = data[:, :3], None if gyr is None else data[:, 3:]
        t = start_s + np.arange(acc.shape[0]) / rate_hz
    engine = PostureEngine(EngineConfig(sample_rate_hz=rate_hz, has_gyro=gyr is not None))
    events: list[PostureEvent] = []
    for i in range(0, t.shape[0], PACKET):
        part = slice(i, i + PACKET)
        events += engine.process(t[part], acc[part], None if gyr is None else gyr[part]).events
    return events, wearable


def falls(events: list[PostureEvent]) -> list[PostureEvent]:
    return [e for e in events if e.kind is PostureEventKind.FALL_DETECTED]


def assert_detected(
    events: list[PostureEvent], wearable: SimulatedWearable, rule: str, latency_s: float
) -> PostureEvent:
    """Exactly one detection, of the simulated fall, within ``latency_s``, by
    ``rule`` (one of several names separated by ``|``)."""
    (truth,) = wearable.trajectory.falls
    found = falls(events)
    assert len(found) == 1, [e.details for e in found]
    d = found[0]
    assert d.details["impact_t_s"] == pytest.approx(truth.impact_s, abs=0.15)
    assert 0.0 < d.t_s - truth.impact_s <= latency_s
    fired = {k.removeprefix("rule_") for k in d.details if k.startswith("rule_")}
    assert fired <= set(rule.split("|")) and len(fired) == 1, d.details
    return d


MOUNTINGS = [("acc_gyro", 0.0, 1), ("acc_only", 25.0, 2), ("acc_gyro", 330.0, 3)]


@pytest.mark.parametrize(("model", "spin_deg", "seed"), MOUNTINGS)
def test_backward_fall_from_a_chair_ending_half_reclined(
    model: str, spin_deg: float, seed: int
) -> None:
    # Leaning forward to get up from the chair (F14, F11), the patient falls
    # backward and ends half reclined: 50° from the upright, far more from the
    # posture before. (The upright calibrated on this patient's sitting may
    # itself lean forward, so the end may also read as lying.)
    timeline = [
        {"at_s": 0.0, "activity": "sit", "flexion_deg": 25.0},
        {"at_s": 20.0, "activity": "fall", "direction": "backward", "impact_g": 3.0}
        | {"end": "reclined"},
    ]
    events, w = run_patient(timeline, 40.0, model=model, spin_deg=spin_deg, seed=seed)
    d = assert_detected(events, w, "reclined|lying|unmoving", 4.0)
    assert d.details["change_deg"] >= 60.0
    truth = w.truth(np.array([d.t_s]))
    assert truth.flexion_deg[0] == pytest.approx(-50.0, abs=12.0)  # half reclined, not lying


@pytest.mark.parametrize(("model", "spin_deg", "seed"), MOUNTINGS)
def test_slow_collapse_with_a_soft_impact(model: str, spin_deg: float, seed: int) -> None:
    timeline = [
        {"at_s": 0.0, "activity": "stand"},
        {"at_s": 20.0, "activity": "fall", "direction": "forward", "impact_g": 1.8}
        | {"descent_s": 3.0},
    ]
    events, w = run_patient(timeline, 45.0, model=model, spin_deg=spin_deg, seed=seed)
    d = assert_detected(events, w, "soft", 10.0)
    assert d.details["peak_acc_g"] < 2.0
    assert d.details["latency_s"] >= 5.0  # the longer look for "still"


@pytest.mark.parametrize(("model", "spin_deg", "seed"), MOUNTINGS[:2])
def test_two_stage_fall_sits_on_the_floor_then_lies_back(
    model: str, spin_deg: float, seed: int
) -> None:
    timeline = [
        {"at_s": 0.0, "activity": "stand"},
        {"at_s": 10.0, "activity": "walk"},
        {"at_s": 20.0, "activity": "fall", "direction": "backward", "impact_g": 4.0}
        | {"end": "sitting"},
        {"at_s": 27.0, "activity": "lie_down", "position": "supine"},
    ]
    events, w = run_patient(timeline, 45.0, model=model, spin_deg=spin_deg, seed=seed)
    d = assert_detected(events, w, "two_stage", 20.0)
    assert d.t_s > 27.0  # only once lying back


@pytest.mark.parametrize(("model", "spin_deg", "seed"), MOUNTINGS[:2])
def test_fall_out_of_bed(model: str, spin_deg: float, seed: int) -> None:
    timeline = [
        {"at_s": 0.0, "activity": "sit"},
        {"at_s": 8.0, "activity": "lie_down", "position": "supine"},
        {"at_s": 30.0, "activity": "fall", "direction": "left", "impact_g": 4.0},
    ]
    events, w = run_patient(timeline, 45.0, model=model, spin_deg=spin_deg, seed=seed)
    d = assert_detected(events, w, "out_of_bed", 4.0)
    assert d.details["from_lying"] == 1.0


@pytest.mark.parametrize(("model", "seed"), [("acc_gyro", 4), ("acc_only", 5)])
def test_patient_lying_when_the_wearable_connects(model: str, seed: int) -> None:
    # Connected at 12 s, the patient already in bed: turning over is no fall,
    # and no calibration comes of it; a fall out of bed later is one.
    timeline = [
        {"at_s": 0.0, "activity": "sit"},
        {"at_s": 5.0, "activity": "lie_down", "position": "supine"},
        {"at_s": 20.0, "activity": "lie_down", "position": "right", "duration_s": 1.5},
        {"at_s": 30.0, "activity": "lie_down", "position": "supine", "duration_s": 1.5},
        {"at_s": 40.0, "activity": "fall", "direction": "right", "impact_g": 4.5},
    ]
    events, w = run_patient(timeline, 38.0, model=model, seed=seed, start_s=12.0)
    assert events == []  # neither a fall nor a calibration
    events, w = run_patient(timeline, 55.0, model=model, seed=seed, start_s=12.0)
    d = assert_detected(events, w, "out_of_bed", 4.0)
    assert d.details["from_lying"] == 1.0


@pytest.mark.parametrize(
    ("model", "spin_deg", "seed", "delay_s"),
    [("acc_gyro", 0.0, 1, 0.25), ("acc_only", 25.0, 2, 0.75)],
)
def test_fall_then_getting_up_at_once_is_still_reported(
    model: str, spin_deg: float, seed: int, delay_s: float
) -> None:
    # Starts getting up 0.25-0.75 s after the impact (before: no event at all).
    timeline = [
        {"at_s": 0.0, "activity": "stand"},
        {"at_s": 10.0, "activity": "walk"},
        {"at_s": 20.0, "activity": "fall", "direction": "forward", "impact_g": 5.0},
        {"at_s": 20.75 + delay_s, "activity": "get_up", "to": "stand", "duration_s": 1.5},
        {"at_s": 26.0, "activity": "walk"},
    ]
    events, w = run_patient(timeline, 45.0, model=model, spin_deg=spin_deg, seed=seed)
    d = assert_detected(events, w, "down_up|lying", 4.0)
    kinds = [e.kind for e in events if e.kind.value.startswith("fall")]
    assert kinds == [PostureEventKind.FALL_DETECTED, PostureEventKind.FALL_CANCELLED]
    assert events[-1].details["detected_t_s"] == d.t_s


@pytest.mark.parametrize(("model", "spin_deg", "seed"), MOUNTINGS)
def test_everyday_movements_of_elderly_patients_raise_no_fall(
    model: str, spin_deg: float, seed: int
) -> None:
    timeline = [
        {"at_s": 0.0, "activity": "stand"},
        {"at_s": 8.0, "activity": "squat", "down_s": 2.5, "up_s": 2.5},
        {"at_s": 18.0, "activity": "sit_down", "style": "hard", "impact_g": 2.6}
        | {"duration_s": 1.0, "seat_height_m": 0.4},
        {"at_s": 28.0, "activity": "walk", "lean_deg": 40.0, "duration_s": 12.0},
        {"at_s": 45.0, "activity": "sit"},
        {"at_s": 52.0, "activity": "lie_down", "position": "supine", "duration_s": 2.0},
        {"at_s": 65.0, "activity": "lie_down", "position": "left", "duration_s": 1.5},
        {"at_s": 75.0, "activity": "lie_down", "position": "supine", "duration_s": 1.5},
    ]
    events, _ = run_patient(timeline, 90.0, model=model, spin_deg=spin_deg, seed=seed)
    assert falls(events) == []


@pytest.mark.parametrize("seed", [6, 7])
def test_a_saturating_gyroscope_does_not_lose_a_fall(seed: int) -> None:
    timeline = [
        {"at_s": 0.0, "activity": "stand"},
        {"at_s": 10.0, "activity": "walk"},
        {"at_s": 20.0, "activity": "fall", "direction": "left", "impact_g": 4.0}
        | {"descent_s": 0.5},
    ]
    events, w = run_patient(timeline, 35.0, seed=seed, gyr_range_dps=250)
    block = w.render(19.0, 22.0)
    assert block.gyr_dps is not None and np.abs(block.gyr_dps).max() <= 250.5
    d = assert_detected(events, w, "lying", 4.0)
    assert d.details["gyro_clipped"] == 1.0


@pytest.mark.parametrize(
    ("fall", "rule", "latency_s"),
    [
        ({"direction": "forward", "impact_g": 4.0}, "lying", 4.0),
        ({"direction": "right", "impact_g": 1.9, "descent_s": 2.5}, "soft|lying", 10.0),
    ],
)
def test_a_chest_worn_20_hz_sensor(fall: dict[str, Any], rule: str, latency_s: float) -> None:
    timeline = [
        {"at_s": 0.0, "activity": "stand"},
        {"at_s": 10.0, "activity": "walk"},
        {"at_s": 20.0, "activity": "fall"} | fall,
    ]
    events, w = run_patient(timeline, 40.0, rate_hz=20.0, seed=8)
    assert_detected(events, w, rule, latency_s)
