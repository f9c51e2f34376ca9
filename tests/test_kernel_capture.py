"""The calibration capture's compiled block (posture.kernels.capture) does what
the NumPy reference does: the same captures at the same samples (still,
from walking, refined, requested), and the same state after every block,
bit for bit, over many devices (more than one chunk of the kernel), blocks of
any length, subsets of devices, gaps, requests and restored calibrations. The
whole engine both ways is tests/test_kernel_engine.py."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import posture.kernels as kernels
import posture.state as st
from posture.activity import ActivityClassifier, ActivitySettings
from posture.calibration import Calibration, CalibrationSettings
from posture.capture import CalibrationCapture, Capture, Stage
from posture.kernels import Kernel
from posture.orientation import GravityFilter, GravityFilterParams

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)

FS = 50.0
NOMINAL_UP = (0.0, 1.0, 0.0)


def wearers(
    devices: int, n: int, seed: int, keep_pose: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, D) accelerometer (g) and gyroscope (°/s): each device holds
    still poses (upright near the nominal mounting, or tilted by up to 60°),
    walks (a vertical bounce along its up), shakes, in random order; with
    probability ``keep_pose`` a stretch keeps the pose of the one before
    (standing still, then walking off: a retroactive confirmation)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    acc = rng.normal(0.0, 0.004, (n, 3, devices))
    gyr = rng.normal(0.0, 0.4, (n, 3, devices))
    for d in range(devices):
        a = 0
        up = np.asarray(NOMINAL_UP)
        while a < n:
            b = min(n, a + int(rng.integers(60, 700)))
            if a == 0 or keep_pose == 0.0 or rng.random() >= keep_pose:
                turn = rng.normal(0.0, 1.0, 3) * math.radians(rng.uniform(0, 60))
                up = Rotation.from_rotvec(turn).apply(NOMINAL_UP)
            kind = rng.choice(["still", "still", "walk", "shake"])
            acc[a:b, :, d] += up
            if kind == "walk":
                f = rng.uniform(1.5, 2.2)
                acc[a:b, :, d] += np.outer(0.25 * np.sin(2 * np.pi * f * t[a:b]), up)
                gyr[a:b, 0, d] += 12.0 * np.sin(np.pi * f * t[a:b])
            elif kind == "shake":
                acc[a:b, :, d] += rng.normal(0.0, 0.3, (b - a, 3))
                gyr[a:b, :, d] += rng.normal(0.0, 60.0, (b - a, 3))
            a = b
    return acc, gyr


def same_captures(got: list[Capture], want: list[Capture]) -> None:
    assert [(c.device, c.index) for c in got] == [(c.device, c.index) for c in want]
    for a, b in zip(got, want, strict=True):
        assert (a.tilt_from_nominal_deg, a.still_s, a.gait_s, a.refined) == (
            b.tilt_from_nominal_deg,
            b.still_s,
            b.gait_s,
            b.refined,
        )
        assert (a.calibration.requested, a.calibration.provisional, a.calibration.t_s) == (
            b.calibration.requested,
            b.calibration.provisional,
            b.calibration.t_s,
        )
        np.testing.assert_array_equal(a.calibration.matrix, b.calibration.matrix)


def same_state(a: object, b: object) -> None:
    for name in a.__slots__:  # type: ignore[attr-defined]
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def compare(
    gyro: bool,
    devices: int,
    n: int,
    seed: int,
    blocks: list[int],
    keep_pose: float = 0.0,
) -> tuple[collections.Counter[str], CalibrationCapture]:
    """Both implementations over the same wearers in blocks of lengths drawn
    from ``blocks`` (with gaps, requests, restored calibrations, subsets of
    devices), asserting the same captures and state after every block;
    returns what was seen (capture kinds, blocks with captures and devices
    left pending, devices with more than one capture in a block) and the
    reference."""
    acc, gyr = wearers(devices, n, seed=seed, keep_pose=keep_pose)
    g = GravityFilter(GravityFilterParams(FS, gyro), devices).process(
        acc, gyr if gyro else None, np.full((n, devices), 1.0 / FS)
    )
    activity = ActivityClassifier(ActivitySettings(), FS, gyro, devices)
    feats = activity.features(acc, gyr if gyro else None, g.up_sensor, g.settled)
    t = np.asarray(np.broadcast_to(np.arange(n)[:, None] / FS, (n, devices)))
    ref, new = (
        CalibrationCapture(
            CalibrationSettings(), FS, NOMINAL_UP, auto=True, devices=devices, kernel=k
        )
        for k in (Kernel.NUMPY, Kernel.COMPILED)
    )
    assert (ref.kernel, new.kernel) == (Kernel.NUMPY, Kernel.COMPILED)
    rng = np.random.default_rng(7)
    for d in np.flatnonzero(rng.random(devices) < 0.3).tolist():  # restored calibrations
        up = Rotation.from_rotvec(rng.normal(0.0, 0.4, 3)).apply(NOMINAL_UP)
        cal = Calibration.from_up(up, provisional=bool(rng.random() < 0.7))
        ref.restore(d, cal)
        new.restore(d, cal)
    seen: collections.Counter[str] = collections.Counter()
    a = 0
    while a < n:
        b = min(n, a + int(rng.choice(blocks)))
        if rng.random() < 0.02:  # a gap: some devices start their still periods over
            resets = np.flatnonzero(rng.random(devices) < 0.3)
            ref.reset(resets)
            new.reset(resets)
        if rng.random() < 0.03:  # a clinician asks
            d = int(rng.integers(devices))
            ref.request(d)
            new.request(d)
        subset = (
            np.flatnonzero(rng.random(devices) < 0.6) if rng.random() < 0.2 else np.arange(devices)
        )
        args = (
            t[a:b][:, subset],
            acc[a:b][..., subset],
            gyr[a:b][..., subset] if gyro else None,
            g.acc_lp_g[a:b][..., subset],
            g.acc_dev2_g2[a:b][:, subset],
            feats.walking[a:b][:, subset],
            feats.gait[a:b][:, subset],
        )
        found = []
        for c in (ref, new):
            whole = c.state
            c.state = st.take(whole, subset)
            found.append(c.process(*args))
            st.put(whole, subset, c.state)
            c.state = whole
        same_captures(found[1], found[0])
        same_state(new.state, ref.state)
        for capture in found[0]:
            cal = capture.calibration
            seen[
                "requested"
                if cal.requested
                else "gait"
                if cal.provisional
                else "retro"
                if capture.gait_s > 0.0
                else "refined"
                if capture.refined
                else "still"
            ] += 1
        pending = ref.pending()[subset]
        seen["mixed blocks"] += bool(found[0]) and int(pending.sum()) > len(found[0])
        per_device = collections.Counter(c.device for c in found[0])
        seen["several in a block"] += sum(k > 1 for k in per_device.values())
        a = b
    return seen, ref


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
def test_compiled_block_equals_reference(gyro: bool) -> None:
    seen, ref = compare(gyro, 150, 6000, 3 + gyro, [1, 3, 10, 10, 10, 24, 77, 200])
    assert {"requested", "gait", "refined", "still"} <= set(seen)
    assert seen["mixed blocks"] > 10
    assert np.count_nonzero(ref.state.stage == Stage.CONFIRMED) > 150 // 2


def test_compiled_block_equals_reference_in_long_blocks() -> None:
    """Blocks of many seconds: a device captures several times in one block
    (a gait, then its refinement or a request), and still poses kept while
    walking off are confirmed retroactively."""
    seen, _ = compare(True, 100, 9000, 11, [500, 1500, 3000], keep_pose=0.6)
    assert seen["several in a block"] >= 3
    assert seen["retro"] >= 3
    assert {"gait", "refined", "still"} <= set(seen)


def test_nothing_pending_changes_nothing() -> None:
    capture = CalibrationCapture(
        CalibrationSettings(), FS, NOMINAL_UP, auto=False, devices=3, kernel=Kernel.COMPILED
    )
    before = st.copy(capture.state)
    n = 20
    acc = np.zeros((n, 3, 3))
    acc[:, 1] = 1.0
    t = np.asarray(np.broadcast_to(np.arange(n)[:, None] / FS, (n, 3)))
    flags = np.zeros((n, 3), dtype=bool)
    assert capture.process(t, acc, None, acc, np.zeros((n, 3)), flags, flags) == []
    same_state(capture.state, before)


def test_warm_up_compiles_the_capture_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from posture.kernels import KERNEL_ENV, warm_up
    from posture.kernels import capture as capture_kernels

    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert warm_up() is not None
    assert capture_kernels.capture_block.signatures
