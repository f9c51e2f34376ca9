"""What fusing two of the engine's kernels buys: the gravity filter and the fall rows in one pass.

``python -m lab.fused_rows [--devices 1000] [--warm 60] [--seconds 20]
[--gap-ms 3] [--activity]`` runs, over the benchmark's synthetic ward in
10-sample blocks (a gateway tick of the whole ward), three arms on their own
copies of the same state, in an order that rotates every block, the
``--gap-ms`` spin before each:

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

With ``--activity`` the activity features (``activity_features``, the
stage between the two in the engine) run too, apart and in the laid-out
pass (the device-last fusion of the activity features with the gravity
filter was measured before: docs/architecture.md).

Every arm does the same arithmetic in the same order: the command checks
that the up directions, the gravity state, the rings and the fall cursors
(and the activity flags and state) are the same bits in every arm. It
prints CPU ns per sample of each arm: what fusing saves on the stages
easiest to measure, and whether it needs the blocked layout first (issue
13's plan, docs/architecture.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numba
import numpy as np
from numpy.typing import NDArray

from lab.blocked_layout import from_blocks, gravity_of_block, gravity_outputs, to_blocks
from lab.kernel_split import _BLOCK, _block, _device_last, _time_in_turn, _warm_samples
from posture.kernels.activity import activity_features
from posture.kernels.falls import _rows_in_step, fall_rows
from posture.kernels.gravity import (
    _ROWS,
    LANES,
    GyroCoefficients,
    _copy_state,
    _gyro_samples,
    _start_fresh,
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
    count = state[0]
    ring, ring_t_s, seen, prev_gyr, last_trigger = rows_state
    n = acc.shape[0]
    devices = acc.shape[2]
    _start_fresh(acc, gyr, count, state[1], state[6], coefficients[0])
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
    activity: tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], tuple[object, ...]],
    with_activity: bool,
) -> None:
    """The engine's ``gravity_gyro``, its ``activity_features`` (if
    ``with_activity``: ``activity`` its outputs, state and coefficients) and
    its ``fall_rows`` on each lane block of arrays laid out in blocks
    (:func:`lab.blocked_layout.to_blocks`; the times device first within a
    block): the kernels' own code, one block's memory at a time."""
    acc, gyr, dt, t_by_device = data
    up, settled = outputs[0], outputs[1]
    ring, ring_t_s, seen, prev_gyr, last_trigger = rows_state
    flags, feature_state, feature_coefficients = activity
    gait_sos, envelope_sos, feature_limits, feature_samples = feature_coefficients
    for b in range(acc.shape[0]):
        gravity_of_block(b, (acc, gyr, dt), outputs, state, coefficients)
        if with_activity:
            activity_features(
                acc[b], gyr[b], up[b], settled[b], True,
                flags[0][b], flags[1][b], flags[2][b], flags[3][b],
                feature_state[0][b], feature_state[1][b], feature_state[2][b],
                feature_state[3][b], feature_state[4][b], feature_state[5][b],
                feature_state[6][b],
                gait_sos, envelope_sos, feature_limits, feature_samples,
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
    "apart (the engine's kernels)",
    "fused, lane block by lane block",
    "fused, lane blocks laid out",
)
"""The arms, in order (with the activity features: the first and the last)."""


def _activity_flags(shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Empty outputs of ``activity_features`` (walking, gait, quiet, vigorous)
    of ``shape``: ``(n, D)``, or ``(blocks, n, lanes)`` laid out."""
    return tuple(np.empty(shape, dtype=bool) for _ in range(4))


def _flat_features(state: tuple[np.ndarray, ...], devices: int) -> tuple[np.ndarray, ...]:
    """The activity features' state as the kernel takes it for ``devices``
    devices (the last axis; a block axis before it, if any, kept): the
    low-pass states ``(..., 4, D)`` and ``(..., 2, 4 * D)``, the rest as kept."""
    gait_lp, envelope_lp, *rest = state
    lead = gait_lp.shape[:-3]
    return (
        gait_lp.reshape(*lead, -1, devices),
        envelope_lp.reshape(*lead, -1, 4 * devices),
        *rest,
    )


