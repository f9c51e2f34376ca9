"""The calibration capture's compiled runs (posture.kernels.capture) count what
the NumPy reference counts: the same quiet runs and walking bouts, carried
across blocks, for waiting and other devices. The whole engine both ways
(captures from still poses and from walking included) is
tests/test_kernel_engine.py."""

from __future__ import annotations

import numpy as np
import pytest

import posture.kernels as kernels
from posture.calibration import CalibrationSettings
from posture.capture import CalibrationCapture, Stage
from posture.kernels import Kernel

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)


def capture(kernel: Kernel) -> CalibrationCapture:
    return CalibrationCapture(
        CalibrationSettings(), 50.0, (0.0, 0.0, 1.0), auto=True, devices=7, kernel=kernel
    )


@pytest.mark.parametrize("gyro", [True, False], ids=["gyro", "acc_only"])
def test_runs_identical_on_random_blocks(gyro: bool) -> None:
    rng = np.random.default_rng(8)
    ref, new = capture(Kernel.NUMPY), capture(Kernel.COMPILED)
    assert new.kernel is Kernel.COMPILED
    quiet_seen = bouts_seen = 0
    for trial in range(300):
        n = int(rng.choice([1, 3, 10, 37]))
        d = 7
        # Mostly quiet samples near 1 g, some moving; |a|² right at the bounds too.
        acc = np.zeros((n, 3, d))
        acc[:, 2] = rng.choice([1.0, 1.0, 1.0, 1.3, 0.7], size=(n, d))
        acc[:, 0] = rng.normal(0.0, 0.02, (n, d))
        gyr = rng.choice([0.5, 1.0, 40.0], size=(n, 3, d)) if gyro else None
        dev2 = rng.choice([0.0, 1e-4, 0.5], size=(n, d))
        walking = rng.random((n, d)) < 0.8
        waiting = rng.random(d) < 0.6
        carried = rng.integers(0, 300, d)
        for c in (ref, new):
            c.state.still_run = carried.copy() if trial == 0 else c.state.still_run
            c.state.bout_run = np.where(waiting, np.arange(d) * 40, 0)
            c.state.stage = np.where(waiting, Stage.WAITING, Stage.PROVISIONAL).astype(np.int8)
        args = (acc, gyr, dev2, walking, waiting)
        want = ref._runs(*args, bool(waiting.any()))
        got = new._runs_compiled(*args)
        np.testing.assert_array_equal(got[0], want[0], err_msg=f"quiet run, trial {trial}")
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"walking bout, trial {trial}")
        for c, (run, _) in ((ref, want), (new, got)):
            c.state.still_run = run[-1].copy()
        quiet_seen += int(np.count_nonzero(want[0]))
        bouts_seen += int(np.count_nonzero(want[1]))
    assert quiet_seen > 1000 and bouts_seen > 1000


def test_warm_up_compiles_the_capture_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from posture.kernels import KERNEL_ENV, warm_up
    from posture.kernels import capture as capture_kernels

    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert warm_up() is not None
    assert capture_kernels.capture_runs.signatures
