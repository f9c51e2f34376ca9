"""The compiled gravity filter equals the NumPy reference (posture.kernels.gravity)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import posture.kernels as kernels
from posture.kernels import KERNEL_ENV, Kernel, selected_kernel
from posture.orientation import GravityBlock, GravityFilter, GravityFilterParams, GravityState

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)

FS = 50.0


def stream(devices: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Still spells (rest: bias estimates), shaking, fast turns (over 11° a
    sample: the exact cos/sin), a gyroscope bias; (n, 3, D) and dt (n, D)."""
    rng = np.random.default_rng(seed)
    acc = rng.normal(0.0, 0.004, (n, 3, devices))
    tilt = rng.uniform(-0.5, 0.5, (3, devices))
    acc += tilt  # each device leans its own way
    acc[:, 2] += 1.0
    gyr = rng.normal(0.0, 0.3, (n, 3, devices)) + rng.normal(0.0, 1.0, (1, 3, devices))
    for _ in range(6):  # bouts of motion at random times, per device
        a = int(rng.integers(0, n - 60))
        dev = int(rng.integers(0, devices))
        length = int(rng.integers(5, 60))
        acc[a : a + length, :, dev] += rng.normal(0.0, 0.4, (length, 3))
        gyr[a : a + length, :, dev] += rng.normal(0.0, 80.0, (length, 3))
    for _ in range(3):
        a = int(rng.integers(0, n - 5))
        gyr[a : a + 3, :, int(rng.integers(0, devices))] = rng.choice([-1, 1], 3) * 900.0
    dt = np.full((n, devices), 1.0 / FS) + rng.normal(0.0, 1e-4, (n, devices))
    return acc, gyr, dt


