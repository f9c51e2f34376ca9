"""Slouch alerts and activity: dwell timing, walking, brief bends, lying down."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_posture_engine import FS, kinds, run
from test_posture_synth import Motion, gait_acc, gait_sway, keyframes, synthesize

from posture import Activity, EngineConfig, PostureEngine, PostureEventKind, SlouchSettings

BLOCK = 10  # 0.2 s packets at 50 Hz, as the wearable sends them
PACKET_S = BLOCK / FS
GYRO = pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])


def engine(gyro: bool, **slouch: Any) -> PostureEngine:
    return PostureEngine(EngineConfig(FS, gyro, slouch=SlouchSettings(**slouch)))


def crossing_time(m: Motion, threshold_deg: float, after_s: float = 0.0) -> float:
    """First true time the flexion goes beyond ``threshold_deg`` after ``after_s``."""
    i = np.flatnonzero((m.flexion_deg > threshold_deg) & (m.t_s > after_s))[0]
    return float(m.t_s[i])


@GYRO
@pytest.mark.parametrize("dwell_s", [30.0, 7.5])
def test_slouch_alert_comes_one_dwell_after_the_threshold_is_crossed(
    gyro: bool, dwell_s: float
) -> None:
    # Upright (auto-calibrates), slumps to 35° over 1.5 s, sits up at 50 s.
    m = synthesize(
        60.0,
        FS,
        keyframes([(0, 0), (5, 0), (6.5, 35), (50, 35), (51.5, 0), (60, 0)]),
        gyr_bias_dps=(0.3, -0.2, 0.1),
    )
    out = run(engine(gyro, dwell_s=dwell_s), m, BLOCK, gyro=gyro)
    started = [e for e in out.events if e.kind == PostureEventKind.SLOUCH_STARTED]
    ended = [e for e in out.events if e.kind == PostureEventKind.SLOUCH_ENDED]
    assert len(started) == 1 and len(ended) == 1
    due = crossing_time(m, 25.0) + dwell_s
    assert due - 1e-9 <= started[0].t_s <= due + PACKET_S
    assert started[0].flexion_deg == pytest.approx(35.0, abs=0.5)
    assert started[0].details["duration_s"] >= dwell_s
    # It ends once below threshold - hysteresis (20°), not at 25°.
    below = float(m.t_s[np.flatnonzero((m.flexion_deg < 20.0) & (m.t_s > 50.0))[0]])
    assert below - 1e-9 <= ended[0].t_s <= below + PACKET_S
    assert ended[0].details["duration_s"] == pytest.approx(ended[0].t_s - started[0].t_s, abs=1e-6)
    slouching_t = out.t_s[out.slouching]
    assert slouching_t[0] == started[0].t_s and slouching_t[-1] < ended[0].t_s


@GYRO
def test_lateral_lean_beyond_its_threshold_is_a_slouch_too(gyro: bool) -> None:
    m = synthesize(
        20.0, FS, keyframes([(0, 0), (20, 0)]), keyframes([(0, 0), (5, 0), (6, -24), (20, -24)])
    )
    out = run(engine(gyro, dwell_s=5.0), m, BLOCK, gyro=gyro)
    assert kinds(out)[1:] == [PostureEventKind.SLOUCH_STARTED]
    assert out.events[1].lateral_deg == pytest.approx(-24.0, abs=0.5)


@GYRO
def test_walking_hunched_is_a_slouch_unless_the_patient_setting_says_no(gyro: bool) -> None:
    # A patient who walks stooped (30°) for a minute: by default a reminder
    # one dwell after the crossing (hunched gait loads the vertebrae most);
    # with while_walking=False (e.g. behind a walker, as prescribed) none.
    start, stop = 6.0, 66.0
    flex = keyframes([(0, 0), (5, 0), (6, 30), (66, 30), (67, 0), (75, 0)])
    sway = gait_sway(start_s=start, stop_s=stop)
    m = synthesize(
        75.0,
        FS,
        lambda t: flex(t) + sway(t),
        gait_sway(0.9, 3.0, start_s=start, stop_s=stop),
        linear_acc_g=gait_acc(start_s=start, stop_s=stop),
    )
    out = run(engine(gyro, dwell_s=5.0), m, BLOCK, gyro=gyro)
    assert kinds(out) == [
        PostureEventKind.CALIBRATED,
        PostureEventKind.SLOUCH_STARTED,
        PostureEventKind.SLOUCH_ENDED,
    ]
    started, ended = out.events[1], out.events[2]
    crossed = crossing_time(m, 25.0)
    # The count pauses while the gait is vigorous but not yet recognised as
    # walking (up to 3 s: test_walking_is_recognised_within_three_seconds).
    assert crossed + 5.0 - PACKET_S <= started.t_s <= crossed + 5.0 + 3.0
    assert stop < ended.t_s < stop + 2.0  # straightened up
    walking = out.activity[(out.t_s > start + 3.0) & (out.t_s < stop - 1.0)] == Activity.WALKING
    assert walking.mean() > 0.95
    off = run(engine(gyro, dwell_s=5.0, while_walking=False), m, BLOCK, gyro=gyro)
    assert PostureEventKind.SLOUCH_STARTED not in kinds(off)
    assert not off.slouching.any()


@GYRO
@pytest.mark.parametrize("step_hz", [1.2, 2.2])
def test_walking_is_recognised_within_three_seconds(gyro: bool, step_hz: float) -> None:
    m = synthesize(
        20.0,
        FS,
        gait_sway(step_hz, 2.0, start_s=5.0),
        linear_acc_g=gait_acc(step_hz, vertical_g=0.2, start_s=5.0),
    )
    out = run(engine(gyro), m, BLOCK, gyro=gyro)
    first = out.t_s[np.argmax(out.activity == Activity.WALKING)]
    assert 5.0 < first < 8.0
    assert (out.activity[out.t_s > 8.0] == Activity.WALKING).all()
    assert (out.activity[(out.t_s > 1.0) & (out.t_s < 5.0)] == Activity.UPRIGHT).all()


@GYRO
def test_brief_bends_to_pick_something_up_raise_no_slouch(gyro: bool) -> None:
    keys = [(0.0, 0.0), (5.0, 0.0)]
    for t in (6.0, 13.0, 20.0):  # three bends: 1 s down, 2.5 s there, 1 s up
        keys += [(t, 0.0), (t + 1.0, 75.0), (t + 3.5, 75.0), (t + 4.5, 0.0)]
    m = synthesize(30.0, FS, keyframes([*keys, (30.0, 0.0)]))
    out = run(engine(gyro, dwell_s=4.0), m, BLOCK, gyro=gyro)
    assert kinds(out) == [PostureEventKind.CALIBRATED]


@GYRO
@pytest.mark.parametrize(
    ("name", "flexion", "lateral"),
    [
        ("side", [(0, 0), (5, 0), (6, 20), (8, 0), (60, 0)], [(0, 0), (5, 0), (6, 30), (8, 90)]),
        ("back", [(0, 0), (5, 0), (6, 30), (7, 20), (9, -88), (60, -88)], [(0, 0)]),
        ("prone", [(0, 0), (5, 0), (7, 45), (9, 88), (60, 88)], [(0, 0)]),
    ],
)
def test_lying_down_raises_no_slouch_and_is_recognised(
    gyro: bool, name: str, flexion: list, lateral: list
) -> None:
    m = synthesize(60.0, FS, keyframes(flexion), keyframes(lateral))
    out = run(engine(gyro, dwell_s=2.0), m, BLOCK, gyro=gyro)
    assert kinds(out) == [PostureEventKind.CALIBRATED], name
    assert (out.activity[out.t_s > 13.0] == Activity.LYING).all(), name


@GYRO
def test_sitting_down_raises_no_slouch(gyro: bool) -> None:
    # Standing, leaning 40° forward while lowering onto a chair, upright again.
    def lowering(t: np.ndarray) -> np.ndarray:
        u = np.clip((t - 5.5) / 1.0, 0.0, 1.0)
        return np.stack([0 * t, 0 * t, -0.3 * np.sin(2 * np.pi * u)], axis=1)

    m = synthesize(
        30.0,
        FS,
        keyframes([(0, 0), (5, 0), (5.8, 40), (6.8, 40), (7.8, 5), (30, 5)]),
        linear_acc_g=lowering,
    )
    out = run(engine(gyro, dwell_s=1.5), m, BLOCK, gyro=gyro)
    assert kinds(out) == [PostureEventKind.CALIBRATED]
    assert (out.activity[out.t_s > 10.0] == Activity.UPRIGHT).all()


def walking_hunched(start_s: float) -> Motion:
    """40 s slouched at 35° (from 6 s on), walking hunched from ``start_s``."""
    flex = keyframes([(0, 0), (5, 0), (6, 35), (40, 35)])
    return synthesize(
        40.0,
        FS,
        lambda t: flex(t) + gait_sway(start_s=start_s)(t),
        linear_acc_g=gait_acc(start_s=start_s),
    )


def test_a_slouch_goes_on_while_walking_hunched_or_ends_when_walking_does_not_count() -> None:
    start = 20.0
    m = walking_hunched(start)
    out = run(engine(True, dwell_s=5.0), m, BLOCK)
    assert kinds(out) == [PostureEventKind.CALIBRATED, PostureEventKind.SLOUCH_STARTED]
    assert out.slouching[-1]
    out = run(engine(True, dwell_s=5.0, while_walking=False), m, BLOCK)
    assert kinds(out) == [
        PostureEventKind.CALIBRATED,
        PostureEventKind.SLOUCH_STARTED,
        PostureEventKind.SLOUCH_ENDED,
    ]
    assert start < out.events[2].t_s < start + 4.0


def test_dwell_pauses_in_the_hysteresis_band_and_resets_below_it() -> None:
    # 27° for 6 s, 23° (band) for 10 s, 27° again: 6 + 6 s beyond = 12 s dwell.
    flex = keyframes(
        [(0, 0), (5, 0), (5.2, 27), (11, 27), (11.2, 23), (21, 23), (21.2, 27), (40, 27)]
    )
    m = synthesize(40.0, FS, flex)
    out = run(engine(True, dwell_s=12.0), m, BLOCK)
    (start,) = [e for e in out.events if e.kind == PostureEventKind.SLOUCH_STARTED]
    beyond = crossing_time(m, 25.0)
    back = crossing_time(m, 25.0, after_s=15.0)
    band_s = back - float(m.t_s[np.flatnonzero((m.flexion_deg < 25.0) & (m.t_s > 8))[0]])
    due = beyond + 12.0 + band_s
    assert due - 0.1 <= start.t_s <= due + PACKET_S
    # Dropping below 20° instead of the band resets the count.
    flex2 = keyframes(
        [(0, 0), (5, 0), (5.2, 27), (11, 27), (11.2, 15), (21, 15), (21.2, 27), (30, 27)]
    )
    out2 = run(engine(True, dwell_s=12.0), synthesize(30.0, FS, flex2), BLOCK)
    assert PostureEventKind.SLOUCH_STARTED not in kinds(out2)


def test_the_many_device_slouch_steps_decide_like_the_per_device_loop() -> None:
    # Random angles around the thresholds, random activities and gaps: the
    # array-step path (many devices) and the plain loop (one device) agree
    # on every flag and transition.
    from posture.slouch import SlouchDetector

    rng = np.random.default_rng(11)
    devices, blocks, n = 20, 60, 10
    settings = SlouchSettings(dwell_s=0.5)
    many = SlouchDetector(settings, 0.05, devices)
    one = [SlouchDetector(settings, 0.05, 1) for _ in range(devices)]
    t0 = np.zeros(devices)
    seen = 0
    for _ in range(blocks):
        steps = rng.choice([0.02, 0.02, 0.02, 0.1], size=(n, devices))
        t = t0 + np.cumsum(steps, axis=0)
        t0 = t[-1]
        # A posture and an activity per block and device, with noise.
        flexion = rng.normal(26.0, 6.0, devices) + rng.normal(0.0, 1.0, (n, devices))
        flexion[rng.random((n, devices)) < 0.01] = np.nan
        lateral = rng.normal(0.0, 6.0, devices) + rng.normal(0.0, 1.0, (n, devices))
        kinds = [Activity.UPRIGHT] * 7 + [Activity.MOVING, Activity.WALKING, Activity.LYING]
        activity = np.broadcast_to(rng.choice(kinds, size=devices), (n, devices)).astype(np.int8)
        vigorous = rng.random((n, devices)) < 0.02
        flags, transitions = many.process(t, flexion, lateral, activity, vigorous)
        for d, det in enumerate(one):
            sl = np.s_[:, d : d + 1]
            ref, ref_tr = det.process(t[sl], flexion[sl], lateral[sl], activity[sl], vigorous[sl])
            np.testing.assert_array_equal(flags[:, d], ref[:, 0])
            got = [(tr.index, tr.started, tr.duration_s) for tr in transitions if tr.device == d]
            assert got == [(tr.index, tr.started, tr.duration_s) for tr in ref_tr]
            seen += len(got)
    assert seen > 50  # slouches started and ended many times


def test_a_rhythmic_motion_while_bent_over_is_no_walking_and_no_slouch() -> None:
    # Bent 80° for 8 s with a small 1.8 Hz bounce (scrubbing, a tremor): the
    # gait detector, which must work without any calibration, sees gait;
    # with the trunk that far from upright it is neither walking nor a
    # reason to stop the trunk from counting as still (and lying).
    fl = keyframes([(0, 0), (5, 0), (6, 80), (14, 80), (15, 0), (25, 0)])
    m = synthesize(
        25.0, FS, fl, linear_acc_g=gait_acc(1.8, 0.06, 0.02, 0.02, start_s=6.5, stop_s=13.5)
    )
    eng = engine(True, dwell_s=4.0)
    out = run(eng, m, BLOCK)
    assert kinds(out) == [PostureEventKind.CALIBRATED]
    bent = (out.t_s > 7.0) & (out.t_s < 13.5)
    assert not (out.activity[bent] == Activity.WALKING).any()
    assert (out.activity[(out.t_s > 10.0) & (out.t_s < 13.5)] == Activity.LYING).all()


@GYRO
def test_brief_bends_while_walking_raise_no_slouch(gyro: bool) -> None:
    # Walking upright; twice a 3 s bend to 70° (picking something up) with
    # walking in between: each bend is shorter than the dwell, so none counts.
    start, stop = 5.0, 45.0
    keys = [(0.0, 0.0), (10.0, 0.0)]
    for t in (12.0, 25.0):
        keys += [(t, 0.0), (t + 0.8, 70.0), (t + 2.2, 70.0), (t + 3.0, 0.0)]
    flex = keyframes([*keys, (50.0, 0.0)])
    m = synthesize(
        50.0,
        FS,
        lambda t: flex(t) + gait_sway(start_s=start, stop_s=stop)(t),
        linear_acc_g=gait_acc(start_s=start, stop_s=stop),
    )
    out = run(engine(gyro, dwell_s=4.0), m, BLOCK, gyro=gyro)
    assert kinds(out) == [PostureEventKind.CALIBRATED]
