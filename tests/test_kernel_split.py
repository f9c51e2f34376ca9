"""``python -m lab.kernel_split``: every kernel of a block timed, the engine left as it was."""

from __future__ import annotations

import posture.kernels.gravity as gravity
from lab.kernel_split import split


def test_split_times_each_kernel_and_restores_them() -> None:
    kernel = gravity.gravity_gyro
    whole, kernels = split(devices=4, warm_s=1.0, seconds=1.0, cold=False)
    assert {"steps.block_steps", "gravity.gravity_gyro", "falls.fall_rows"} <= set(kernels)
    assert all(ns > 0.0 for ns in kernels.values())
    assert sum(kernels.values()) < whole
    # The engine's own kernels are back in their modules.
    assert gravity.gravity_gyro is kernel
