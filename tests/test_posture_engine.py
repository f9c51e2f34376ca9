"""The posture engine end to end: angles, calibration, streaming, bad input."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_posture_synth import (
    Motion,
    constant,
    gait_acc,
    gait_sway,
    keyframes,
    mounting,
    synthesize,
)

from common.errors import ConfigError, PostureMonitorError
from posture import (
    Activity,
    Calibration,
    EngineBlock,
    EngineConfig,
    OrientationSettings,
    PostureEngine,
    PostureEventKind,
    SampleError,
    SlouchSettings,
)
from posture.activity import ActivitySettings
from posture.calibration import CalibrationSettings

FS = 50.0


def run(engine: PostureEngine, m: Motion, block: int = 10, *, gyro: bool = True) -> EngineBlock:
    """Feed ``m`` in blocks of ``block`` samples; concatenate the outputs."""
    outs = [
        engine.process(
            m.t_s[i : i + block], m.acc_g[i : i + block], m.gyr_dps[i : i + block] if gyro else None
        )
        for i in range(0, m.t_s.size, block)
    ]
    return concat(outs)


def concat(outs: list[EngineBlock]) -> EngineBlock:
    return EngineBlock(
        t_s=np.concatenate([o.t_s for o in outs]),
        flexion_deg=np.concatenate([o.flexion_deg for o in outs]),
        lateral_deg=np.concatenate([o.lateral_deg for o in outs]),
        activity=np.concatenate([o.activity for o in outs]),
        slouching=np.concatenate([o.slouching for o in outs]),
        events=tuple(e for o in outs for e in o.events),
    )


def kinds(block: EngineBlock) -> list[PostureEventKind]:
    return [e.kind for e in block.events]


# -- known angles, any mounting ----------------------------------------------

POSES = [(0.0, 0.0), (30.0, 0.0), (0.0, 25.0), (45.0, -15.0), (-20.0, 10.0), (70.0, 5.0)]


def pose_motion(mount_rot_deg: float, face_tilt_deg: float, seed: int) -> tuple[Motion, list]:
    """Upright 6 s, then each pose held 6 s (1.5 s transitions); returns the
    motion and, per pose, the sample indices of the last 2 s of its hold."""
    fl_keys, la_keys, windows = [(0.0, 0.0), (6.0, 0.0)], [(0.0, 0.0), (6.0, 0.0)], []
    t = 6.0
    for flex, lat in POSES:
        fl_keys += [(t + 1.5, flex), (t + 6.0, flex)]
        la_keys += [(t + 1.5, lat), (t + 6.0, lat)]
        windows.append((round((t + 4.0) * FS), round((t + 6.0) * FS)))
        t += 6.0
    m = synthesize(
        t,
        FS,
        keyframes(fl_keys),
        keyframes(la_keys),
        mount=mounting(mount_rot_deg, face_tilt_deg),
        gyr_bias_dps=(0.4, -0.3, 0.2),
        seed=seed,
    )
    return m, windows


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
@pytest.mark.parametrize(
    ("mount_rot_deg", "face_tilt_deg"),
    [(0.0, 0.0), (90.0, 15.0), (180.0, -30.0), (250.0, 30.0), (335.0, -10.0)],
)
def test_known_angles_within_half_degree_for_any_mounting(
    gyro: bool, mount_rot_deg: float, face_tilt_deg: float
) -> None:
    m, windows = pose_motion(mount_rot_deg, face_tilt_deg, seed=int(mount_rot_deg))
    engine = PostureEngine(EngineConfig(sample_rate_hz=FS, has_gyro=gyro))
    engine.request_calibration()  # a rotated puck is outside the auto-calibration cone
    out = run(engine, m, gyro=gyro)
    assert kinds(out)[0] == PostureEventKind.CALIBRATED
    for (flex, lat), (a, b) in zip(POSES, windows, strict=True):
        np.testing.assert_allclose(out.flexion_deg[a:b], flex, atol=0.5)
        np.testing.assert_allclose(out.lateral_deg[a:b], lat, atol=0.5)


def test_same_posture_same_angles_whatever_the_mounting() -> None:
    results = []
    for rot, tilt in [(0.0, 0.0), (123.0, 20.0), (301.0, -25.0)]:
        m, _ = pose_motion(rot, tilt, seed=7)  # same noise for every mounting
        engine = PostureEngine(EngineConfig(sample_rate_hz=FS, has_gyro=True))
        engine.request_calibration()
        results.append(run(engine, m))
    start = round(8.0 * FS)  # after calibration
    for other in results[1:]:
        np.testing.assert_allclose(
            other.flexion_deg[start:], results[0].flexion_deg[start:], atol=0.3
        )
        np.testing.assert_allclose(
            other.lateral_deg[start:], results[0].lateral_deg[start:], atol=0.3
        )


# -- calibration -----------------------------------------------------------


def test_angles_are_nan_until_auto_calibration_after_a_still_upright_period() -> None:
    m = synthesize(8.0, FS, constant(0.0), mount=mounting(20.0, 10.0))
    out = run(PostureEngine(EngineConfig(sample_rate_hz=FS, has_gyro=True)), m)
    (event,) = out.events
    assert event.kind == PostureEventKind.CALIBRATED
    assert 2.4 <= event.t_s <= 3.5
    assert event.details["requested"] == 0.0
    assert event.details["tilt_from_nominal_deg"] == pytest.approx(22.2, abs=1.0)
    i = int(np.flatnonzero(out.t_s == event.t_s)[0])
    assert np.isnan(out.flexion_deg[:i]).all() and np.isnan(out.lateral_deg[:i]).all()
    assert np.abs(out.flexion_deg[i:]).max() < 0.5
    # Activity is known before calibration (nominal up): still and upright.
    assert (out.activity[round(FS) : i] == Activity.UPRIGHT).all()


@pytest.mark.parametrize(("flexion", "lateral"), [(80.0, 0.0), (0.0, -90.0), (45.0, 0.0)])
def test_auto_calibration_never_takes_a_lying_or_bent_pose_as_upright(
    flexion: float, lateral: float
) -> None:
    # Still in that pose for 10 s, then sits up straight and holds still.
    m = synthesize(
        20.0,
        FS,
        keyframes([(0.0, flexion), (10.0, flexion), (12.0, 0.0), (20.0, 0.0)]),
        keyframes([(0.0, lateral), (10.0, lateral), (12.0, 0.0), (20.0, 0.0)]),
    )
    engine = PostureEngine(EngineConfig(sample_rate_hz=FS, has_gyro=False))
    out = run(engine, m, gyro=False)
    (event,) = out.events
    assert event.kind == PostureEventKind.CALIBRATED
    assert event.t_s > 12.0
    assert np.abs(out.flexion_deg[-50:]).max() < 0.5


def test_requested_calibration_uses_only_the_still_period_after_the_request() -> None:
    # Auto-calibrates upright, then the patient leans 10° forward and the
    # physiotherapist recalibrates there: 10° becomes the new zero.
    m = synthesize(20.0, FS, keyframes([(0.0, 0.0), (6.0, 0.0), (7.0, 10.0), (20.0, 10.0)]))
    engine = PostureEngine(EngineConfig(sample_rate_hz=FS, has_gyro=True))
    first = run(engine, m_slice(m, 0.0, 8.0))
    assert kinds(first) == [PostureEventKind.CALIBRATED]
    assert first.flexion_deg[-1] == pytest.approx(10.0, abs=0.3)
    engine.request_calibration()
    second = run(engine, m_slice(m, 8.0, 20.0))
    (event,) = second.events
    assert event.kind == PostureEventKind.CALIBRATED
    assert event.details["requested"] == 1.0
    assert event.t_s == pytest.approx(8.0 + 2.5, abs=0.1)
    assert abs(second.flexion_deg[-1]) < 0.3
    assert engine.calibration is not None and engine.calibration.requested


def test_a_stored_calibration_can_be_restored() -> None:
    m = synthesize(6.0, FS, constant(20.0), mount=mounting(40.0, 0.0))
    stored = Calibration.from_up(np.asarray(mounting(40.0, 0.0)).T @ [0.0, 0.0, 1.0])
    engine = PostureEngine(EngineConfig(sample_rate_hz=FS, has_gyro=True))
    engine.set_calibration(stored)
    out = run(engine, m)
    assert engine.calibrated and out.events == ()
    np.testing.assert_allclose(out.flexion_deg, 20.0, atol=0.3)


def m_slice(m: Motion, start_s: float, stop_s: float) -> Motion:
    sel = (m.t_s >= start_s - 1e-9) & (m.t_s < stop_s - 1e-9)
    return Motion(m.t_s[sel], m.acc_g[sel], m.gyr_dps[sel], m.flexion_deg[sel], m.lateral_deg[sel])


# -- the same output for any split of the stream ----------------------------


def busy_stream() -> Motion:
    """45 s with calibration, a slouch, walking, a fall, a gap and a clock reset."""
    fl = keyframes([(0, 0), (4, 0), (5, 35), (12, 35), (13, 0), (28, 0), (28.8, 89.9), (45, 89.9)])
    lat = keyframes([(0, 0), (14, 0), (15, -25), (17, -25), (18, 0), (45, 0)])
    sway = gait_sway(start_s=19, stop_s=27)

    def impact(t: np.ndarray) -> np.ndarray:
        z = -0.9 * np.exp(-(((t - 28.4) / 0.15) ** 2)) + 4.0 * np.exp(-(((t - 28.85) / 0.02) ** 2))
        return np.stack([0 * t, 0 * t, z], axis=1) + gait_acc(start_s=19, stop_s=27)(t)

    m = synthesize(
        45.0,
        FS,
        lambda t: fl(t) + sway(t),
        lat,
        linear_acc_g=impact,
        gyr_bias_dps=(0.2, 0.1, -0.3),
        seed=3,
    )
    keep = np.ones(m.t_s.size, dtype=bool)
    keep[round(16 * FS) : round(16.5 * FS)] = False  # 0.5 s of lost packets
    t = m.t_s.copy()
    t[round(35 * FS) :] -= 30.0  # the wearable rebooted its clock
    return Motion(t[keep], m.acc_g[keep], m.gyr_dps[keep], m.flexion_deg[keep], m.lateral_deg[keep])


BUSY = busy_stream()
BUSY_CONFIG = EngineConfig(sample_rate_hz=FS, has_gyro=True, slouch=SlouchSettings(dwell_s=3.0))


def run_split(cuts: list[int], gyro: bool) -> EngineBlock:
    engine = PostureEngine(EngineConfig(FS, gyro, slouch=SlouchSettings(dwell_s=3.0)))
    bounds = [0, *sorted(set(cuts)), BUSY.t_s.size]
    outs = [
        engine.process(BUSY.t_s[a:b], BUSY.acc_g[a:b], BUSY.gyr_dps[a:b] if gyro else None)
        for a, b in itertools.pairwise(bounds)
    ]
    return concat(outs)


WHOLE = {gyro: run_split([], gyro) for gyro in (True, False)}


def test_busy_stream_has_every_kind_of_event() -> None:
    # The property test below is only worth something if the stream
    # exercises calibration, slouch start/end and a fall.
    for out in WHOLE.values():
        got = set(kinds(out))
        assert {
            PostureEventKind.CALIBRATED,
            PostureEventKind.SLOUCH_STARTED,
            PostureEventKind.SLOUCH_ENDED,
            PostureEventKind.FALL_DETECTED,
        } <= got
        assert (out.activity == Activity.WALKING).any()
        assert (out.activity == Activity.LYING).any()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=BUSY.t_s.size - 1), max_size=60),
    small=st.integers(min_value=1, max_value=12),
    gyro=st.booleans(),
)
def test_output_is_the_same_for_any_split_of_the_stream(
    cuts: list[int], small: int, gyro: bool
) -> None:
    # Random cut points plus a run of tiny blocks somewhere.
    start = cuts[0] if cuts else 100
    cuts = cuts + list(range(start, min(start + 40 * small, BUSY.t_s.size - 1), small))
    out = run_split(cuts, gyro)
    ref = WHOLE[gyro]
    np.testing.assert_array_equal(out.t_s, ref.t_s)
    np.testing.assert_allclose(out.flexion_deg, ref.flexion_deg, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(out.lateral_deg, ref.lateral_deg, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(out.activity, ref.activity)
    np.testing.assert_array_equal(out.slouching, ref.slouching)
    assert kinds(out) == kinds(ref)
    for a, b in zip(out.events, ref.events, strict=True):
        assert a.t_s == b.t_s
        assert a.flexion_deg == pytest.approx(b.flexion_deg, abs=1e-9, nan_ok=True)
        assert a.lateral_deg == pytest.approx(b.lateral_deg, abs=1e-9, nan_ok=True)
        assert a.details == pytest.approx(b.details, abs=1e-9)


# -- falls, gaps, clock resets ------------------------------------------------


def test_fall_is_reported_with_the_angles_of_the_fallen_trunk() -> None:
    events = [e for e in WHOLE[True].events if e.kind == PostureEventKind.FALL_DETECTED]
    (fall,) = events
    assert 28.85 < fall.t_s < 28.85 + 4.0
    assert fall.flexion_deg == pytest.approx(89.9, abs=3.0)
    assert abs(fall.lateral_deg) < 3.0
    assert fall.details["peak_acc_g"] > 3.0


def test_gap_and_clock_reset_restart_the_filters_but_keep_the_calibration() -> None:
    engine = PostureEngine(BUSY_CONFIG)
    run(engine, BUSY)
    assert engine.stats.gaps == 1
    assert engine.stats.clock_resets == 1
    assert engine.stats.samples == BUSY.t_s.size
    out = WHOLE[True]
    after_reset = int(np.flatnonzero(np.diff(out.t_s) < 0)[0]) + 1
    # Right after the reset the filter is settling: activity unknown, but
    # the angles keep coming from the old calibration (lying prone: ~90°).
    assert out.activity[after_reset] == Activity.UNKNOWN
    assert kinds(out).count(PostureEventKind.CALIBRATED) == 1
    np.testing.assert_allclose(out.flexion_deg[after_reset + 50 :], 89.9, atol=2.0)


# -- the accelerometer-only path ---------------------------------------------


def test_acc_only_wearable_gets_angles_activity_and_slouch() -> None:
    out = WHOLE[False]
    before_reset = np.arange(out.t_s.size) < round(30.0 * FS)
    sel = (out.t_s > 8.0) & (out.t_s < 12.0) & before_reset
    np.testing.assert_allclose(out.flexion_deg[sel], 35.0, atol=0.5)
    assert kinds(out).count(PostureEventKind.SLOUCH_STARTED) >= 1


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("t_s", "acc", "gyr", "message"),
    [
        (np.zeros((3, 1)), np.zeros((3, 3)), np.zeros((3, 3)), "t_s must have shape"),
        (np.arange(3.0), np.zeros((3, 2)), np.zeros((3, 3)), "acc_g must have shape"),
        (np.arange(3.0), np.zeros((3, 3)), np.zeros((2, 3)), "gyr_dps must have shape"),
        (np.arange(3.0), np.zeros((3, 3)), None, "configured with a gyroscope"),
        (np.arange(3.0), np.full((3, 3), np.nan), np.zeros((3, 3)), "finite"),
        (np.array([0.0, np.inf, 1.0]), np.zeros((3, 3)), np.zeros((3, 3)), "finite"),
        (["a", "b"], np.zeros((2, 3)), np.zeros((2, 3)), "numeric"),
    ],
)
def test_malformed_blocks_raise_a_clear_sample_error(
    t_s: object, acc: np.ndarray, gyr: np.ndarray | None, message: str
) -> None:
    engine = PostureEngine(EngineConfig(sample_rate_hz=FS, has_gyro=True))
    with pytest.raises(SampleError, match=message) as info:
        engine.process(t_s, acc, gyr)  # type: ignore[arg-type]
    assert isinstance(info.value, PostureMonitorError) and isinstance(info.value, ValueError)
    # The engine still works afterwards.
    m = synthesize(1.0, FS, constant(0.0))
    assert run(engine, m).t_s.size == m.t_s.size


def test_gyro_data_for_an_acc_only_engine_is_an_error() -> None:
    engine = PostureEngine(EngineConfig(sample_rate_hz=FS, has_gyro=False))
    with pytest.raises(SampleError, match="without a gyroscope"):
        engine.process(np.arange(2.0), np.zeros((2, 3)), np.zeros((2, 3)))


def test_inputs_are_not_mutated_and_empty_blocks_are_fine() -> None:
    m = synthesize(4.0, FS, constant(10.0))
    copies = (m.t_s.copy(), m.acc_g.copy(), m.gyr_dps.copy())
    engine = PostureEngine(EngineConfig(sample_rate_hz=FS, has_gyro=True))
    out = engine.process(m.t_s, m.acc_g, m.gyr_dps)
    for before, after in zip(copies, (m.t_s, m.acc_g, m.gyr_dps), strict=True):
        np.testing.assert_array_equal(before, after)
    assert out.t_s is not m.t_s
    empty = engine.process(np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3)))
    assert empty.t_s.size == 0 and empty.activity.dtype == np.int8 and empty.events == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate_hz": 0.0, "has_gyro": True},
        {"sample_rate_hz": math.nan, "has_gyro": True},
        {"sample_rate_hz": 50.0, "has_gyro": "yes"},
        {"sample_rate_hz": 50.0, "has_gyro": True, "nominal_up_sensor": (0.0, 0.0, 0.0)},
        {"sample_rate_hz": 50.0, "has_gyro": True, "slouch": {"threshold_deg": 20}},
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="EngineConfig"):
        EngineConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold_deg": -1.0},
        {"dwell_s": 0.0},
        {"hysteresis_deg": 30.0},
        {"lateral_threshold_deg": math.inf},
    ],
)
def test_bad_slouch_settings_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="SlouchSettings"):
        SlouchSettings(**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (OrientationSettings, {"tau_acc_s": 0.0}, "tau_acc_s"),
        (OrientationSettings, {"gyr_delay_s": 1.0}, "gyr_delay_s"),
        (ActivitySettings, {"walk_min_rms_g": -0.1}, "walk_min_rms_g"),
        (ActivitySettings, {"gait_band_hz": (3.0, 1.0)}, "gait_band_hz"),
        (CalibrationSettings, {"still_s": math.nan}, "still_s"),
    ],
)
def test_other_settings_reject_bad_values_naming_the_field(
    cls: type, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)
