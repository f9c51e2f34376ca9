"""The batched engine's device-last entry (a gateway tick's layout) checks its
input as the samples-first one does, drops and logs the same blocks, and
leaves its inputs alone."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_posture_batch import CONFIG, WARD, assert_same, blocks

from posture import SampleError
from posture.batch import BatchEngine


def device_last(
    t: np.ndarray, acc: np.ndarray, gyr: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(S, n), (S, n, 3) as (n, S), (n, 3, S), C-contiguous."""
    return (
        np.ascontiguousarray(t.T),
        np.ascontiguousarray(acc.transpose(1, 2, 0)),
        None if gyr is None else np.ascontiguousarray(gyr.transpose(1, 2, 0)),
    )


@pytest.mark.parametrize(
    ("t_s", "acc", "gyr", "message"),
    [
        (np.zeros(10), np.zeros((10, 3, 2)), np.zeros((10, 3, 2)), r"t_s must have shape \(n, 2\)"),
        (np.zeros((10, 3)), np.zeros((10, 3, 3)), np.zeros((10, 3, 3)), "t_s must have shape"),
        (np.zeros((10, 2)), np.zeros((9, 3, 2)), None, r"acc_g must have shape \(10, 3, 2\)"),
        (np.zeros((10, 2)), np.zeros((10, 2, 3)), None, "acc_g must have shape"),
        (np.zeros((10, 2)), np.zeros((10, 3, 2)), np.zeros((10, 2)), "gyr_dps must have shape"),
        (np.zeros((10, 2)), np.zeros((10, 3, 2)), None, "configured with a gyroscope"),
        ([["a"]], np.zeros((10, 3, 2)), None, "numeric"),
    ],
)
def test_malformed_device_last_blocks_raise_a_clear_sample_error(
    t_s: object, acc: np.ndarray, gyr: np.ndarray | None, message: str
) -> None:
    batch = BatchEngine(CONFIG[True], 2)
    with pytest.raises(SampleError, match=message):
        batch.process_device_last(t_s, acc, gyr)  # type: ignore[arg-type]
    assert batch.stats(0).blocks == 0 and batch.stats(1).blocks == 0


def test_device_last_blocks_give_what_samples_first_blocks_give(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Gaps (devices 1, 5), a clock reset (device 2), a NaN (device 3), empty
    # blocks, subsets in any order; the logs name the engine's device index.
    devices = 6
    t_all, acc_all, gyr_all = (x[:devices].copy() for x in WARD)
    acc_all[3, 1203, 0] = np.nan
    ref, new = BatchEngine(CONFIG[True], devices), BatchEngine(CONFIG[True], devices)
    rng = np.random.default_rng(2)
    logs: list[list[str]] = []
    for sl in blocks(t_all.shape[1], [10, 0, 10, 3]):
        rows = np.concatenate(([5, 3, 2, 1], rng.permutation([0, 4])[: int(rng.integers(3))]))
        t, acc, gyr = t_all[rows, sl], acc_all[rows, sl], gyr_all[rows, sl]
        inputs = device_last(t, acc, gyr)
        copies = [x.copy() for x in inputs if x is not None]
        for engine, call in ((ref, ref.process), (new, new.process_device_last)):
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="posture"):
                if engine is ref:
                    b = call(t, acc, gyr, devices=rows)
                else:
                    a = call(*inputs, devices=rows)
            logs.append([r.getMessage() for r in caplog.records])
        assert logs[-1] == logs[-2]
        for before, after in zip(copies, inputs, strict=True):
            np.testing.assert_array_equal(before, after)
        np.testing.assert_array_equal(a.dropped, b.dropped)
        np.testing.assert_array_equal(a.devices, rows)
        for r in range(rows.size):
            assert_same(a.device(r), b.device(r))
    for d in range(devices):
        assert new.stats(d) == ref.stats(d)
        assert new.dropped_blocks(d) == ref.dropped_blocks(d)
    seen = [m for ms in logs for m in ms]
    assert any(m.startswith("device 2: wearable clock went back") for m in seen)
    assert any(m.startswith("device 1: gap of") for m in seen)
    assert any(m.startswith("device 5: gap of") for m in seen)
    assert any("non-finite samples (first: device 3)" in m for m in seen)
    assert new.dropped_blocks(3) == 1 and new.stats(2).clock_resets == 1
