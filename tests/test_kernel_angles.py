"""The compiled angles (posture.kernels.angles) equal the NumPy reference
(posture.calibration.angles_tcd, face_tilt_deg): on many wearables' samples,
calibrated and not, at upright (no sideways part) and upside down, over the
whole sphere with signed zeros and NaN up-directions, after a capture
mid-block, and through the whole BatchEngine."""

from __future__ import annotations

import numpy as np
import pytest
from test_posture_batch import assert_same

import posture.kernels as kernels
from lab.batch_bench import synthetic_devices
from posture.batch import BatchEngine
from posture.calibration import Calibration, TrunkAngles
from posture.config import EngineConfig
from posture.kernels import Kernel
from posture.types import PostureEventKind, SlouchSettings

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)

FS = 50.0
ANGLES = (TrunkAngles(Kernel.NUMPY), TrunkAngles(Kernel.COMPILED))


def wearers(devices: int, seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, D) up-directions (the normalised accelerometer of
    ``synthetic_devices``: bends, leans, walking) and (3, 3, D) calibrations,
    each device's from its own sample, every fifth device's the nominal one
    (whose matrix is exact); the first rows are set to each device's upright
    (for every fifth device exactly, no sideways part), upside down (180°)
    and bent 90° to the right (no up part)."""
    _, acc, _ = synthetic_devices(devices, seconds, FS, seed=seed)
    up = np.ascontiguousarray(acc.transpose(1, 2, 0))
    up /= np.linalg.norm(up, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    matrix = np.empty((3, 3, devices))
    for d in range(devices):
        upright = (0.0, 1.0, 0.0) if d % 5 == 0 else up[rng.integers(0, up.shape[0]), :, d]
        matrix[:, :, d] = Calibration.from_up(upright).matrix
    up[0] = matrix[2]
    up[1] = -matrix[2]
    up[2] = -matrix[1]  # up toward the left: the trunk bends right
    return up, matrix


def assert_same_angles(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> None:
    for x, y, name in zip(a, b, ("flexion", "lateral", "inclination"), strict=True):
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
        np.testing.assert_allclose(x, y, rtol=0.0, atol=1e-12, equal_nan=True, err_msg=name)
        # The reference shows no -0.0 (its "+ 0.0"); neither may the kernel.
        np.testing.assert_array_equal(np.signbit(x), np.signbit(y), err_msg=name)


@pytest.mark.parametrize("share", [0.0, 0.6, 1.0], ids=["none", "some", "all"])
def test_compiled_equals_reference(share: float) -> None:
    devices = 300
    up, matrix = wearers(devices, 20.0, seed=int(10 * share))
    calibrated = np.random.default_rng(1).random(devices) < share
    ref, new = (angles.of_devices(up, matrix, calibrated) for angles in ANGLES)
    assert_same_angles(new, ref)
    flexion, lateral, incl = new
    assert np.isnan(flexion[:, ~calibrated]).all() and np.isnan(lateral[:, ~calibrated]).all()
    if calibrated.any():
        assert not np.isnan(flexion[:, calibrated]).any()
        # Upright: 0 (exactly, and not -0, where the matrix is exact);
        # upside down: 180; a sideways bend: 90 to the right.
        exact = calibrated & (np.arange(devices) % 5 == 0)
        assert exact.any()
        for x in (flexion, lateral, incl):
            assert (x[0, exact] == 0.0).all() and not np.signbit(x[0, exact]).any()
            np.testing.assert_allclose(x[0, calibrated], 0.0, atol=1e-12)
        np.testing.assert_allclose(incl[1, calibrated], 180.0, atol=1e-12)
        np.testing.assert_allclose(lateral[2, calibrated], 90.0, atol=1e-12)
    # Uncalibrated: the back's tilt from vertical, spin-free.
    np.testing.assert_allclose(
        incl[:, ~calibrated], np.degrees(np.arcsin(np.abs(up[:, 2, ~calibrated]))), atol=1e-12
    )


def test_whole_sphere_zeros_and_nan() -> None:
    # Every tilt from 0 to 180 (random directions and ones a hair off each
    # axis), exact axes with signed zeros, and NaN up-directions (a sensor
    # fault), on calibrated devices and not.
    devices = 64
    rng = np.random.default_rng(19)
    up = rng.standard_normal((400, 3, devices))
    up /= np.linalg.norm(up, axis=1, keepdims=True)
    axes = [(0.0, 0.0, 1.0), (-0.0, 0.0, 1.0), (0.0, -0.0, -1.0), (-0.0, -0.0, -1.0)]
    axes += [(1.0, 0.0, -0.0), (0.0, -1.0, 0.0), (1e-9, 0.0, -1.0), (0.0, 1e-9, 1.0)]
    for row, axis in enumerate(axes):
        up[row] = np.array(axis)[:, None]
    up[len(axes), :, ::2] = np.nan
    up[len(axes) + 1, 2] = np.nan
    matrix = np.broadcast_to(np.eye(3)[:, :, None], (3, 3, devices)).copy()
    uprights = [(0.0, 1.0, 0.0), (0.6, 0.8, 0.0), (0.3, 0.9, 0.3), (-0.5, 0.8, -0.2)]
    for d in range(devices // 2, devices):
        upright = np.array(uprights[d % len(uprights)])
        matrix[:, :, d] = Calibration.from_up(upright / np.linalg.norm(upright)).matrix
    calibrated = np.arange(devices) % 4 != 3
    ref, new = (angles.of_devices(up, matrix, calibrated) for angles in ANGLES)
    assert_same_angles(new, ref)
    incl = new[2]
    assert np.nanmax(incl[:, calibrated]) > 179.0 and np.nanmin(incl[:, calibrated]) < 1.0
    assert np.isnan(incl[len(axes), ::2]).all() and np.isnan(incl[len(axes) + 1]).all()
    # Exactly upright or upside down under the identity: 0 (never -0) and 180.
    eye = calibrated & (np.arange(devices) < devices // 2)
    for x in new[:2]:
        assert (x[:4, eye] == 0.0).all() and not np.signbit(x[:4, eye]).any()
    np.testing.assert_array_equal(
        incl[:4, eye], np.repeat([[0.0], [0.0], [180.0], [180.0]], eye.sum(), axis=1)
    )


def test_one_device_and_one_sample() -> None:
    up, matrix = wearers(1, 2.0, seed=3)
    for rows in (slice(0, 1), slice(None)):
        for calibrated in (np.array([True]), np.array([False])):
            ref, new = (a.of_devices(up[rows], matrix, calibrated) for a in ANGLES)
            assert_same_angles(new, ref)


def test_redo_device_after_a_capture() -> None:
    # A device captured at sample j of the block: its column from j on is
    # angled under the new calibration, the rest of the block is untouched.
    devices = 40
    up, matrix = wearers(devices, 4.0, seed=5)
    calibrated = np.arange(devices) % 3 != 0
    rng = np.random.default_rng(5)
    results = [list(a.of_devices(up, matrix, calibrated)) for a in ANGLES]
    before = [x.copy() for x in results[1]]
    captures = [(int(rng.integers(devices)), int(rng.integers(up.shape[0] + 1))) for _ in range(8)]
    captures.append((0, 0))  # a device never calibrated, from the block's first sample
    for dev, first in captures:
        for angles, out in zip(ANGLES, results, strict=True):
            angles.redo_device(up, matrix, dev, first, *out)
        assert_same_angles(tuple(results[1]), tuple(results[0]))
    changed = np.zeros(before[0].shape, dtype=bool)
    for dev, first in captures:
        changed[first:, dev] = True
    for x, was in zip(results[1], before, strict=True):
        np.testing.assert_array_equal(x[~changed], was[~changed])
    assert not np.isnan(results[1][0][:, 0]).any()


def test_mismatched_shapes_never_reach_the_kernel() -> None:
    up, matrix = wearers(4, 1.0, seed=7)
    angles = ANGLES[1]
    calibrated = np.ones(4, dtype=bool)
    with pytest.raises(ValueError, match="expected"):
        angles.of_devices(up[:, :, :3], matrix, calibrated)
    with pytest.raises(ValueError, match="flags"):
        angles.of_devices(up, matrix, calibrated[:3])
    out = list(angles.of_devices(up, matrix, calibrated))
    with pytest.raises(ValueError, match="device 4"):
        angles.redo_device(up, matrix, 4, 0, *out)
    with pytest.raises(ValueError, match="angle arrays"):
        angles.redo_device(up, matrix, 0, 0, out[0][:-1], out[1], out[2])


def test_batch_engine_same_with_compiled_angles() -> None:
    # Two NumPy engines, one angling by the kernel: a third of the wearables
    # calibrated from the start, a third captured when asked (mid-block),
    # a third never.
    devices = 30
    t, acc, gyr = synthetic_devices(devices, 60.0, FS, seed=11)
    config = EngineConfig(FS, True, auto_calibrate=False, slouch=SlouchSettings(dwell_s=3.0))
    ref, new = (BatchEngine(config, devices) for _ in range(2))
    for engine, kernel in ((ref, Kernel.NUMPY), (new, Kernel.COMPILED)):
        engine._core.angles = TrunkAngles(kernel)
        for d in range(0, devices, 3):
            engine.set_calibration(d, Calibration.from_up(acc[d, 0]))
        for d in range(1, devices, 3):
            engine.request_calibration(d)
    seen: set[PostureEventKind] = set()
    uncalibrated_nan = 0
    for a in range(0, t.shape[1], 10):
        sl = slice(a, a + 10)
        x, y = (
            new.process(t[:, sl], acc[:, sl], gyr[:, sl]),
            ref.process(t[:, sl], acc[:, sl], gyr[:, sl]),
        )
        for d in range(devices):
            assert_same(x.device(d), y.device(d))
            seen |= {e.kind for e in y.device(d).events}
        uncalibrated_nan += int(np.isnan(x.device(2).flexion_deg).sum())
    assert {PostureEventKind.CALIBRATED, PostureEventKind.SLOUCH_STARTED} <= seen
    assert uncalibrated_nan == t.shape[1]
    calibrated = new.calibrated
    assert calibrated[0::3].all() and not calibrated[2::3].any()
    # Captures inside a block, so the re-angling from that sample on ran.
    captured = [
        round(float(cal.t_s) * FS) for cal in map(new.calibration, range(1, devices, 3)) if cal
    ]
    assert any(i % 10 for i in captured)