def arms(
    devices: int,
    warm_s: float,
    seconds: float,
    gap_ms: float,
    rate_hz: float = 50.0,
    activity: bool = False,
) -> dict[str, float]:
    """CPU ns per sample of each of :data:`ARMS` over the same blocks (module
    docstring; with ``activity``, the activity features run between the two
    stages in the first and the last arm, and the second is left out);
    raises AssertionError if the arms' results differ at all."""
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
    # The activity features' state as the engine keeps it (device last; the
    # kernel reads two of them flattened, which the blocked copies are too).
    feature_args = core.activity._bound_args(devices)[0]
    feature_fields = core.activity.state
    feature_state = tuple(
        getattr(feature_fields, name)
        for name in ("gait_lp", "envelope_lp", "prev_up", "fresh", "sign", "walk_run", "since_walk")
    )
    feature_coefficients = feature_args[7:]

    def fresh() -> tuple[tuple[np.ndarray, ...], ...]:
        return (
            tuple(np.array(a) for a in gravity_args[:8]),
            tuple(np.array(a) for a in rows_fields),
            tuple(np.array(a) for a in feature_state),
        )

    (g_apart, r_apart, a_apart), (g_fused, r_fused, _) = fresh(), fresh()
    g_laid, r_laid, a_laid = (tuple(to_blocks(a) for a in part) for part in fresh())
    a_apart_flat = _flat_features(a_apart, devices)
    a_laid_flat = _flat_features(a_laid, LANES)
    ups: dict[str, FloatArray] = {}
    flags: dict[str, tuple[np.ndarray, ...]] = {}
    apart_label, fused_label, laid_label = ARMS

    def apart(b: int) -> None:
        s = _block(b)
        out = _outputs(devices)
        gravity_gyro(acc[s], gyr[s], dt, *out, *g_apart, *coefficients)
        if activity:
            flags[apart_label] = _activity_flags((_BLOCK, devices))
            activity_features(
                acc[s], gyr[s], out[0], out[1], True, *flags[apart_label],
                *a_apart_flat, *feature_coefficients,
            )  # fmt: skip
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
        block_flags = _activity_flags(out[1].shape)
        _fused_by_lane_block(
            laid_out[b], out, g_laid, coefficients, r_laid, clip, trigger, lanes,
            (block_flags, a_laid_flat, feature_coefficients), activity,
        )  # fmt: skip
        ups[laid_label] = out[0]
        flags[laid_label] = block_flags

    runs: dict[str, Callable[[int], object]] = {
        apart_label: apart,
        fused_label: fused,
        laid_label: laid,
    }
    if activity:
        del runs[fused_label]
    first = warm // _BLOCK
    spent = _time_in_turn(runs, blocks, first, gap_ms)
    # Every arm's results, bit for bit the engine kernels'.
    reference = g_apart + r_apart + (a_apart if activity else ())
    if not activity:
        np.testing.assert_array_equal(ups[fused_label], ups[apart_label])
        for engine, fused_pass in zip(reference, g_fused + r_fused, strict=True):
            np.testing.assert_array_equal(fused_pass, engine)
    np.testing.assert_array_equal(from_blocks(ups[laid_label], devices), ups[apart_label])
    blocked = g_laid + r_laid + (a_laid if activity else ())
    for engine, laid_state in zip(reference, blocked, strict=True):
        np.testing.assert_array_equal(from_blocks(laid_state, devices), engine)
    if activity:
        for engine, laid_flag in zip(flags[apart_label], flags[laid_label], strict=True):
            np.testing.assert_array_equal(from_blocks(laid_flag, devices), engine)
    samples = max((blocks - first) * _BLOCK * devices, 1)
    return {label: ns / samples for label, ns in spent.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.fused_rows", description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--warm", type=float, default=60.0, help="untimed seconds first")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds")
    parser.add_argument("--gap-ms", type=float, default=3.0, help="spin before each block")
    parser.add_argument(
        "--activity",
        action="store_true",
        help="the activity features too, between the two (apart and laid out only)",
    )
    args = parser.parse_args(argv)
    figures = arms(args.devices, args.warm, args.seconds, args.gap_ms, activity=args.activity)
    stages = "gravity filter, activity features" if args.activity else "gravity filter"
    print(
        f"{stages} and fall rows, {args.devices} devices, {_BLOCK}-sample blocks, after "
        f"{args.warm:g} s, {args.gap_ms:g} ms spin before each, in rotating order; "
        "CPU ns per sample (the same bits both ways, checked):"
    )
    for label, ns in figures.items():
        print(f"  {label:<36} {ns:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
