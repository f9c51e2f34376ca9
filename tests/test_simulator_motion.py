"""Physics of the simulated wearable: what a back-worn IMU would measure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from device_gateway.protocol import ACC_LSB_PER_G, GYR_LSB_PER_DPS, AccRange
from simulator import (
    Mounting,
    Patient,
    SensorErrors,
    SimulatedWearable,
    WearableConfig,
    inclinations_deg,
    posture_rotation,
)
from simulator.specs import (
    ActivitySpec,
    BendSpec,
    FallSpec,
    GetUpSpec,
    LeanSpec,
    LieDownSpec,
    SitDownSpec,
    SitSpec,
    SlouchSpec,
    StandSpec,
    WalkSpec,
)

IDEAL = SensorErrors.none()


def wearable(
    *activities: ActivitySpec,
    rate: int = 100,
    mounting: Mounting | None = None,
    errors: SensorErrors = IDEAL,
    model: str = "acc_gyro",
    acc_range: int = 8,
    seed: int = 3,
) -> SimulatedWearable:
    config = WearableConfig(
        address="C0:FF:EE:00:00:01",
        sample_rate_hz=rate,
        mounting=mounting or Mounting(),
        errors=errors,
        model=model,
        acc_range_g=acc_range,
    )
    return SimulatedWearable(Patient("p", config, tuple(activities)), index=0, seed=seed)


def test_posture_rotation_gives_back_its_inclinations() -> None:
    for flexion, lateral in [(0, 0), (35, 0), (0, -20), (30, 15), (-10, 25), (89, 0), (0, 89)]:
        for heading in (0.0, 2.0):
            f, lat = inclinations_deg(posture_rotation(flexion, lateral, heading))
            assert f[0] == pytest.approx(flexion, abs=1e-9)
            assert lat[0] == pytest.approx(lateral, abs=1e-9)
    # Past 90° the trunk's axis points below the horizon: flexion still reads
    # right, the frontal-plane inclination flips to 180° (as for any inclinometer).
    f, lat = inclinations_deg(posture_rotation(120, 0))
    assert f[0] == pytest.approx(120.0) and abs(lat[0]) == pytest.approx(180.0)


@pytest.mark.parametrize(
    ("activities", "t_s", "expected"),
    [
        ((StandSpec(at_s=0),), 5.0, (0, 1, 0)),  # upright: +y up
        ((StandSpec(at_s=0), BendSpec(at_s=1, flexion_deg=90, hold_s=3)), 3.5, (0, 0, 1)),
        ((SitSpec(at_s=0), LieDownSpec(at_s=1, position="supine")), 8.0, (0, 0, -1)),
        ((SitSpec(at_s=0), LieDownSpec(at_s=1, position="prone")), 8.0, (0, 0, 1)),
        ((SitSpec(at_s=0), LieDownSpec(at_s=1, position="right")), 8.0, (-1, 0, 0)),
        ((SitSpec(at_s=0), LieDownSpec(at_s=1, position="left")), 8.0, (1, 0, 0)),
    ],
)
def test_mounting_convention(
    activities: tuple[ActivitySpec, ...], t_s: float, expected: tuple[int, int, int]
) -> None:
    """Nominal mounting: x to the patient's right, y to the head, z out of the back."""
    block = wearable(*activities).render(t_s, t_s + 0.5)
    np.testing.assert_allclose(block.acc_g.mean(axis=0), expected, atol=0.02)


@pytest.mark.parametrize("spin_deg", [0.0, 45.0, 170.0, 300.0])
def test_static_postures_measure_one_g_whatever_the_mounting(spin_deg: float) -> None:
    w = wearable(
        SitSpec(at_s=0),
        StandSpec(at_s=10),
        LieDownSpec(at_s=20, position="left"),
        mounting=Mounting(spin_deg=spin_deg, tilt_deg=15.0, yaw_deg=5.0),
    )
    truth = w.truth(np.arange(0.0, 40.0, 0.01))
    block = w.render(0.0, 40.0)
    still = np.isin(truth.activity, ["sit", "stand", "lying"])
    magnitude = np.linalg.norm(block.acc_g[still], axis=1)
    assert still.sum() > 2500
    np.testing.assert_allclose(magnitude, 1.0, atol=0.004)  # quantisation + breathing sway


