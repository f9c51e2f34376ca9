"""What fusing two of the engine's kernels buys: the gravity filter and the fall rows in one pass.

``python -m lab.fused_rows [--devices 1000] [--warm 60] [--seconds 20] [--gap-ms 3]``
runs, over the benchmark's synthetic ward in 10-sample blocks (a gateway
tick of the whole ward), three arms on their own copies of the same state,
in an order that rotates every block, the ``--gap-ms`` spin before each:

* **apart**, as the engine runs them: ``posture.kernels.gravity.gravity_gyro``
  over every device, then ``posture.kernels.falls.fall_rows`` over every
  device (two sweeps of the ward: the second reads the block's
  accelerometer, gyroscope and up direction again);
* **fused, lane block by lane block** (:func:`gravity_and_rows`), on the
  same device-last arrays: one sweep, each lane block's fall rows written
  straight after its gravity filter by the two kernels' own bodies, while
  the block's samples and up directions are in the L1 cache;
* **fused, lane blocks laid out**: the two kernels themselves, block by
  block, on the tick, the state and the ring laid out in lane blocks
  (:func:`lab.blocked_layout.to_blocks`, ``(blocks, ..., LANES)``; built
  beforehand, as a gateway would build its tick; the padding to whole
  blocks charged).

Every arm does the same arithmetic in the same order: the command checks
that the up directions, the gravity state, the rings and the fall cursors
are the same bits in all three. It prints CPU ns per sample of each arm:
what fusing saves on the stage pair easiest to measure, and whether it needs
the blocked layout first (issue 13's plan, docs/architecture.md).
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
from numpy.typing import NDArray

from lab.blocked_layout import from_blocks, gravity_outputs, to_blocks
from lab.kernel_split import _BLOCK, _block, _device_last, _time_in_turn, _warm_samples
from posture.kernels.falls import _rows_in_step, fall_rows
from posture.kernels.gravity import (
    _DEG,
    _ROWS,
    LANES,
    GyroCoefficients,
    _copy_state,
    _gyro_samples,
    gravity_gyro,
)
from posture.kernels.jit import kernel

__all__ = ["ARMS", "arms", "gravity_and_rows", "main"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@kernel
def gravity_and_rows(
    data: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    outputs: tuple[FloatArray, ...],
    state: tuple[FloatArray, ...],
    coefficients: GyroCoefficients,
    rows_state: tuple[np.ndarray, ...],
    clip: float,
    trigger: float,
) -> None:
    """``gravity_gyro`` then ``fall_rows`` of a whole-ward tick (every device
    at one ring row) on the engine's device-last arrays, one lane block at a
    time: the gravity kernel's lane-block body, then the fall rows' in-step
    body for the same columns (:func:`posture.kernels.falls._rows_in_step`),
    while the block's samples and up directions are in the L1 cache."""
    acc, gyr, dt, t_by_device = data
    count, quiet_run, rest_lp = state[0], state[1], state[6]
    ring, ring_t_s, seen, prev_gyr, last_trigger = rows_state
    n = acc.shape[0]
    devices = acc.shape[2]
    rz0, rz1 = coefficients[0][5], coefficients[0][6]
    for d in range(devices):  # fresh devices, as gravity_gyro starts them
        if count[d] == 0:
            quiet_run[d] = 0
            for c in range(3):
                rest_lp[c][d] = rz0 * acc[0, c, d]
                rest_lp[6 + c][d] = rz1 * acc[0, c, d]
                g = gyr[0, c, d] * _DEG
                rest_lp[3 + c][d] = rz0 * g
                rest_lp[9 + c][d] = rz1 * g
    w = np.empty((_ROWS, LANES))
    for first in range(0, devices, LANES):
        m = min(LANES, devices - first)
        _copy_state(w, state, first, m, True)
        _gyro_samples((acc, gyr, dt), outputs, coefficients, w, first, m)
        _copy_state(w, state, first, m, False)
        _rows_in_step(
            t_by_device, acc, outputs[0], gyr, True, clip, trigger,
            ring, ring_t_s, seen, prev_gyr, last_trigger, (first, m),
        )  # fmt: skip
    for d in range(devices):
        count[d] += n


@numba.njit(nogil=True, error_model="numpy")
def _fused_by_lane_block(
    data: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    outputs: tuple[FloatArray, ...],
    state: tuple[FloatArray, ...],
    coefficients: tuple[object, ...],
    rows_state: tuple[np.ndarray, ...],
    clip: float,
    trigger: float,
    lanes: IntArray,
) -> None:
    """The engine's ``gravity_gyro`` then its ``fall_rows`` on each lane block
    of arrays laid out in blocks (:func:`lab.blocked_layout.to_blocks`; the
    times device first within a block): both kernels' own code, one block's
    memory at a time."""
    acc, gyr, dt, t_by_device = data
    up, settled, rest, acc_lp, acc_dev2 = outputs
    count, quiet_run, quat, gyr_prev, init_sum, bias, rest_lp, inertial_lp = state
    rest_sos, inertial_sos, thresholds, samples, lead_s, fresh_dt_s = coefficients
    ring, ring_t_s, seen, prev_gyr, last_trigger = rows_state
    for b in range(acc.shape[0]):
        gravity_gyro(
            acc[b], gyr[b], dt[b],
            up[b], settled[b], rest[b], acc_lp[b], acc_dev2[b],
            count[b], quiet_run[b], quat[b], gyr_prev[b], init_sum[b], bias[b],
            rest_lp[b], inertial_lp[b],
            rest_sos, inertial_sos, thresholds, samples, lead_s, fresh_dt_s,
        )  # fmt: skip
        fall_rows(
            t_by_device[b], acc[b], up[b], gyr[b], True, lanes, clip, trigger,
            ring[b], ring_t_s[b], seen[b], prev_gyr[b], last_trigger[b],
        )  # fmt: skip


