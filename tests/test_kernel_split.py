"""``python -m lab.kernel_split``: every kernel of a block timed, the engine left as it was."""

from __future__ import annotations

import numpy as np
import pytest

import posture.kernels.gravity as gravity
from lab.blocked_layout import from_blocks
from lab.kernel_split import _device_last, main, split
from lab.minimal_pass import MinimalPass, Order
from posture.batch import BatchEngine
from posture.config import EngineConfig


def test_split_times_each_kernel_and_restores_them() -> None:
    kernel = gravity.gravity_gyro
    whole, kernels = split(devices=4, warm_s=1.0, seconds=1.0, cold=False)
    assert {"steps.block_steps", "gravity.gravity_gyro", "falls.fall_rows"} <= set(kernels)
    assert all(ns > 0.0 for ns in kernels.values())
    assert sum(kernels.values()) < whole
    # The engine's own kernels are back in their modules.
    assert gravity.gravity_gyro is kernel


def test_the_command_spins_between_blocks_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--devices", "4", "--warm", "1", "--seconds", "1", "--gap-ms", "5"]) == 0
    out = capsys.readouterr().out
    assert "4 devices, 10-sample blocks, after 1 s, a 5 ms spin between blocks" in out
    assert "gravity.gravity_gyro" in out and "outside the kernels" in out


def test_vqf_and_a_spin_between_blocks_are_one_or_the_other() -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--cold", "--gap-ms", "5"])
    assert refused.value.code == 2


def test_the_gravity_filter_can_be_timed_alone_on_both_layouts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--devices", "40", "--warm", "1", "--seconds", "1", "--gap-ms", "2", "--gravity-alone"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("GravityFilter alone, 40 devices, 10-sample blocks, 2 ms spin")
    assert "device-last arrays" in lines[1] and "lane blocks laid out" in lines[2]
    assert all(float(line.split()[-1]) > 0.0 for line in lines[1:3])


def test_the_gravity_kernel_gives_the_same_bits_on_a_blocked_layout() -> None:
    """Lane block by lane block on arrays laid out in blocks, the engine's
    gravity kernel computes what it computes on device-last arrays: the same
    outputs and state, bit for bit (the padded lanes aside)."""
    from lab.blocked_layout import gravity_by_lane_block, gravity_outputs, to_blocks
    from posture.orientation import GravityFilter, GravityFilterParams

    devices = 45  # one whole lane block and a padded one
    _, acc, gyr, _, _ = _device_last(devices, 2.0, 50.0)
    dt = np.full((10, devices), 0.02)
    gravity = GravityFilter(GravityFilterParams(sample_rate_hz=50.0, has_gyro=True), devices)
    args = gravity._bound_args(devices)
    state = tuple(to_blocks(np.array(a)) for a in args[:8])
    for a in range(0, 100, 10):
        expected = gravity.process(acc[a : a + 10], gyr[a : a + 10], dt)
        acc_b, gyr_b = to_blocks(acc[a : a + 10]), to_blocks(gyr[a : a + 10])
        outputs = gravity_outputs(acc_b)
        gravity_by_lane_block((acc_b, gyr_b, to_blocks(dt)), outputs, state, args[8:])
        got = [from_blocks(o, devices) for o in outputs]
        np.testing.assert_array_equal(got[0], expected.up_sensor)
        np.testing.assert_array_equal(got[1], expected.settled)
        np.testing.assert_array_equal(got[3], expected.acc_lp_g)
        np.testing.assert_array_equal(got[4], expected.acc_dev2_g2)
    for blocked, own in zip(state, gravity._bound_args(devices)[:8], strict=True):
        np.testing.assert_array_equal(from_blocks(blocked, devices), own)


def test_vqf_is_timed_whole_and_per_tick_on_the_same_ward(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("vqf", reason="the bench extra (vqf) is not installed")
    assert main(["--devices", "3", "--warm", "1", "--seconds", "1", "--vqf", "--gap-ms", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("VQF updateBatch, 3 devices, 1 s timed after 1 s, 1 ms spin")
    whole, per_tick = (float(line.split()[-1]) for line in lines[1:3])
    assert "whole recording" in lines[1] and "10 samples a tick" in lines[2]
    assert whole > 0.0 and per_tick > 0.0


@pytest.mark.parametrize("other", [["--cold"], ["--gravity-alone"]])
def test_vqf_takes_neither_vqf_between_blocks_nor_the_gravity_filter(other: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--vqf", *other])
    assert refused.value.code == 2


def test_the_floor_is_timed_beside_the_engine_on_the_same_blocks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--devices", "40", "--warm", "1", "--seconds", "1", "--gap-ms", "1", "--floor"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("40 devices, 10-sample blocks, after 1 s, 1 ms spin before each")
    assert "B of state a device" in lines[0]
    labels = [line.rsplit(maxsplit=1)[0].strip() for line in lines[1:5]]
    assert labels == [
        "BatchEngine block",
        "least a block touches, each sample across the ward",
        "the same, lane block by lane block",
        "the same, lane blocks laid out contiguously",
    ]
    engine_ns, *passes_ns = (float(line.split()[-1]) for line in lines[1:5])
    # The passes do none of the stages' arithmetic: far below the engine.
    assert all(0.0 < ns < engine_ns for ns in passes_ns)


@pytest.mark.parametrize("order", list(Order))
def test_every_order_writes_the_same_values(order: Order) -> None:
    """The three passes differ in the order they touch the bytes, not in what
    they write: the fall ring, read back device by device, holds the same rows."""
    engine = BatchEngine(EngineConfig(sample_rate_hz=50.0, has_gyro=True), 37)
    t, acc, gyr, _, _ = _device_last(37, 1.0, 50.0)
    reference = MinimalPass(engine, Order.STREAM)
    other = MinimalPass(engine, order)
    for a in range(0, 30, 10):
        block = (t[a : a + 10], acc[a : a + 10], gyr[a : a + 10])
        reference.process(reference.layout(*block))
        other.process(other.layout(*block))
    assert _ring_by_device(other)[:30] == pytest.approx(_ring_by_device(reference)[:30])
    assert _ring_by_device(reference)[:30].any()


def _ring_by_device(minimal: MinimalPass) -> np.ndarray:
    """The pass's fall ring as (rows, 8, devices) whatever its layout."""
    ring: np.ndarray = minimal._ring
    if ring.ndim == 4:  # (R, blocks, 8, lanes): the block axis first for from_blocks
        return np.asarray(from_blocks(np.moveaxis(ring, 1, 0), minimal.devices))
    return np.asarray(ring[:, :, : minimal.devices])


def test_the_floor_touches_the_state_the_engine_keeps_besides_its_ring() -> None:
    from lab.minimal_pass import state_bytes_per_device

    engine = BatchEngine(EngineConfig(sample_rate_hz=50.0, has_gyro=True), 8)
    per_device = state_bytes_per_device(engine)
    falls = engine._core.falls.state
    ring = (falls.rows.nbytes + falls.t_s.nbytes) // 8
    # More than the gravity filter's state alone (31 float64 rows), far less than the ring.
    assert 31 * 8 < per_device < ring
    engine.add_device()  # the capacity doubles: still per device
    assert state_bytes_per_device(engine) == per_device


def test_the_floor_takes_no_vqf_between_blocks() -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--floor", "--cold"])
    assert refused.value.code == 2