def _calibrated_angles(acc_g: np.ndarray, up_index: slice) -> tuple[np.ndarray, np.ndarray]:
    """Inclinations from the accelerometer alone, calibrated as docs/protocol.md says."""
    up = acc_g[up_index].mean(axis=0)
    up /= np.linalg.norm(up)
    forward = -np.array([0.0, 0.0, 1.0]) + up[2] * up
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    v = acc_g / np.linalg.norm(acc_g, axis=1, keepdims=True)
    flexion = np.degrees(np.arctan2(-(v @ forward), v @ up))
    lateral = np.degrees(np.arctan2(-(v @ right), v @ up))
    return flexion, lateral


def test_accelerometer_angles_after_calibration_match_the_truth() -> None:
    """Spin and face tilt are removed by calibration; the truth's angles follow."""
    w = wearable(
        SitSpec(at_s=0),
        SlouchSpec(at_s=5, flexion_deg=35, onset_s=2, duration_s=5),
        LeanSpec(at_s=16, lateral_deg=20, onset_s=2, duration_s=4),
        LeanSpec(at_s=25, lateral_deg=-15, flexion_deg=20, onset_s=2),
        rate=50,
        mounting=Mounting(spin_deg=233.0, tilt_deg=18.0),
    )
    block = w.render(0.0, 32.0)
    truth = w.truth(block.t_s)
    flexion, lateral = _calibrated_angles(block.acc_g, slice(50, 200))
    for t0, t1, expected_flexion, expected_lateral in [
        (8, 11, 35, 0),
        (19, 21, 0, 20),
        (28, 32, 20, -15),
    ]:
        hold = (block.t_s > t0) & (block.t_s < t1)
        assert np.median(truth.flexion_deg[hold]) == pytest.approx(expected_flexion, abs=1.0)
        assert np.median(truth.lateral_deg[hold]) == pytest.approx(expected_lateral, abs=1.0)
        np.testing.assert_allclose(flexion[hold], truth.flexion_deg[hold], atol=1.0)
        np.testing.assert_allclose(lateral[hold], truth.lateral_deg[hold], atol=1.0)


def test_integrating_the_gyroscope_reproduces_the_orientation() -> None:
    """Quantised gyro samples, integrated, track the true sensor orientation,
    and predict the gravity direction the accelerometer sees."""
    w = wearable(
        StandSpec(at_s=0),
        BendSpec(at_s=2, flexion_deg=70),
        WalkSpec(at_s=8, duration_s=8),
        SitSpec(at_s=19),
        LeanSpec(at_s=25, lateral_deg=25, onset_s=1.5, duration_s=2),
        LieDownSpec(at_s=32, position="right"),
        GetUpSpec(at_s=40, to="stand"),
        rate=100,
        mounting=Mounting(spin_deg=75.0, tilt_deg=-8.0),
    )
    block = w.render(0.0, 50.0)
    assert block.gyr_dps is not None
    dt = 0.01
    q = w.sensor.orientation(np.array([block.t_s[0] - dt / 2]))[0]
    worst_deg = 0.0
    for k in range(block.t_s.shape[0]):
        q = q * Rotation.from_rotvec(np.radians(block.gyr_dps[k]) * dt)
        if k % 100 == 99:
            true = w.sensor.orientation(np.array([block.t_s[k] + dt / 2]))[0]
            worst_deg = max(worst_deg, math.degrees((q.inv() * true).magnitude()))
            # Gravity predicted from the integrated orientation vs. the accelerometer.
            if w.truth(block.t_s[k : k + 1]).activity[0] in ("stand", "sit", "lying"):
                predicted = q.inv().apply([0.0, 0.0, 1.0])
                measured = block.acc_g[k] / np.linalg.norm(block.acc_g[k])
                assert math.degrees(math.acos(min(1.0, predicted @ measured))) < 2.0
    assert worst_deg < 1.0  # 50 s of motion, quantised at 0.061 °/s


