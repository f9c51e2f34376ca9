"""Automatic calibration with the puck stuck on at any spin about the skin normal.

The rules (posture/calibration.py): a still pose near the nominal up
calibrates at once; otherwise walking tells the upright (provisional), a
still upright pose refines it, and a still pose just before the walk is
confirmed retroactively. Sequences are synthetic (tests/test_posture_synth.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from test_posture_engine import FS, kinds, run
from test_posture_synth import Motion, gait_acc, gait_sway, keyframes, mounting, synthesize

from posture import (
    Activity,
    Calibration,
    EngineConfig,
    PostureEngine,
    PostureEventKind,
    SlouchSettings,
)
from posture.calibration import CalibrationError, CalibrationSettings

SPINS = [float(s) for s in range(0, 360, 30)]
GYRO = pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
NOMINAL_CONE = (0.0, 30.0, 330.0)  # spins whose upright is within 35° of nominal (face 15°)


def walking_motion(
    keys: Sequence[tuple[float, float]],
    walk: tuple[float, float],
    duration_s: float,
    spin_deg: float,
    face_deg: float = 15.0,
    lateral: list[tuple[float, float]] | None = None,
    linear: object = None,
) -> Motion:
    """Flexion key frames, walking (gait bounce and sway) from walk[0] to walk[1]."""
    start, stop = walk
    flex = keyframes(keys)
    sway = gait_sway(start_s=start, stop_s=stop)
    gait = gait_acc(start_s=start, stop_s=stop)

    def acc(t: np.ndarray) -> np.ndarray:
        a = gait(t)
        return a if linear is None else a + linear(t)  # type: ignore[operator]

    return synthesize(
        duration_s,
        FS,
        lambda t: flex(t) + sway(t),
        keyframes(lateral) if lateral else gait_sway(0.9, 3.0, start_s=start, stop_s=stop),
        mount=mounting(spin_deg, face_deg),
        linear_acc_g=acc,
        gyr_bias_dps=(0.3, -0.2, 0.4),
        seed=int(spin_deg) + 1,
    )


def calibrations(out_events: tuple) -> list:
    return [e for e in out_events if e.kind == PostureEventKind.CALIBRATED]


def engine(gyro: bool, **kw: object) -> PostureEngine:
    return PostureEngine(EngineConfig(FS, gyro, **kw))  # type: ignore[arg-type]


# -- standing, then walking off -------------------------------------------------


@GYRO
@pytest.mark.parametrize("spin", SPINS)
def test_any_spin_is_calibrated_by_standing_then_walking(gyro: bool, spin: float) -> None:
    # Stands still 5 s, walks 5-17 s, stands again.
    m = walking_motion([(0, 0), (23, 0)], (5.0, 17.0), 23.0, spin)
    out = run(engine(gyro), m, gyro=gyro)
    (cal,) = calibrations(out.events)
    if spin in NOMINAL_CONE:
        assert cal.t_s < 5.0 and cal.details["gait_s"] == 0.0  # at once, as ever
    else:
        # The still stance right before the walk, confirmed once the gait
        # has shown which way is up: no provisional step needed.
        assert 5.0 + 4.0 < cal.t_s < 5.0 + 8.0
        assert cal.details["gait_s"] == pytest.approx(4.0)
        assert cal.details["provisional"] == 0.0 and cal.details["still_s"] > 0.0
        assert np.isnan(out.flexion_deg[out.t_s < cal.t_s]).all()
    # Standing after the walk (an accelerometer alone is shaken while walking).
    end = out.t_s > 18.5
    np.testing.assert_allclose(out.flexion_deg[end], m.flexion_deg[end], atol=1.0)
    np.testing.assert_allclose(out.lateral_deg[end], m.lateral_deg[end], atol=1.0)
    if gyro:
        after = out.t_s >= cal.t_s
        np.testing.assert_allclose(out.flexion_deg[after], m.flexion_deg[after], atol=1.5)
        np.testing.assert_allclose(out.lateral_deg[after], m.lateral_deg[after], atol=1.5)
    walking = (out.t_s > 8.0) & (out.t_s < 16.5)
    assert (out.activity[walking] == Activity.WALKING).mean() > 0.95


# -- sitting slumped, getting up, walking, standing -------------------------------


@GYRO
@pytest.mark.parametrize("spin", [60.0, 150.0, 200.0, 300.0])
def test_walking_gives_a_provisional_calibration_refined_when_standing_still(
    gyro: bool, spin: float
) -> None:
    # Sits slumped (25°) 8 s, gets up (leaning 45°), walks 12-24 s, stands.
    keys = [(0, 25), (8, 25), (9.5, 45), (11, 0), (30, 0)]
    m = walking_motion(keys, (12.0, 24.0), 30.0, spin)
    out = run(engine(gyro), m, gyro=gyro)
    first, second = calibrations(out.events)
    # Too long from the slumped sitting to the walk for it to count as upright.
    assert first.details["provisional"] == 1.0 and first.details["gait_s"] == pytest.approx(4.0)
    assert 12.0 + 4.0 < first.t_s < 12.0 + 8.0
    assert second.details["refined"] == 1.0 and second.details["provisional"] == 0.0
    assert 24.0 < second.t_s < 24.0 + 5.0
    # Provisional angles are usable at once (the walking trunk is upright here).
    if gyro:
        walking = (out.t_s > first.t_s) & (out.t_s < 24.0)
        np.testing.assert_allclose(out.flexion_deg[walking], m.flexion_deg[walking], atol=3.0)
    end = out.t_s > second.t_s
    np.testing.assert_allclose(out.flexion_deg[end], m.flexion_deg[end], atol=1.0)
    np.testing.assert_allclose(out.lateral_deg[end], m.lateral_deg[end], atol=1.0)


def test_a_stooped_walk_is_corrected_by_the_next_upright_stance() -> None:
    # Walks bent 15° forward (behind a walker), then stands up straight: the
    # provisional zero carries the stoop, the refined one does not.
    keys = [(0, 30), (4, 30), (6, 15), (20, 15), (21, 0), (30, 0)]
    m = walking_motion(keys, (6.0, 20.0), 30.0, 200.0)
    out = run(engine(True), m)
    first, second = calibrations(out.events)
    assert first.details["provisional"] == 1.0
    during = (out.t_s > first.t_s) & (out.t_s < 19.0)
    assert np.abs(out.flexion_deg[during]).max() < 4.0  # the stoop is its zero
    assert second.details["refined"] == 1.0
    end = out.t_s > second.t_s
    np.testing.assert_allclose(out.flexion_deg[end], 0.0, atol=1.0)


@GYRO
@pytest.mark.parametrize("spin", [90.0, 180.0, 270.0])
def test_a_slouch_is_detected_after_a_calibration_from_walking(gyro: bool, spin: float) -> None:
    keys = [(0, 0), (22, 0), (23.5, 35), (40, 35)]
    m = walking_motion(keys, (3.0, 15.0), 40.0, spin)
    out = run(engine(gyro, slouch=SlouchSettings(dwell_s=8.0)), m, gyro=gyro)
    assert kinds(out)[-1] == PostureEventKind.SLOUCH_STARTED
    crossing = float(m.t_s[np.argmax(m.flexion_deg > 25.0)])
    assert crossing + 8.0 - 1e-6 <= out.events[-1].t_s <= crossing + 8.0 + 0.2


# -- what never calibrates on its own ---------------------------------------------


@GYRO
@pytest.mark.parametrize("spin", [0.0, 45.0, 120.0, 200.0, 300.0])
@pytest.mark.parametrize(("flexion", "lateral"), [(0.0, 90.0), (0.0, -90.0), (88.0, 0.0)])
def test_lying_still_never_calibrates_whatever_the_spin(
    gyro: bool, spin: float, flexion: float, lateral: float
) -> None:
    # Lying on a side (the back vertical: upright with another spin, or lying)
    # or prone is ambiguous or not upright; nothing is captured, unless lying
    # on the side happens to look like the nominal upright (spin +-90°).
    m = synthesize(
        20.0, FS, keyframes([(0, flexion)]), keyframes([(0, lateral)]), mount=mounting(spin, 10.0)
    )
    up = m.acc_g.mean(axis=0) / np.linalg.norm(m.acc_g.mean(axis=0))
    if np.degrees(np.arccos(up[1])) < 40.0:
        pytest.skip("this side-lying pose is the nominal upright: one pose cannot tell")
    out = run(engine(gyro), m, gyro=gyro)
    assert calibrations(out.events) == []
    assert np.isnan(out.flexion_deg).all()


def test_auto_calibration_off_waits_for_a_request() -> None:
    m = walking_motion([(0, 0), (23, 0)], (5.0, 17.0), 23.0, 0.0)
    eng = engine(True, auto_calibrate=False)
    out = run(eng, m)
    assert calibrations(out.events) == [] and not eng.calibrated
    eng.request_calibration()
    tail = synthesize(6.0, FS, keyframes([(0, 10)]), t0_s=23.0)
    (cal,) = calibrations(run(eng, tail).events)
    assert cal.details["requested"] == 1.0


# -- before any calibration -------------------------------------------------------


@GYRO
@pytest.mark.parametrize("spin", [0.0, 100.0, 200.0])
def test_before_calibration_lying_on_the_back_or_front_is_recognised_at_any_spin(
    gyro: bool, spin: float
) -> None:
    m = synthesize(
        20.0, FS, keyframes([(0, 88.0 if spin == 100.0 else -88.0)]), mount=mounting(spin, 10.0)
    )
    out = run(engine(gyro), m, gyro=gyro)
    assert calibrations(out.events) == []
    assert (out.activity[out.t_s > 4.0] == Activity.LYING).all()


@GYRO
def test_before_calibration_a_rotated_puck_on_a_sitting_patient_is_not_lying(gyro: bool) -> None:
    # Upright with an upside-down puck: 160° from the nominal up, but the back
    # is vertical, so the patient is not taken as lying.
    m = synthesize(20.0, FS, keyframes([(0, 10.0)]), mount=mounting(180.0, 10.0))
    out = run(engine(gyro), m, gyro=gyro)
    assert calibrations(out.events) == []
    assert (out.activity[out.t_s > 1.0] == Activity.UPRIGHT).all()


def test_walking_is_detected_the_same_way_whatever_the_spin() -> None:
    # Gait detection uses only the wearable's own vertical: rotating the puck
    # changes nothing (before any calibration, too).
    onsets = []
    for spin in (0.0, 137.0, 251.0):
        m = walking_motion([(0, 40), (30, 40)], (6.0, 20.0), 30.0, spin)
        out = run(engine(True, auto_calibrate=False), m)
        walking = out.activity == Activity.WALKING
        onsets.append((out.t_s[np.argmax(walking)], walking.sum()))
    for onset, count in onsets[1:]:
        assert onset == pytest.approx(onsets[0][0], abs=0.1)
        assert count == pytest.approx(onsets[0][1], abs=10)


# -- falls with a rotated puck ---------------------------------------------------


def fall_motion(spin: float, walk: tuple[float, float] | None, impact_s: float) -> Motion:
    """Standing (walking during ``walk``), then a forward fall at ``impact_s``, lying after."""
    fall = [(0, 0), (impact_s - 0.5, 0), (impact_s + 0.05, 89.0), (impact_s + 10, 89.0)]

    def impact(t: np.ndarray) -> np.ndarray:
        z = -0.9 * np.exp(-(((t - impact_s + 0.45) / 0.15) ** 2))
        z += 4.0 * np.exp(-(((t - impact_s) / 0.02) ** 2))
        return np.stack([0 * t, 0 * t, z], axis=1)

    start, stop = walk if walk else (0.0, 0.0)
    return walking_motion(fall, (start, stop), impact_s + 10.0, spin, linear=impact)


@pytest.mark.parametrize("spin", [0.0, 200.0, 300.0])
def test_a_fall_after_walking_is_detected_whatever_the_spin(spin: float) -> None:
    m = fall_motion(spin, (4.0, 16.0), 20.0)
    out = run(engine(True), m)
    assert kinds(out) == [PostureEventKind.CALIBRATED, PostureEventKind.FALL_DETECTED]
    fall = out.events[-1]
    assert 20.0 < fall.t_s < 24.0
    assert fall.flexion_deg == pytest.approx(89.0, abs=5.0)


@pytest.mark.parametrize("spin", [200.0, 300.0])
def test_a_fall_before_any_calibration_is_still_detected(spin: float) -> None:
    # Standing still, never walked, puck far from nominal: no calibration
    # yet; the fall detector judges the impact against the trunk just before.
    m = fall_motion(spin, None, 12.0)
    out = run(engine(True), m)
    assert kinds(out) == [PostureEventKind.FALL_DETECTED]
    assert 12.0 < out.events[0].t_s < 16.0


# -- calibrations carried across engines ------------------------------------------


def test_a_provisional_calibration_carried_to_a_new_engine_is_still_refined() -> None:
    keys = [(0, 25), (8, 25), (9.5, 45), (11, 0), (30, 0)]
    m = walking_motion(keys, (12.0, 24.0), 30.0, 200.0)
    first = engine(True)
    head = m.t_s < 20.0
    run(
        first, Motion(*(x[head] for x in (m.t_s, m.acc_g, m.gyr_dps, m.flexion_deg, m.lateral_deg)))
    )
    cal = first.calibration
    assert cal is not None and cal.provisional
    # The gateway makes a new engine (the wearable changed its rate) and
    # hands the calibration over; the refinement still comes.
    second = engine(True)
    second.set_calibration(cal)
    tail = ~head
    out = run(
        second,
        Motion(*(x[tail] for x in (m.t_s, m.acc_g, m.gyr_dps, m.flexion_deg, m.lateral_deg))),
    )
    (refined,) = calibrations(out.events)
    assert refined.details["refined"] == 1.0
    assert second.calibration is not None and not second.calibration.provisional


def test_calibration_round_trips_the_provisional_flag() -> None:
    cal = Calibration.from_up((0.1, -0.9, 0.2), provisional=True, t_s=3.0)
    assert cal.provisional and not cal.requested and cal.t_s == 3.0
    assert not Calibration.from_up((0.0, 1.0, 0.0)).provisional


def test_calibration_frame_is_the_orthonormal_frame_of_its_up() -> None:
    """from_up (plain float arithmetic) against the frame written with NumPy:
    up normalised, forward = -z levelled, right = forward x up."""
    rng = np.random.default_rng(5)
    checked = 0
    for v in rng.normal(0.0, 1.0, (200, 3)) * rng.uniform(0.1, 10.0, (200, 1)):
        up = v / np.linalg.norm(v)
        level = math.sqrt(1.0 - up[2] ** 2)  # |forward| before it is made unit
        if level < 0.5 - 1e-9:  # -z within 30° of up
            with pytest.raises(CalibrationError):
                Calibration.from_up(v)
            continue
        forward = np.array([0.0, 0.0, -1.0]) + up[2] * up
        forward /= np.linalg.norm(forward)
        want = np.array([forward, np.cross(forward, up), up])
        np.testing.assert_allclose(Calibration.from_up(v).matrix, want, rtol=0, atol=1e-15)
        checked += 1
    assert checked > 100
    for bad in ((0.0, 0.0, 0.0), (math.nan, 1.0, 0.0), (0.0, 0.1, 1.0)):
        with pytest.raises(CalibrationError):
            Calibration.from_up(bad)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_face_tilt_deg": 70.0}, "max_face_tilt_deg"),
        ({"gait_s": 0.0}, "gait_s"),
        ({"max_refine_deg": 95.0}, "max_refine_deg"),
        ({"pre_walk_gap_s": -1.0}, "pre_walk_gap_s"),
    ],
)
def test_calibration_settings_are_validated(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CalibrationSettings(**kwargs)


def _walks(up_a: np.ndarray, up_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """A device's capture inputs (n = 400 samples, one device): a 2 s walk
    along ``up_a`` (too short to calibrate), 1 s of fidgeting, then a 5 s
    walk along ``up_b`` from sample 150 on (long enough to calibrate)."""
    n = 400
    t = (np.arange(n) / FS)[:, None]
    acc = np.empty((n, 3, 1))
    acc[:100, :, 0] = up_a
    acc[100:150, :, 0] = up_b
    acc[150:, :, 0] = up_b
    walking = np.zeros((n, 1), dtype=bool)
    walking[:100] = True
    walking[150:] = True
    dev2 = np.full((n, 1), 0.05)  # moving: never still
    return t, acc, acc.copy(), dev2, walking, walking.copy()


@pytest.mark.parametrize("kernel", ["numpy", "compiled"])
def test_a_walk_starting_at_a_block_boundary_calibrates_as_in_one_block(kernel: str) -> None:
    """The calibration from walking uses that walk's direction alone, however
    the samples were cut into blocks: an earlier, shorter walk's sum must not
    leak into a walk that starts exactly at a block's first sample."""
    from posture.capture import CalibrationCapture
    from posture.kernels import compiled_available

    if kernel == "compiled" and not compiled_available():
        pytest.skip("numba does not import here")
    tilt = np.radians(40.0)
    up_a = np.array([np.sin(tilt), np.cos(tilt), 0.0])  # the short walk, leaning
    up_b = np.array([0.0, 1.0, 0.0])  # the long walk, upright
    inputs = _walks(up_a, up_b)

    def captures(cuts: Sequence[int]) -> list:
        capture = CalibrationCapture(
            CalibrationSettings(), FS, (0.0, 1.0, 0.0), auto=True, kernel=kernel
        )
        found = []
        for a, b in zip([0, *cuts], [*cuts, 400], strict=True):
            t, acc, acc_lp, dev2, walking, gait = (x[a:b] for x in inputs)
            found += capture.process(t, acc, None, acc_lp, dev2, walking, gait)
        return found

    whole = captures([])
    assert [(c.index, c.calibration.provisional) for c in whole] == [(349, True)]
    np.testing.assert_allclose(whole[0].calibration.up_sensor, up_b, atol=1e-12)
    for cuts in ([150], [100, 150], [150, 300]):
        split = captures(cuts)
        assert [c.calibration.t_s for c in split] == [whole[0].calibration.t_s], cuts
        np.testing.assert_allclose(
            split[0].calibration.up_sensor, whole[0].calibration.up_sensor, atol=1e-12
        )
