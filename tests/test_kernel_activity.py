"""The compiled activity classifier and slouch detector equal their NumPy references
(posture.kernels.activity, posture.kernels.slouch): flags, activity codes and
slouch transitions exactly, filter states to rounding, over random streams with
walking, lying, shaking, resets, subsets of devices and any block split."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import posture.kernels as kernels
import posture.state as st
from posture.activity import ActivityClassifier, ActivitySettings, GaitBlock
from posture.kernels import Kernel
from posture.orientation import GravityFilter, GravityFilterParams
from posture.slouch import SlouchDetector, SlouchParams, SlouchState, SlouchTransition
from posture.types import Activity, SlouchSettings

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)

FS = 50.0


def wearers(devices: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, D) accelerometer (g) and gyroscope (°/s): each device sits, walks
    (a vertical bounce at its own step rate), lies down (gravity along another
    axis), shakes, at random times."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    acc = rng.normal(0.0, 0.005, (n, 3, devices))
    gyr = rng.normal(0.0, 0.5, (n, 3, devices))
    acc[:, 2] += 1.0
    for d in range(devices):
        for kind in rng.permutation([0, 1, 2, 0]):
            a = int(rng.integers(0, n - 200))
            length = int(rng.integers(100, 600)) + (800 if kind == 1 else 0)
            b = min(n, a + length)
            if kind == 0:  # walking: 1.5-2.2 steps/s, 0.1-0.3 g bounce
                f = rng.uniform(1.5, 2.2)
                acc[a:b, 2, d] += rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * f * t[a:b])
                acc[a:b, 0, d] += 0.05 * np.sin(np.pi * f * t[a:b])
                gyr[a:b, 1, d] += 15.0 * np.sin(np.pi * f * t[a:b])
            elif kind == 1:  # lying: gravity along x
                acc[a:b, 2, d] -= 1.0
                acc[a:b, 0, d] += 1.0
            else:  # shaking
                acc[a:b, :, d] += rng.normal(0.0, 0.3, (b - a, 3))
                gyr[a:b, :, d] += rng.normal(0.0, 60.0, (b - a, 3))
    return acc, gyr


def both(make: type, *args: object) -> tuple[Any, Any]:
    return make(*args, kernel=Kernel.NUMPY), make(*args, kernel=Kernel.COMPILED)


def assert_states_close(a: object, b: object) -> None:
    for name in a.__slots__:  # type: ignore[attr-defined]
        x, y = getattr(a, name), getattr(b, name)
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
# The features kernel runs devices in lane blocks of 32: 64 devices are two whole
# blocks, 150 four whole and one part.
@pytest.mark.parametrize(
    "devices", [1, 5, 40, 64, 150], ids=["one", "few", "many", "whole_blocks", "blocks"]
)
def test_activity_compiled_equals_reference(gyro: bool, devices: int) -> None:
    n = 4000
    acc, gyr = wearers(devices, n, seed=devices + 10 * gyro)
    grav = GravityFilter(GravityFilterParams(FS, gyro), devices, kernel=Kernel.NUMPY)
    ref, new = both(ActivityClassifier, ActivitySettings(), FS, gyro, devices)
    assert (ref.kernel, new.kernel) == (Kernel.NUMPY, Kernel.COMPILED)
    rng = np.random.default_rng(devices)
    a = 0
    codes: set[int] = set()
    while a < n:
        b = min(n, a + int(rng.choice([1, 2, 7, 10, 10, 10, 25, 41, 60])))
        if rng.random() < 0.03:  # a gap: some devices start over
            resets = np.flatnonzero(rng.random(devices) < 0.5)
            grav.reset(resets)
            ref.reset(resets)
            new.reset(resets)
        g = grav.process(acc[a:b], gyr[a:b] if gyro else None, np.full((b - a, devices), 0.02))
        # A subset of the devices now and then (a tick in which some wearables sent
        # nothing): both run on that subset's state, put back after.
        subset = (
            np.flatnonzero(rng.random(devices) < 0.6)
            if devices > 1 and rng.random() < 0.2
            else np.arange(devices)
        )
        if subset.size == 0:
            a = b
            continue
        incl = np.degrees(np.arccos(np.clip(g.up_sensor[:, 2], -1.0, 1.0)))
        results = []
        for c in (ref, new):
            whole = c.state
            c.state = st.take(whole, subset)
            feats = c.features(
                acc[a:b][..., subset],
                gyr[a:b][..., subset] if gyro else None,
                g.up_sensor[..., subset],
                g.settled[:, subset],
            )
            activity = c.classify(feats, incl[:, subset])
            st.put(whole, subset, c.state)
            c.state = whole
            results.append((feats, activity))
        (fr, ar), (fn, an) = results
        for name in GaitBlock.__slots__:
            np.testing.assert_array_equal(getattr(fn, name), getattr(fr, name), err_msg=name)
        np.testing.assert_array_equal(an, ar)
        codes |= set(np.unique(ar).tolist())
        assert_states_close(new.state, ref.state)
        a = b
    assert {Activity.WALKING, Activity.LYING, Activity.UPRIGHT, Activity.MOVING} <= codes


def angle_stream(devices: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """(n, D) times (jitter, gaps, a clock step back), flexion and lateral (slow
    swings through the thresholds, NaN while uncalibrated), activity runs, vigour."""
    rng = np.random.default_rng(seed)
    dt = np.full((n, devices), 1.0 / FS) + rng.normal(0.0, 5e-4, (n, devices))
    for _ in range(3):
        dt[int(rng.integers(1, n)), int(rng.integers(0, devices))] = rng.choice([2.0, -5.0])
    t = 100.0 + np.cumsum(dt, axis=0)
    i = np.arange(n)[:, None]
    period = rng.uniform(400, 3000, devices)
    flexion = 20.0 + 15.0 * np.sin(2 * np.pi * i / period + rng.uniform(0, 6, devices))
    flexion += rng.normal(0.0, 1.0, (n, devices))
    lateral = 12.0 * np.sin(2 * np.pi * i / (1.7 * period)) + rng.normal(0.0, 1.0, (n, devices))
    for _ in range(devices):  # uncalibrated stretches
        a = int(rng.integers(0, n - 100))
        d = int(rng.integers(0, devices))
        flexion[a : a + 100, d] = math.nan
        lateral[a : a + 100, d] = math.nan
    kinds = np.array(
        [
            Activity.UPRIGHT,
            Activity.UPRIGHT,
            Activity.MOVING,
            Activity.WALKING,
            Activity.LYING,
            Activity.UNKNOWN,
        ],
        dtype=np.int8,
    )
    activity = np.empty((n, devices), dtype=np.int8)
    for d in range(devices):
        a = 0
        while a < n:
            b = a + int(rng.integers(20, 400))
            activity[a:b, d] = rng.choice(kinds)
            a = b
    vigorous = rng.random((n, devices)) < 0.05
    return {
        "t_s": t,
        "flexion_deg": flexion,
        "lateral_deg": lateral,
        "activity": activity,
        "vigorous": vigorous,
    }


@pytest.mark.parametrize("devices", [1, 6, 30], ids=["one", "few", "many"])
def test_slouch_compiled_equals_reference(devices: int) -> None:
    n = 6000
    s = angle_stream(devices, n, seed=devices)
    ref, new = both(SlouchDetector, SlouchSettings(dwell_s=3.0), 0.1, devices)
    assert (ref.kernel, new.kernel) == (Kernel.NUMPY, Kernel.COMPILED)
    rng = np.random.default_rng(devices + 1)
    for d in range(devices):  # each patient their own rule
        rule = SlouchSettings(
            threshold_deg=float(rng.uniform(15, 30)),
            hysteresis_deg=float(rng.uniform(1, 8)),
            dwell_s=float(rng.uniform(0.5, 6)),
            lateral_threshold_deg=float(rng.uniform(8, 20)),
            while_walking=bool(rng.random() < 0.5),
        )
        ref.params.set(d, rule)
        new.params.set(d, rule)
    a = 0
    kinds: set[tuple[bool, int]] = set()
    while a < n:
        b = min(n, a + int(rng.choice([1, 3, 10, 10, 17, 50, 120])))
        subset = (
            np.flatnonzero(rng.random(devices) < 0.5)
            if devices > 1 and rng.random() < 0.2
            else np.arange(devices)
        )
        if subset.size == 0:
            a = b
            continue
        results: list[tuple[np.ndarray, list[SlouchTransition]]] = []
        for det in (ref, new):
            whole_state, whole_params = det.state, det.params
            det.state, det.params = st.take(whole_state, subset), st.take(whole_params, subset)
            results.append(det.process(*(v[a:b][:, subset] for v in s.values())))
            st.put(whole_state, subset, det.state)
            det.state, det.params = whole_state, whole_params
        (out_ref, tr_ref), (out_new, tr_new) = results
        np.testing.assert_array_equal(out_new, out_ref)
        key = lambda tr: (tr.device, tr.index)  # noqa: E731 - the order within a device counts
        assert tr_new == sorted(tr_ref, key=key)  # the compiled path's order: by device
        kinds |= {(tr.started, subset.size) for tr in tr_ref}
        assert_states_close(new.state, ref.state)
        a = b
    assert {started for started, _ in kinds} == {True, False}


def test_slouch_kernel_lists_transitions_by_sample_then_device() -> None:
    from posture.kernels import slouch

    devices, n = 40, 1500
    s = angle_stream(devices, n, seed=7)
    # Every other device upright all through (never beyond, never busy: the
    # kernel's screen leaves it out of the dwell loop); the others slouch.
    s["flexion_deg"][:, ::2] = 5.0
    s["lateral_deg"][:, ::2] = 0.0
    rule = SlouchSettings(dwell_s=0.5)
    ref = SlouchDetector(rule, 0.1, devices, kernel=Kernel.NUMPY)
    out_ref, tr_ref = ref.process(*s.values())
    state, params = SlouchState.fresh(devices), SlouchParams.fresh(devices, rule)
    out = np.empty((n, devices), dtype=bool)
    rows = np.empty((n * devices, 4))
    codes = np.array(
        [Activity.UPRIGHT, Activity.MOVING, Activity.WALKING, Activity.LYING], dtype=np.int8
    )
    found = slouch.slouch_steps(
        *s.values(),
        out,
        rows,
        *(getattr(state, name) for name in state.__slots__),
        *(getattr(params, name) for name in params.__slots__),
        0.1,
        codes,
    )
    np.testing.assert_array_equal(out, out_ref)
    assert_states_close(state, ref.state)
    assert found == len(tr_ref) >= 20
    by_time = [(int(i), int(d)) for d, i in rows[:found, :2].tolist()]
    assert by_time == sorted(by_time)
    assert {(int(d), int(i), started == 1.0) for d, i, started, _ in rows[:found].tolist()} == {
        (tr.device, tr.index, tr.started) for tr in tr_ref
    }


def test_warm_up_compiles_the_activity_and_slouch_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    from posture.kernels import activity, slouch, warm_up

    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    assert warm_up() is not None
    for compiled in (activity.activity_features, activity.activity_classify, slouch.slouch_steps):
        assert compiled.signatures, compiled


def test_without_numba_activity_and_slouch_run_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "compiled_available", lambda: False)
    assert (
        ActivityClassifier(ActivitySettings(), FS, True, kernel="compiled").kernel is Kernel.NUMPY
    )
    assert SlouchDetector(SlouchSettings(), 0.1, kernel="compiled").kernel is Kernel.NUMPY