def test_gyro_equals_the_quaternion_derivative() -> None:
    w = wearable(StandSpec(at_s=0), WalkSpec(at_s=1, duration_s=6), rate=200)
    block = w.render(2.0, 6.0)
    assert block.gyr_dps is not None
    h = 1e-4
    q0, q1 = w.sensor.orientation(block.t_s - h), w.sensor.orientation(block.t_s + h)
    instantaneous = np.degrees((q0.inv() * q1).as_rotvec() / (2 * h))  # 2 q^-1 dq/dt
    assert np.abs(instantaneous).max() > 10.0  # walking turns the trunk noticeably
    np.testing.assert_allclose(block.gyr_dps, instantaneous, atol=0.3)


def test_accelerometer_only_wearables_send_no_gyro() -> None:
    block = wearable(SitSpec(at_s=0), model="acc_only").render(0.0, 1.0)
    assert block.gyr_dps is None and block.acc_g.shape == (100, 3)


def test_sensor_errors_noise_bias_and_warm_up() -> None:
    errors = SensorErrors()  # the defaults of a typical MEMS IMU
    w = wearable(SitSpec(at_s=0), errors=errors, rate=50)
    block = w.render(10.0, 70.0)
    ideal = wearable(SitSpec(at_s=0), rate=50).render(10.0, 70.0)
    assert block.gyr_dps is not None and ideal.gyr_dps is not None
    acc_noise = block.acc_g - ideal.acc_g
    expected_std = errors.acc_noise_ug_rthz * 1e-6 * math.sqrt(25.0)
    assert np.std(acc_noise, axis=0) == pytest.approx([expected_std] * 3, rel=0.35, abs=3e-4)
    gyr_bias = (block.gyr_dps - ideal.gyr_dps).mean(axis=0)
    assert np.abs(gyr_bias).max() > 0.05  # a gyro bias the engine must remove
    assert np.abs(gyr_bias).max() < 5.0
    # Different seeds: different sensors.
    other = wearable(SitSpec(at_s=0), errors=errors, rate=50, seed=4).render(10.0, 70.0)
    assert not np.array_equal(other.acc_g, block.acc_g)


@pytest.mark.parametrize(
    ("before", "direction", "impact_g", "rate"),
    [
        (WalkSpec(at_s=2), "forward", 5.0, 200),
        (StandSpec(at_s=2), "backward", 6.5, 200),
        (SitSpec(at_s=2), "left", 4.0, 200),
        (WalkSpec(at_s=2), "right", 7.5, 200),
        (StandSpec(at_s=2), "forward", 5.0, 50),
    ],
)
def test_falls_have_realistic_descent_impact_and_lying(
    before: ActivitySpec, direction: str, impact_g: float, rate: int
) -> None:
    start = SitSpec(at_s=0) if isinstance(before, SitSpec) else StandSpec(at_s=0)
    w = wearable(
        start,
        before,
        FallSpec(at_s=12, direction=direction, impact_g=impact_g),
        rate=rate,
        acc_range=16,
    )
    (fall,) = w.trajectory.falls
    block = w.render(10.0, 20.0)
    truth = w.truth(block.t_s)
    magnitude = np.linalg.norm(block.acc_g, axis=1)
    peak = int(np.argmax(magnitude))
    if rate == 200:
        assert 3.0 <= magnitude[peak] <= 8.0
        assert magnitude[peak] == pytest.approx(impact_g, rel=0.1)
        above = block.t_s[magnitude > (magnitude[peak] + 1.0) / 2.0]
        assert above.max() - above.min() < 0.05  # a spike, shorter than 50 ms
    else:
        assert 2.5 <= magnitude[peak] <= impact_g  # the 50 Hz filter blunts it
    assert abs(block.t_s[peak] - fall.impact_s) < 0.06
    descent = (block.t_s > fall.onset_s) & (block.t_s < fall.impact_s)
    assert magnitude[descent].min() < 0.8  # partial free fall before the impact
    lying = block.t_s > fall.impact_s + 2.0
    assert set(truth.activity[lying]) == {"lying"}
    angle = {
        "forward": truth.flexion_deg,
        "backward": -truth.flexion_deg,
        "right": truth.lateral_deg,
        "left": -truth.lateral_deg,
    }[direction]
    assert np.all(np.abs(angle[lying] - 90.0) < 25.0)
    after = block.acc_g[lying]
    assert np.ptp(after, axis=0).max() < 0.1  # lies nearly still, small motions only


