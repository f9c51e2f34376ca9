"""The compiled components make their kernels' state arguments once per bound
state: a state bound later is the one the next block uses, and a state of
the wrong number of devices is refused before any kernel runs."""

from __future__ import annotations

import numpy as np
import pytest

import posture.kernels as kernels
from posture import state as st
from posture.activity import ActivityClassifier, ActivitySettings
from posture.calibration import CalibrationSettings
from posture.capture import CalibrationCapture
from posture.kernels import Kernel
from posture.orientation import GravityFilter, GravityFilterParams
from posture.slouch import SlouchDetector
from posture.types import SlouchSettings

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)

FS = 50.0


def imu(n: int, devices: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 3, D) accelerometer and gyroscope of leaning, shaking devices, dt (n, D)."""
    rng = np.random.default_rng(seed)
    acc = rng.normal(0.0, 0.05, (n, 3, devices)) + rng.uniform(-0.4, 0.4, (1, 3, devices))
    acc[:, 2] += 1.0
    gyr = rng.normal(0.0, 5.0, (n, 3, devices))
    return acc, gyr, np.full((n, devices), 1.0 / FS)


def test_a_state_bound_between_blocks_is_the_one_the_next_block_runs_on() -> None:
    # Two devices filtered together, then each on its own state taken out of
    # the pair's and bound in turn: the same numbers as one filter per device.
    acc, gyr, dt = imu(80, 2, seed=1)
    params = GravityFilterParams(FS, True)
    pair = GravityFilter(params, 2, kernel=Kernel.COMPILED)
    alone = [GravityFilter(params, 1, kernel=Kernel.COMPILED) for _ in range(2)]
    pair.process(acc[:40], gyr[:40], dt[:40])
    for d, f in enumerate(alone):
        f.process(acc[:40, :, [d]], gyr[:40, :, [d]], dt[:40, [d]])
    whole = pair.state
    for d in (1, 0):
        pair.state = st.take(whole, np.array([d]))
        got = pair.process(acc[40:, :, [d]], gyr[40:, :, [d]], dt[40:, [d]])
        want = alone[d].process(acc[40:, :, [d]], gyr[40:, :, [d]], dt[40:, [d]])
        np.testing.assert_array_equal(got.up_sensor, want.up_sensor)
        np.testing.assert_array_equal(pair.state.quat_si, alone[d].state.quat_si)


def test_a_state_of_other_devices_is_refused_before_the_kernels_run() -> None:
    acc, gyr, dt = imu(10, 3, seed=2)
    gravity = GravityFilter(GravityFilterParams(FS, True), 3, kernel=Kernel.COMPILED)
    grav = gravity.process(acc, gyr, dt)
    activity = ActivityClassifier(ActivitySettings(), FS, True, 3, kernel=Kernel.COMPILED)
    feats = activity.features(acc, gyr, grav.up_sensor, grav.settled)
    capture = CalibrationCapture(
        CalibrationSettings(), FS, (0.0, 0.0, 1.0), auto=True, devices=3, kernel=Kernel.COMPILED
    )
    slouch = SlouchDetector(SlouchSettings(), 0.05, 3, kernel=Kernel.COMPILED)
    t = np.arange(10)[:, None] * 0.02 + np.zeros((1, 3))
    zeros = np.zeros((10, 3))

    # Each component now holds the state of two devices (its arguments were
    # made for three): a block of three must not reach its kernel.
    gravity.state = gravity.fresh_state(2)
    activity.state = activity.fresh_state(2)
    capture.state = capture.fresh_state(2)
    slouch.state = st.take(slouch.state, np.array([0, 1]))
    before = gravity.state.count.copy()
    with pytest.raises(ValueError, match="gravity state"):
        gravity.process(acc, gyr, dt)
    np.testing.assert_array_equal(gravity.state.count, before)
    with pytest.raises(ValueError, match="activity state"):
        activity.features(acc, gyr, grav.up_sensor, grav.settled)
    with pytest.raises(ValueError, match="activity state"):
        activity.classify(feats, zeros)
    with pytest.raises(ValueError, match="capture state"):
        capture.process(t, acc, gyr, grav.acc_lp_g, grav.acc_dev2_g2, feats.walking, feats.gait)
    with pytest.raises(ValueError, match="slouch state"):
        slouch.process(t, zeros, zeros, np.zeros((10, 3), np.int8), feats.vigorous)
    # A rule of other devices than the state's is refused too.
    slouch.state = st.take(slouch.state, np.array([0]))
    with pytest.raises(ValueError, match="slouch state"):
        slouch.process(
            t[:, :1], zeros[:, :1], zeros[:, :1], np.zeros((10, 1), np.int8), feats.vigorous[:, :1]
        )
