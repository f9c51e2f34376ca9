"""The fall stage's compiled kernels (posture.kernels.falls) give what the NumPy
reference gives: the same float32 ring, bit for bit, the same peaks, and the
same findings at the same samples, on the simulated ward of
test_falls_batch, for any block split and any subset of devices."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from test_falls_batch import FS, Findings, collect, random_blocks, stage_inputs

import posture.kernels as kernels
from posture import state
from posture.falls import FallSettings, FallStage
from posture.falls.history import FallState
from posture.kernels import Kernel

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)


def pair(devices: int, *, screen: bool = True) -> tuple[FallStage, FallStage]:
    """(NumPy reference, compiled) stages of ``devices`` wearables."""
    return tuple(  # type: ignore[return-value]
        FallStage(FallSettings(), FS, devices, np.array([0.0, 1.0, 0.0]), screen=screen, kernel=k)
        for k in (Kernel.NUMPY, Kernel.COMPILED)
    )


def assert_same_state(a: FallState, b: FallState) -> None:
    assert a.rows.tobytes() == b.rows.tobytes()  # float32 bits, NaNs included
    np.testing.assert_array_equal(a.t_s, b.t_s)
    for name in ("seen", "peak_next", "last_trigger"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.prev_gyr_dps, b.prev_gyr_dps)


@pytest.mark.parametrize("screen", [True, False], ids=["screened", "everyone"])
@pytest.mark.parametrize("model", ["acc_gyro", "acc_only"])
def test_ward_findings_and_rings_identical(model: str, screen: bool) -> None:
    t, acc, gyr, up = stage_inputs(model)
    n, devices = t.shape
    ref, new = pair(devices, screen=screen)
    assert ref.kernel is Kernel.NUMPY and new.kernel is Kernel.COMPILED
    at = 1000  # half the devices get a calibrated upright inside a block
    results: list[Findings] = [{}, {}]
    for a, b in random_blocks(n, seed=7):
        changes = None
        if a < at < b:
            changes = {int(d): [(at - a, up[at, :, d] * 2.0)] for d in range(0, devices, 2)}
        g = None if gyr is None else gyr[a:b]
        for st, res in zip((ref, new), results, strict=True):
            collect(
                res,
                st.process(t[a:b], acc[a:b], g, up[a:b], references=changes),
                np.arange(devices),
            )
        assert_same_state(ref.state, new.state)
    assert results[0] == results[1]
    assert sum(1 for fs in results[0].values() for k, _, _ in fs if k == "detected") >= 6
    assert new.device_runs == ref.device_runs


def test_subsets_of_devices_identical() -> None:
    """Each tick only some devices have samples, in blocks of any size (rings
    at different rows, wrapping); devices listed out of order."""
    t, acc, gyr, up = stage_inputs("acc_gyro")
    assert gyr is not None
    n, devices = t.shape
    ref, new = pair(devices)
    rng = np.random.default_rng(11)
    pos = np.zeros(devices, dtype=int)
    results: list[Findings] = [{}, {}]
    while (pos < n).any():
        size = int(rng.choice([1, 5, 10, 19, 64]))
        ready = np.flatnonzero((pos + size <= n) & (rng.random(devices) < 0.6))
        if not ready.size:
            size, ready = 1, np.flatnonzero(pos < n)
        ready = rng.permutation(ready)
        rows = pos[ready][None, :] + np.arange(size)[:, None]
        block = (
            t[rows, ready],
            acc[rows, :, ready].transpose(0, 2, 1),
            gyr[rows, :, ready].transpose(0, 2, 1),
            up[rows, :, ready].transpose(0, 2, 1),
        )
        for st, res in zip((ref, new), results, strict=True):
            collect(res, st.process(*block, devices=ready), ready)
        pos[ready] += size
    assert_same_state(ref.state, new.state)
    assert results[0] == results[1]
    assert any(k == "detected" for fs in results[0].values() for k, _, _ in fs)


def test_whole_ward_out_of_step_then_in_step_identical() -> None:
    """Whole-ward blocks while the devices' rings are at different rows (the
    per-device loop), then in step again (the vectorised one), wrapping."""
    t, acc, gyr, up = stage_inputs("acc_gyro")
    assert gyr is not None
    devices = t.shape[1]
    ref, new = pair(devices)
    pos = np.zeros(devices, dtype=int)
    late = np.arange(0, devices, 2)

    def run(
        rows: NDArray[np.int64], cols: NDArray[np.int64], ids: NDArray[np.int64] | None
    ) -> None:
        block = (
            t[rows, cols],
            acc[rows, :, cols].transpose(0, 2, 1),
            gyr[rows, :, cols].transpose(0, 2, 1),
            up[rows, :, cols].transpose(0, 2, 1),
        )
        for st in (ref, new):
            st.process(*block, devices=ids)
        pos[cols] += rows.shape[0]

    every = np.arange(devices)
    run(np.arange(7)[:, None] + pos[late][None, :], late, late)
    for size in (10, 33, 50, 10, 50, 50):
        run(pos[None, :] + np.arange(size)[:, None], every, None)
        assert_same_state(ref.state, new.state)
    ahead = np.arange(1, devices, 2)
    run(np.arange(7)[:, None] + pos[ahead][None, :], ahead, ahead)
    for size in (10, 50, 50, 49, 50, 50, 50, 50, 10, 50, 50, 50, 50):
        run(pos[None, :] + np.arange(size)[:, None], every, None)
        assert_same_state(ref.state, new.state)
    assert (pos == pos[0]).all() and pos[0] > 2 * ref.state.ring_rows


def test_first_devices_in_step_identical() -> None:
    """Blocks of the state's first devices only (a state with room for more
    than are in use), in step: the vectorised path, the others untouched."""
    t, acc, gyr, up = stage_inputs("acc_gyro")
    assert gyr is not None
    devices = t.shape[1]
    ref, new = pair(devices)
    first = np.arange(devices - 1)
    a = 0
    for size in (10, 50, 33, 50, 50, 50, 50, 10, 50, 50, 50):
        block = (
            t[a : a + size, first],
            acc[a : a + size][..., first],
            gyr[a : a + size][..., first],
            up[a : a + size][..., first],
        )
        for st in (ref, new):
            st.process(*block, devices=first)
        assert_same_state(ref.state, new.state)
        a += size
    assert a > ref.state.ring_rows
    assert (new.state.seen[first] == a).all() and new.state.seen[-1] == 0


def test_taken_state_runs_compiled_the_same() -> None:
    """The engine runs a part of the state (posture.state.take / put): the
    compiled stage updates that part as the reference does."""
    t, acc, _, up = stage_inputs("acc_only")
    _, devices = t.shape
    ref, new = pair(devices)
    ready = np.arange(1, devices, 3)
    for a in range(0, 600, 10):
        b = a + 10
        for st in (ref, new):
            whole = st.state
            st.state = state.take(whole, ready)
            st.process(t[a:b, ready], acc[a:b][:, :, ready], None, up[a:b][:, :, ready])
            state.put(whole, ready, st.state)
            st.state = whole
    assert_same_state(ref.state, new.state)


def test_rows_of_awkward_samples_identical() -> None:
    """NaN and zero up vectors, saturated and repeated gyroscope readings,
    magnitudes at the trigger's float32 rounding."""
    rng = np.random.default_rng(3)
    n, devices = 40, 9
    ref, new = pair(devices)
    trig = FallSettings().trigger_acc_g
    for _ in range(3):
        t = np.cumsum(np.full((n, devices), 1.0 / FS), axis=0)
        acc = rng.normal(0.0, 1.0, (n, 3, devices))
        acc[::7, :, 2] = [trig, 0.0, 0.0]  # |a| exactly the trigger
        acc[::7, :, 0] = trig
        acc[::7, :, 1:] = 0.0
        up = rng.normal(0.0, 1.0, (n, 3, devices))
        up[:5, :, 0] = np.nan
        up[7, :, 1] = 0.0
        gyr = rng.normal(0.0, 100.0, (n, 3, devices))
        gyr[10:20, 1, :4] = 2000.0
        gyr[15:25, 2, 4:] = -2000.0
        gyr[0, :, 3] = 2000.0  # the same as the last sample of the block before
        for st in (ref, new):
            st.process(t, acc, gyr, up)
        assert_same_state(ref.state, new.state)
    assert (ref.state.rows[:, 7] == 1.0).any() and np.isnan(ref.state.rows[:, 4]).any()