def test_impacts_beyond_the_range_clip_instead_of_wrapping() -> None:
    w = wearable(StandSpec(at_s=0), FallSpec(at_s=3, impact_g=11.0), rate=200, acc_range=8)
    acc_g = w.render(2.0, 5.0).acc_g
    counts = np.rint(acc_g * ACC_LSB_PER_G[AccRange.G8])
    assert counts.max() == 32767 or counts.min() == -32768  # saturated at full scale
    peak = int(np.argmax(np.linalg.norm(acc_g, axis=1)))
    assert np.linalg.norm(acc_g[peak]) >= 7.9  # no wrap-around to small or flipped values


def test_walking_gait_and_sway() -> None:
    w = wearable(StandSpec(at_s=0), WalkSpec(at_s=2, step_hz=1.8), rate=50, seed=11)
    block = w.render(5.0, 45.0)
    truth = w.truth(block.t_s)
    assert set(truth.activity) == {"walk"}
    # Vertical acceleration in the world frame (orientation from the truth).
    r_ws = w.sensor.orientation(block.t_s)
    vertical = r_ws.apply(block.acc_g)[:, 2] - 1.0
    spectrum = np.abs(np.fft.rfft(vertical - vertical.mean()))
    freqs = np.fft.rfftfreq(vertical.size, 1 / 50)
    assert 1.6 <= freqs[np.argmax(spectrum)] <= 2.0  # step frequency
    amplitude = (np.percentile(vertical, 97) - np.percentile(vertical, 3)) / 2
    assert 0.2 <= amplitude <= 0.45
    lateral_sway = np.ptp(truth.lateral_deg) / 2
    assert 1.0 <= lateral_sway <= 6.0
    assert block.gyr_dps is not None and np.abs(block.gyr_dps).max() > 5.0


def test_transitions_are_smooth() -> None:
    """No orientation jumps anywhere, falls included; ordinary moves are slow."""
    w = wearable(
        SitSpec(at_s=0),
        SlouchSpec(at_s=3, flexion_deg=40, onset_s=1, duration_s=2),
        WalkSpec(at_s=9, duration_s=5),
        BendSpec(at_s=18),
        SitDownSpec(at_s=25, style="hard"),
        LieDownSpec(at_s=30),
        GetUpSpec(at_s=38),
        WalkSpec(at_s=48),
        FallSpec(at_s=55),
        rate=200,
    )
    t = np.arange(0.0, 62.0, 0.005)
    r = w.trajectory.orientation(t)
    rate_dps = np.degrees((r[:-1].inv() * r[1:]).magnitude()) / 0.005
    assert rate_dps.max() < 400.0
    assert rate_dps[t[1:] < 54.9].max() < 150.0


def test_hard_sit_has_a_seat_impact_and_gentle_sit_does_not() -> None:
    hard = wearable(StandSpec(at_s=0), SitDownSpec(at_s=2, style="hard", impact_g=2.5), rate=100)
    gentle = wearable(StandSpec(at_s=0), SitDownSpec(at_s=2), rate=100)
    hard_peak = np.linalg.norm(hard.render(1.0, 6.0).acc_g, axis=1).max()
    gentle_peak = np.linalg.norm(gentle.render(1.0, 6.0).acc_g, axis=1).max()
    assert hard_peak == pytest.approx(2.5, abs=0.4)
    assert gentle_peak < 1.3


def test_gyro_clips_at_2000_dps() -> None:
    assert pytest.approx(32768.0) == GYR_LSB_PER_DPS * 2000.0
