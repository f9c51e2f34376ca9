"""The whole engine gives the same angles and events with the compiled kernels as
with the NumPy reference (POSTURE_KERNEL=numpy), batched and single."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest
from test_posture_batch import CONFIG, WARD, assert_same, assert_same_calibration, blocks

import posture.kernels as kernels
from posture import PostureEngine, PostureEventKind, SlouchSettings
from posture.batch import BatchEngine
from posture.kernels import KERNEL_ENV, Kernel

T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)


def engines(monkeypatch: pytest.MonkeyPatch, kernel: Kernel, make: Callable[[], T]) -> T:
    """``make()`` built with ``$POSTURE_KERNEL`` set to ``kernel`` (read at construction)."""
    with monkeypatch.context() as m:
        m.setenv(KERNEL_ENV, kernel.value)
        built = make()
    return built


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
def test_batch_engine_same_both_ways(monkeypatch: pytest.MonkeyPatch, gyro: bool) -> None:
    devices = 12
    t, acc, gyr = (x[:devices] for x in WARD)
    ref = engines(monkeypatch, Kernel.NUMPY, lambda: BatchEngine(CONFIG[gyro], devices))
    new = engines(monkeypatch, Kernel.COMPILED, lambda: BatchEngine(CONFIG[gyro], devices))
    for part in ("gravity", "activity", "slouch"):
        assert getattr(ref._core, part).kernel is Kernel.NUMPY
        assert getattr(new._core, part).kernel is Kernel.COMPILED
    seen: set[PostureEventKind] = set()
    for sl in blocks(t.shape[1], [10, 10, 7, 23, 1, 50]):
        args = (t[:, sl], acc[:, sl], gyr[:, sl] if gyro else None)
        a, b = new.process(*args), ref.process(*args)
        for d in range(devices):
            assert_same(a.device(d), b.device(d))
            seen |= {e.kind for e in b.device(d).events}
    assert {
        PostureEventKind.CALIBRATED,
        PostureEventKind.SLOUCH_STARTED,
        PostureEventKind.FALL_DETECTED,
    } <= seen
    for d in range(devices):
        assert new.stats(d) == ref.stats(d)
        assert_same_calibration(new.calibration(d), ref.calibration(d))


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
def test_posture_engine_same_both_ways(monkeypatch: pytest.MonkeyPatch, gyro: bool) -> None:
    for d in (0, 1, 2):  # a slouch, a fall, a slumped sitter; gaps and a clock reset
        t, acc, gyr = (x[d] for x in WARD)
        ref = engines(monkeypatch, Kernel.NUMPY, lambda: PostureEngine(CONFIG[gyro]))
        new = engines(monkeypatch, Kernel.COMPILED, lambda: PostureEngine(CONFIG[gyro]))
        events = 0
        for sl in blocks(t.size, [10, 3, 25]):
            args = (t[sl], acc[sl], gyr[sl] if gyro else None)
            a, b = new.process(*args), ref.process(*args)
            assert_same(a, b)
            events += len(b.events)
        assert events > 0
        assert new.stats == ref.stats


def test_batch_engine_subsets_and_own_rules_same_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ticks in which only some wearables sent samples (in any order), each
    # patient with their own slouch rule, one changed midway.
    devices = 12
    t, acc, gyr = (x[:devices] for x in WARD)
    ref = engines(monkeypatch, Kernel.NUMPY, lambda: BatchEngine(CONFIG[True], devices))
    new = engines(monkeypatch, Kernel.COMPILED, lambda: BatchEngine(CONFIG[True], devices))
    rng = np.random.default_rng(13)
    for d in range(devices):
        rule = SlouchSettings(
            threshold_deg=float(rng.uniform(15.0, 30.0)),
            dwell_s=float(rng.uniform(1.0, 8.0)),
            while_walking=bool(d % 2),
        )
        ref.set_slouch_settings(d, rule)
        new.set_slouch_settings(d, rule)
    done = np.zeros(devices, dtype=np.int64)  # samples each device has been fed
    n = t.shape[1]
    events = 0
    while done.min() < n:
        waiting = np.flatnonzero(done < n)
        subset = rng.permutation(waiting)[: int(rng.integers(1, waiting.size + 1))]
        size = int(min(rng.integers(1, 30), *(n - done[subset])))
        if rng.random() < 0.02:
            d = int(subset[0])
            rule = SlouchSettings(threshold_deg=18.0, dwell_s=2.0, while_walking=False)
            ref.set_slouch_settings(d, rule)
            new.set_slouch_settings(d, rule)
        rows = [slice(int(done[d]), int(done[d]) + size) for d in subset]
        args = (
            np.stack([t[d, r] for d, r in zip(subset, rows, strict=True)]),
            np.stack([acc[d, r] for d, r in zip(subset, rows, strict=True)]),
            np.stack([gyr[d, r] for d, r in zip(subset, rows, strict=True)]),
        )
        a = new.process(*args, devices=subset)
        b = ref.process(*args, devices=subset)
        for row in range(subset.size):
            assert_same(a.device(row), b.device(row))
            events += len(b.device(row).events)
        done[subset] += size
    assert events > 0
    for d in range(devices):
        assert new.stats(d) == ref.stats(d)


def test_engine_moves_from_numpy_to_compiled_between_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A gateway starts on NumPy while the kernels compile, then moves over:
    # every device carries on where it was, as if compiled all along (to
    # rounding, the same events at the same samples).
    devices = 12
    t, acc, gyr = (x[:devices] for x in WARD)
    moving = BatchEngine(CONFIG[True], devices, kernel=Kernel.NUMPY)
    compiled = BatchEngine(CONFIG[True], devices, kernel=Kernel.COMPILED)
    assert moving.kernel is Kernel.NUMPY and compiled.kernel is Kernel.COMPILED
    n = t.shape[1]
    seen: set[PostureEventKind] = set()
    for sl in blocks(n, [10, 10, 7, 23]):
        if moving.kernel is Kernel.NUMPY and sl.start >= n // 3:
            assert moving.use_kernel(Kernel.COMPILED) is Kernel.COMPILED
            for part in ("gravity", "capture", "activity", "slouch", "angles", "falls"):
                assert getattr(moving._core, part).kernel is Kernel.COMPILED, part
        args = (t[:, sl], acc[:, sl], gyr[:, sl])
        a, b = moving.process(*args), compiled.process(*args)
        for d in range(devices):
            assert_same(a.device(d), b.device(d))
            if sl.start >= n // 3:
                seen |= {e.kind for e in a.device(d).events}
    assert moving.kernel is Kernel.COMPILED
    # Events after the move: the fall detector and the slouch timer carried on.
    assert {PostureEventKind.SLOUCH_STARTED, PostureEventKind.FALL_DETECTED} <= seen
    for d in range(devices):
        assert moving.stats(d) == compiled.stats(d)
        assert_same_calibration(moving.calibration(d), compiled.calibration(d))