@pytest.mark.parametrize(
    "settings",
    [
        FallSettings(),
        # The model and the soft rule out of the way: the hard impulse decides.
        FallSettings(min_fall_probability=1.0, soft_min_peak_lp_g=50.0),
        # Only the soft rule can pass a peak.
        FallSettings(min_fall_probability=1.0, unmoving_impulse_gs=50.0),
    ],
    ids=["default", "hard", "soft"],
)
def test_screen_kernel_decides_as_the_screen(settings: FallSettings) -> None:
    """fall_screen against PeakScreen.screen on random rings: walking-like and
    impact-like magnitudes, plateaus, young streams, cursors inside the piece,
    devices without a trigger since their cursor, busy devices and devices
    already marked; the spared devices' cursors move as _chunk moves them."""
    from posture.kernels.falls import fall_screen

    stage = FallStage(settings, FS, 1, np.array([0.0, 1.0, 0.0]), kernel=Kernel.NUMPY)
    screen = stage._screen
    back, merge = screen.back, screen.merge
    rng = np.random.default_rng(5)
    ring_len = 400
    decided = {"young": 0, "passed": 0, "dropped": 0}
    for trial in range(300):
        k = int(rng.integers(1, 12))
        n = int(rng.integers(1, 60))
        devices = k + 2
        ring = np.zeros((ring_len, 8, devices), dtype=np.float32)
        # Each device its own spread about 1 g: walking steps to hard impacts;
        # some rounded coarsely (plateaus).
        spread = rng.uniform(0.05, 1.2, devices)
        mag = np.abs(1.0 + spread * rng.standard_normal((ring_len, devices)))
        coarse = rng.random(devices) < 0.3
        mag[:, coarse] = np.round(mag[:, coarse], 1)
        ring[:, 3] = mag
        cols = rng.permutation(devices)[:k].astype(np.int64)
        first = rng.integers(0, 3 * ring_len, k)
        young = rng.random(k) < 0.2
        first[young] = rng.integers(0, back + merge, int(young.sum()))
        start = first - merge - back
        seen = np.zeros(devices, dtype=np.int64)
        seen[cols] = first + n
        peak_next = np.zeros(devices, dtype=np.int64)
        peak_next[cols] = start + rng.integers(0, back + n + 2, k)
        last_trigger = np.zeros(devices, dtype=np.int64)
        look = rng.random(k) < 0.85
        last_trigger[cols] = np.where(look, peak_next[cols], peak_next[cols] - 1)
        busy = rng.random(devices) < 0.1
        need = rng.random(k) < 0.1
        # What the NumPy screen and _chunk do.
        rows = back + n + merge
        at = (start[None, :] + np.arange(rows)[:, None]) % ring_len
        first_row = np.maximum(-start, 0)
        passes = screen.screen(
            ring[at, 3, cols[None, :]].astype(np.float64), first_row, peak_next[cols] - start
        )
        want = need | busy[cols] | (look & passes)
        want_next = peak_next.copy()
        spared = cols[~want]
        moved = spared[seen[spared] - 1 - merge >= peak_next[spared]]
        want_next[moved] = seen[moved] - merge
        has_peak = np.isin(
            np.arange(k), screen.peaks(ring[at, 3, cols[None, :]], first_row, first_row)[1]
        )
        decided["young"] += int(np.count_nonzero(passes & (first_row > 0)))
        decided["passed"] += int(np.count_nonzero(passes & (first_row == 0)))
        decided["dropped"] += int(np.count_nonzero(has_peak & ~passes))

        count = fall_screen(
            ring, cols, seen, peak_next, last_trigger, busy, n, screen.kernel_args, need
        )
        np.testing.assert_array_equal(need, want, err_msg=f"trial {trial}")
        assert count == np.count_nonzero(want)
        np.testing.assert_array_equal(peak_next, want_next, err_msg=f"trial {trial}")
    # Not vacuous: each way of deciding happened often.
    assert min(decided.values()) > 50, decided


def test_warm_up_compiles_the_fall_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    from posture.kernels import KERNEL_ENV, falls, warm_up

    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert warm_up() is not None
    assert falls.fall_rows.signatures and falls.fall_screen.signatures