def _outputs(devices: int) -> tuple[FloatArray, ...]:
    return (
        np.empty((_BLOCK, 3, devices)),
        np.empty((_BLOCK, devices), dtype=bool),
        np.empty((_BLOCK, devices), dtype=bool),
        np.empty((_BLOCK, 3, devices)),
        np.empty((_BLOCK, devices)),
    )


ARMS = (
    "apart (the engine's two kernels)",
    "fused, lane block by lane block",
    "fused, lane blocks laid out",
)


def arms(
    devices: int, warm_s: float, seconds: float, gap_ms: float, rate_hz: float = 50.0
) -> dict[str, float]:
    """CPU ns per sample of each of :data:`ARMS` over the same blocks (module
    docstring); raises AssertionError if the arms' results differ at all."""
    from posture.batch import BatchEngine
    from posture.config import EngineConfig

    warm = _warm_samples(warm_s, rate_hz)
    t, acc, gyr, _, _ = _device_last(devices, warm_s + seconds, rate_hz)
    blocks = acc.shape[0] // _BLOCK
    dt = np.full((_BLOCK, devices), 1.0 / rate_hz)
    # Each tick's times device first, as the engine hands them to fall_rows;
    # and the tick laid out in lane blocks (made beforehand, untimed, as a
    # gateway would build its tick so).
    t_rows = [np.ascontiguousarray(t[_block(b)].T) for b in range(blocks)]
    laid_out = [
        (
            to_blocks(acc[_block(b)]),
            to_blocks(gyr[_block(b)]),
            to_blocks(dt),
            np.ascontiguousarray(to_blocks(t[_block(b)]).transpose(0, 2, 1)),
        )
        for b in range(blocks)
    ]
    core = BatchEngine(EngineConfig(sample_rate_hz=rate_hz, has_gyro=True), devices)._core
    gravity_args = core.gravity._bound_args(devices)
    coefficients = gravity_args[8:]
    falls = core.falls
    clip, trigger = float(falls.settings.gyro_clip_min_dps), float(falls._trigger)
    cols = np.arange(devices, dtype=np.int64)
    lanes = np.arange(LANES, dtype=np.int64)
    st = falls.state
    rows_fields = (st.rows, st.t_s, st.seen, st.prev_gyr_dps, st.last_trigger)

    def fresh() -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        return tuple(np.array(a) for a in gravity_args[:8]), tuple(np.array(a) for a in rows_fields)

    (g_apart, r_apart), (g_fused, r_fused) = fresh(), fresh()
    g_laid = tuple(to_blocks(a) for a in g_apart)
    r_laid = tuple(to_blocks(a) for a in r_apart)
    ups: dict[str, FloatArray] = {}
    apart_label, fused_label, laid_label = ARMS

    def apart(b: int) -> None:
        s = _block(b)
        out = _outputs(devices)
        gravity_gyro(acc[s], gyr[s], dt, *out, *g_apart, *coefficients)
        fall_rows(t_rows[b], acc[s], out[0], gyr[s], True, cols, clip, trigger, *r_apart)
        ups[apart_label] = out[0]

    def fused(b: int) -> None:
        s = _block(b)
        out = _outputs(devices)
        gravity_and_rows(
            (acc[s], gyr[s], dt, t_rows[b]), out, g_fused, coefficients, r_fused, clip, trigger
        )
        ups[fused_label] = out[0]

    def laid(b: int) -> None:
        out = gravity_outputs(laid_out[b][0])
        _fused_by_lane_block(laid_out[b], out, g_laid, coefficients, r_laid, clip, trigger, lanes)
        ups[laid_label] = out[0]

    first = warm // _BLOCK
    spent = _time_in_turn(
        {apart_label: apart, fused_label: fused, laid_label: laid}, blocks, first, gap_ms
    )
    np.testing.assert_array_equal(ups[fused_label], ups[apart_label])
    np.testing.assert_array_equal(from_blocks(ups[laid_label], devices), ups[apart_label])
    for engine, fused_pass, blocked in zip(
        g_apart + r_apart, g_fused + r_fused, g_laid + r_laid, strict=True
    ):
        np.testing.assert_array_equal(fused_pass, engine)
        np.testing.assert_array_equal(from_blocks(blocked, devices), engine)
    samples = max((blocks - first) * _BLOCK * devices, 1)
    return {label: ns / samples for label, ns in spent.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.fused_rows", description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--warm", type=float, default=60.0, help="untimed seconds first")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds")
    parser.add_argument("--gap-ms", type=float, default=3.0, help="spin before each block")
    args = parser.parse_args(argv)
    figures = arms(args.devices, args.warm, args.seconds, args.gap_ms)
    print(
        f"gravity filter and fall rows, {args.devices} devices, {_BLOCK}-sample blocks, after "
        f"{args.warm:g} s, {args.gap_ms:g} ms spin before each, in rotating order; "
        "CPU ns per sample (the same bits both ways, checked):"
    )
    for label, ns in figures.items():
        print(f"  {label:<36} {ns:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
