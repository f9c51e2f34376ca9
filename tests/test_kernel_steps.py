"""A block's entry checks (finiteness, time steps, breaks) are the same from the
compiled pass (posture.kernels.steps) as from the NumPy reference
(posture.steps), and a batched engine drops, counts and logs the same blocks
both ways."""

from __future__ import annotations

import numpy as np
import pytest
from test_kernel_engine import engines
from test_posture_batch import CONFIG, WARD, assert_same, blocks

import posture.kernels as kernels
from posture.batch import BatchEngine
from posture.kernels import Kernel
from posture.steps import BlockSteps, block_steps

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)

MAX_INTERVAL_S = 0.05


def assert_same_steps(got: BlockSteps, want: BlockSteps) -> None:
    np.testing.assert_array_equal(got.finite, want.finite)
    np.testing.assert_array_equal(got.dt_s, want.dt_s)  # NaN where NaN, inf where inf
    np.testing.assert_array_equal(got.breaks, want.breaks)
    np.testing.assert_array_equal(got.fresh, want.fresh)
    assert got.break_count == want.break_count
    assert got.dt_s.shape == got.breaks.shape == want.dt_s.shape


def random_block(
    rng: np.random.Generator, n: int, d: int, gyro: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Streams at 50 Hz with gaps, repeated and backward times, first samples,
    NaN and inf in any of the arrays, and huge finite values."""
    last = rng.uniform(0.0, 100.0, d)
    last[rng.random(d) < 0.1] = np.nan  # devices not seen before
    steps = np.full((n, d), 0.02)
    odd = rng.random((n, d)) < 0.02
    steps[odd] = rng.choice([0.0, -3.0, 0.05, 0.0500001, 0.4], size=int(odd.sum()))
    t = last + np.cumsum(steps, axis=0)
    fresh = np.isnan(last)
    t[:, fresh] = rng.uniform(0.0, 10.0, int(fresh.sum())) + 0.02 * np.arange(n)[:, None]
    acc = rng.normal(0.0, 1.0, (n, 3, d))
    gyr = rng.normal(0.0, 50.0, (n, 3, d)) if gyro else None
    for x in (t, acc, gyr):
        if x is None or x.size == 0:
            continue
        flat = x.reshape(-1)
        # Huge times would overflow the steps (as they do in the reference).
        huge = () if x is t else (1e308, -1e308)
        for value in (np.nan, np.inf, -np.inf, *huge):
            if rng.random() < 0.1:
                flat[rng.integers(flat.size)] = value
    return t, acc, gyr, last


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
def test_compiled_checks_equal_the_reference_on_random_blocks(gyro: bool) -> None:
    rng = np.random.default_rng(13)
    seen = {"dropped": 0, "kept": 0, "breaks": 0, "fresh": 0, "clean": 0}
    for _ in range(400):
        n = int(rng.choice([0, 1, 2, 10, 37]))
        d = int(rng.choice([1, 3, 17]))
        t, acc, gyr, last = random_block(rng, n, d, gyro)
        copies = [x.copy() for x in (t, acc, last)]
        want = block_steps(t, acc, gyr, last, MAX_INTERVAL_S, Kernel.NUMPY)
        got = block_steps(t, acc, gyr, last, MAX_INTERVAL_S, Kernel.COMPILED)
        assert_same_steps(got, want)
        for before, after in zip(copies, (t, acc, last), strict=True):
            np.testing.assert_array_equal(before, after)
        seen["dropped"] += int(np.count_nonzero(~want.finite))
        seen["kept"] += int(np.count_nonzero(want.finite))
        seen["breaks"] += want.break_count
        seen["fresh"] += int(np.count_nonzero(want.fresh))
        seen["clean"] += int(n > 0 and want.break_count == 0 and want.finite.all())
    assert min(seen.values()) > 20, seen


def test_the_checks_find_what_each_stream_did() -> None:
    # Device 0 steady, 1 a gap, 2 a clock reset, 3 its first samples,
    # 4 a NaN, 5 values huge but finite; device-last as the engine keeps them.
    t = 10.0 + 0.02 * np.arange(4)[:, None] + np.zeros((4, 6))
    t[2:, 1] += 0.4
    t[3, 2] -= 5.0
    acc = np.ones((4, 3, 6))
    acc[1, 2, 4] = np.nan
    acc[:, :, 5] = 1e308
    last = np.full(6, 10.0 - 0.02)
    last[3] = np.nan
    for kernel in (Kernel.NUMPY, Kernel.COMPILED):
        s = block_steps(t, acc, None, last, MAX_INTERVAL_S, kernel)
        assert s.finite.tolist() == [True, True, True, True, False, True]
        assert s.fresh.tolist() == [False, False, False, True, False, False]
        assert np.argwhere(s.breaks).tolist() == [[0, 3], [2, 1], [3, 2]]
        assert s.break_count == 3
        assert s.dt_s[0, 3] == np.inf and s.dt_s[3, 2] == pytest.approx(-4.98)
        picked = s.columns(np.array([2, 0]))
        assert picked.break_count == 1 and picked.breaks[3].tolist() == [True, False]


@pytest.mark.parametrize("device_last", [False, True], ids=["samples_first", "device_last"])
def test_batch_engine_drops_and_breaks_the_same_both_ways(
    monkeypatch: pytest.MonkeyPatch, device_last: bool
) -> None:
    # Ticks of subsets in any order, a NaN and an inf, gaps and a clock reset
    # (WARD's devices 1, 5, 9 and 2), empty blocks.
    devices = 10
    t_all, acc_all, gyr_all = (x[:devices].copy() for x in WARD)
    acc_all[3, 905, 1] = np.nan
    gyr_all[6, 1702, 2] = np.inf
    ref = engines(monkeypatch, Kernel.NUMPY, lambda: BatchEngine(CONFIG[True], devices))
    new = engines(monkeypatch, Kernel.COMPILED, lambda: BatchEngine(CONFIG[True], devices))
    assert ref._core.steps_kernel is Kernel.NUMPY
    assert new._core.steps_kernel is Kernel.COMPILED
    rng = np.random.default_rng(3)
    for sl in blocks(t_all.shape[1], [10, 10, 0, 7, 10]):
        rows = rng.permutation(devices)[: int(rng.integers(1, devices + 1))]
        rows = np.concatenate((rows, np.setdiff1d([3, 6], rows)))  # the poisoned ones
        t, acc, gyr = t_all[rows, sl], acc_all[rows, sl], gyr_all[rows, sl]
        b = ref.process(t, acc, gyr, devices=rows)
        if device_last:
            a = new.process_device_last(
                np.ascontiguousarray(t.T),
                np.ascontiguousarray(acc.transpose(1, 2, 0)),
                np.ascontiguousarray(gyr.transpose(1, 2, 0)),
                devices=rows,
            )
        else:
            a = new.process(t, acc, gyr, devices=rows)
        np.testing.assert_array_equal(a.dropped, b.dropped)
        np.testing.assert_array_equal(a.devices, b.devices)
        for r in range(rows.size):
            assert_same(a.device(r), b.device(r))
    for d in range(devices):
        assert new.stats(d) == ref.stats(d)
        assert new.dropped_blocks(d) == ref.dropped_blocks(d)
    assert [ref.dropped_blocks(d) for d in (3, 6)] == [1, 1]
    assert sum(ref.stats(d).gaps for d in range(devices)) >= 3
    assert ref.stats(2).clock_resets == 1