def run(
    f: GravityFilter,
    acc: np.ndarray,
    gyr: np.ndarray | None,
    dt: np.ndarray,
    sizes: list[int],
    resets: dict[int, list[int]],
) -> GravityBlock:
    """The whole stream through ``f`` in blocks of ``sizes`` (cycled), resetting
    ``resets[a]`` before the block starting at sample ``a``; outputs joined."""
    parts = []
    a, k = 0, 0
    n = acc.shape[0]
    while a < n:
        b = min(n, a + sizes[k % len(sizes)])
        if a in resets:
            f.reset(np.array(resets[a]))
        parts.append(f.process(acc[a:b], None if gyr is None else gyr[a:b], dt[a:b]))
        a, k = b, k + 1
    return GravityBlock(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in GravityBlock.__slots__)
    )


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
@pytest.mark.parametrize("devices", [1, 3, 12], ids=["one", "few", "many"])
@pytest.mark.parametrize("lead_s", [0.0, 0.012], ids=["no_lead", "lead"])
def test_compiled_equals_reference(gyro: bool, devices: int, lead_s: float) -> None:
    if lead_s and not gyro:
        pytest.skip("the lead applies to the gyroscope")
    n = 1500
    acc, gyr, dt = stream(devices, n, seed=devices)
    params = GravityFilterParams(sample_rate_hz=FS, has_gyro=gyro, gyr_delay_s=lead_s)
    rng = np.random.default_rng(7)
    sizes = [int(s) for s in rng.integers(1, 60, 20)]
    starts = np.cumsum([0, *sizes * (n // sum(sizes) + 1)])
    resets = {
        int(a): rng.choice(devices, max(1, devices // 2), replace=False).tolist()
        for a in rng.choice(starts[(starts > 0) & (starts < n)], 4, replace=False)
    }
    g = gyr if gyro else None
    ref_filter = GravityFilter(params, devices, kernel="numpy")
    out_filter = GravityFilter(params, devices, kernel="compiled")
    ref = run(ref_filter, acc, g, dt, sizes, resets)
    out = run(out_filter, acc, g, dt, sizes, resets)
    np.testing.assert_allclose(out.up_sensor, ref.up_sensor, rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(out.acc_lp_g, ref.acc_lp_g, rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(out.acc_dev2_g2, ref.acc_dev2_g2, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(out.settled, ref.settled)
    np.testing.assert_array_equal(out.rest, ref.rest)
    # Worth something only if every branch ran: rest and motion, unsettled
    # starts after the resets.
    assert ref.rest.any() and not ref.rest.all()
    assert not ref.settled.all()
    # The state carried to the next block too, field by field.
    assert_states_close(out_filter.state, ref_filter.state)


def assert_states_close(out: GravityState, ref: GravityState) -> None:
    for name in GravityState.__slots__:
        a, b = getattr(out, name), getattr(ref, name)
        if a.dtype.kind == "i":
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    ("blocks", "left_over"),
    [(0, 1), (0, -1), (1, 0), (1, 1), (2, 7)],
    ids=["one", "partial", "block", "block_and_one", "blocks_and_more"],
)
@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
def test_compiled_equals_reference_around_lane_blocks(
    blocks: int, left_over: int, gyro: bool
) -> None:
    # Device counts around the kernel's lane blocks: devices left over alone,
    # whole blocks, whole blocks and some left over.
    from posture.kernels.gravity import LANES

    devices = blocks * LANES + (left_over % LANES)
    n = 1000
    acc, gyr, dt = stream(devices, n, seed=11 + devices)
    params = GravityFilterParams(sample_rate_hz=FS, has_gyro=gyro, gyr_delay_s=0.012 * gyro)
    g = gyr if gyro else None
    ref_filter = GravityFilter(params, devices, kernel="numpy")
    out_filter = GravityFilter(params, devices, kernel="compiled")
    resets = {120: list(range(0, devices, 3)), 640: [devices - 1]}
    ref = run(ref_filter, acc, g, dt, [10, 3, 25], resets)
    out = run(out_filter, acc, g, dt, [10, 3, 25], resets)
    np.testing.assert_allclose(out.up_sensor, ref.up_sensor, rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(out.acc_lp_g, ref.acc_lp_g, rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(out.acc_dev2_g2, ref.acc_dev2_g2, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(out.settled, ref.settled)
    np.testing.assert_array_equal(out.rest, ref.rest)
    assert_states_close(out_filter.state, ref_filter.state)
    assert ref.rest.any() and not ref.rest.all()


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
@pytest.mark.parametrize("devices", [2, 9])
def test_compiled_is_the_same_however_the_stream_is_cut(gyro: bool, devices: int) -> None:
    acc, gyr, dt = stream(devices, 600, seed=3)
    params = GravityFilterParams(sample_rate_hz=FS, has_gyro=gyro)
    g = gyr if gyro else None
    whole = run(GravityFilter(params, devices, kernel="compiled"), acc, g, dt, [600], {})
    cut = run(GravityFilter(params, devices, kernel="compiled"), acc, g, dt, [1, 10, 7, 33], {})
    # One pass per sample whatever the blocks: bitwise the same.
    for name in GravityBlock.__slots__:
        np.testing.assert_array_equal(getattr(cut, name), getattr(whole, name))


def test_the_gyroscope_filter_still_wants_a_gyroscope() -> None:
    f = GravityFilter(GravityFilterParams(sample_rate_hz=FS, has_gyro=True), 2, "compiled")
    with pytest.raises(ValueError, match="gyroscope"):
        f.process(np.zeros((3, 3, 2)), None, np.full((3, 2), 0.02))


def test_inputs_are_not_modified() -> None:
    acc, gyr, dt = stream(4, 100, seed=5)
    copies = acc.copy(), gyr.copy(), dt.copy()
    f = GravityFilter(GravityFilterParams(sample_rate_hz=FS, has_gyro=True), 4, "compiled")
    f.process(acc, gyr, dt)
    for a, b in zip((acc, gyr, dt), copies, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_kernel_is_chosen_by_argument_then_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert selected_kernel() is Kernel.COMPILED
    monkeypatch.setenv(KERNEL_ENV, "numpy")
    assert selected_kernel() is Kernel.NUMPY
    assert GravityFilter(GravityFilterParams(FS, True)).kernel is Kernel.NUMPY
    assert selected_kernel("compiled") is Kernel.COMPILED
    monkeypatch.setenv(KERNEL_ENV, "fortran")
    with pytest.raises(ValueError, match="POSTURE_KERNEL"):
        selected_kernel()
    # Where numba does not import, "compiled" runs the reference.
    monkeypatch.setattr(kernels, "compiled_available", lambda: False)
    assert selected_kernel("compiled") is Kernel.NUMPY


def test_without_numba_the_engine_runs_numpy_and_the_bench_says_so() -> None:
    # A fresh interpreter where numba cannot be imported (an exotic platform).
    script = (
        "import sys; sys.modules['numba'] = None\n"
        "from lab.kernel_bench import describe_first_call, first_call\n"
        "from posture.orientation import GravityFilter, GravityFilterParams\n"
        "print(GravityFilter(GravityFilterParams(50.0, True)).kernel.value)\n"
        "print(describe_first_call(first_call()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != KERNEL_ENV}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    kernel, summary = done.stdout.strip().splitlines()[-2:]
    assert kernel == "numpy"
    assert summary.startswith("compiled kernel: unavailable")


def test_warm_up_compiles_every_gravity_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from posture.kernels import gravity, warm_up

    monkeypatch.delenv(KERNEL_ENV, raising=False)
    ready_s = warm_up()
    assert ready_s is not None and ready_s >= 0.0
    assert gravity.gravity_gyro.signatures and gravity.gravity_acc_only.signatures
    monkeypatch.setenv(KERNEL_ENV, "numpy")
    assert warm_up() is None
