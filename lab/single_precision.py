"""What single precision would buy the gravity filter: speed and the error it costs.

Issue 13's target (the batched engine at five times VQF's ``updateBatch``)
is out of reach with the engine's double-precision arithmetic on these
machines (docs/architecture.md). One cheaper computation the issue's author
could allow is single precision: twice the lanes per AVX2 instruction and
half the bytes per sample. This module measures that for the stage that
costs most, the gravity filter, before anyone rewrites the engine for it:
:func:`gravity_gyro_single` runs the engine's gyroscope kernel
(:func:`posture.kernels.gravity.gravity_gyro`) in float32: its own
per-sample body and helpers, which numba compiles again for float32 arrays
(the body takes every constant in its workspace's precision), on a float32
workspace of :data:`SINGLE_LANES` devices.

``python -m lab.single_precision [--devices 1000] [--warm 30] [--seconds 20]
[--gap-ms 3]`` runs both kernels from the same fresh state over the
benchmark's synthetic ward in 10-sample blocks, alternately (the order
rotating every block, a spin of ``--gap-ms`` before each), in CPU time, and
reports what single precision changes over the whole run: the angle between
the two up directions (median, 99th percentile, largest; the direction
only, not float32's norm error), the samples and devices where it passes
1 degree, the low-passed accelerometer's largest difference, and the
samples whose rest or settled flag differs. Counts are float32 here, exact
to 2**24 samples (93 h at 50 Hz); an engine in single precision would keep
them as integers.

What it found (2026-12-07, 1000 devices): the kernel runs 1.6-1.7x as fast
(36-51 ns a sample after a 3 ms spin in double, 23-31 in single), and
the up direction typically stays within 0.005-0.007 deg of double
precision's (99th percentile 0.015 deg; within 1e-4 deg over the first
3 s, the differences growing as the bias estimates part); but the rest
detector is a threshold, and where rounding flips its decision (8 samples of
2.5 M over 50 s of the ward, 261 of 3 M over 60 s) the held gyroscope bias
differs from then on, and the two filters part by up to 10 deg for seconds
(5 devices of 1000 over 60 s). Single precision is therefore not "the same
results to floating-point tolerance": it changes events.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lab.kernel_split import _BLOCK, _block, _device_last, _spin, _warm_samples
from posture.kernels.gravity import (
    _ROWS,
    LANES,
    _copy_state,
    _gyro_samples,
    _start_fresh,
)
from posture.kernels.jit import kernel

__all__ = ["SINGLE_LANES", "compare", "gravity_gyro_single", "main"]

FloatArray = NDArray[np.floating[Any]]

SINGLE_LANES = 2 * LANES
"""Devices per lane block in single precision: the engine's workspace bytes,
twice its lanes (8 floats a ymm register). At 1000 devices after a 3 ms
spin, 64 lanes ran the kernel 1.6x as fast as double precision, 32 lanes
only 1.2-1.3x."""


@kernel
def gravity_gyro_single(
    data: tuple[Any, ...], outputs: tuple[Any, ...], state: tuple[Any, ...], coefficients: Any
) -> None:
    """:func:`posture.kernels.gravity.gravity_gyro` on its arguments grouped
    as its helpers take them (data, outputs, state, coefficients), every
    float array float32 (``lead_s``, ``fresh_dt_s`` np.float32): its steps,
    on a float32 workspace of :data:`SINGLE_LANES` lanes."""
    acc_g, gyr_dps = data[0], data[1]
    count, quiet_run, rest_lp = state[0], state[1], state[6]
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    _start_fresh(acc_g, gyr_dps, count, quiet_run, rest_lp, coefficients[0])
    w = np.empty((_ROWS, SINGLE_LANES), dtype=np.float32)
    for first in range(0, d_count, SINGLE_LANES):
        m = min(SINGLE_LANES, d_count - first)
        _copy_state(w, state, first, m, True)
        _gyro_samples(data, outputs, coefficients, w, first, m)
        _copy_state(w, state, first, m, False)
    for d in range(d_count):
        count[d] += n


def _outputs(n: int, devices: int, dtype: type) -> tuple[FloatArray, ...]:
    """Empty outputs of one block: up, settled, rest, low-passed acc, its deviation."""
    return (
        np.empty((n, 3, devices), dtype),
        np.empty((n, devices), bool),
        np.empty((n, devices), bool),
        np.empty((n, 3, devices), dtype),
        np.empty((n, devices), dtype),
    )


def _single(arg: object) -> object:
    """A kernel argument in single precision (integer arrays copied as they are)."""
    if isinstance(arg, np.ndarray) and arg.dtype == np.float64:
        return np.ascontiguousarray(arg, dtype=np.float32)
    if isinstance(arg, float):
        return np.float32(arg)
    return np.array(arg) if isinstance(arg, np.ndarray) else arg


def _in_turn(runs: dict[str, Callable[[int], None]], blocks: int, gap_ms: float) -> None:
    """Every block through every run, in an order that rotates from block to
    block, a spin of ``gap_ms`` before each (the runs time themselves)."""
    labels = list(runs)
    for b in range(blocks):
        shift = b % len(labels)
        for label in labels[shift:] + labels[:shift]:
            _spin(gap_ms / 1000.0)
            runs[label](b)


def compare(
    devices: int, warm_s: float, seconds: float, gap_ms: float, rate_hz: float = 50.0
) -> dict[str, float]:
    """Both kernels over the ward (module docstring): CPU ns per sample of
    each (after ``warm_s``), and what single precision changed over the
    whole run."""
    from posture.kernels.gravity import gravity_gyro
    from posture.orientation import GravityFilter, GravityFilterParams

    warm = _warm_samples(warm_s, rate_hz)
    _, acc, gyr, _, _ = _device_last(devices, warm_s + seconds, rate_hz)
    blocks = acc.shape[0] // _BLOCK
    dt = np.full((_BLOCK, devices), 1.0 / rate_hz)
    gravity = GravityFilter(GravityFilterParams(sample_rate_hz=rate_hz, has_gyro=True), devices)
    double_args = tuple(
        np.array(a) if isinstance(a, np.ndarray) else a for a in gravity._bound_args(devices)
    )
    single_args = tuple(_single(a) for a in double_args)
    # gravity_gyro's state arguments come first, its coefficients after.
    single_state, single_coefficients = single_args[:8], single_args[8:]
    acc32, gyr32, dt32 = (np.ascontiguousarray(a, dtype=np.float32) for a in (acc, gyr, dt))
    ups = {
        "double": np.empty((blocks * _BLOCK, 3, devices)),
        "single": np.empty((blocks * _BLOCK, 3, devices)),
    }
    lps = {k: np.empty_like(v) for k, v in ups.items()}
    flags = {k: np.empty((blocks * _BLOCK, 2, devices), bool) for k in ups}

    def double(a: FloatArray, g: FloatArray, out: tuple[FloatArray, ...]) -> None:
        gravity_gyro(a, g, dt, *out, *double_args)

    def single(a: FloatArray, g: FloatArray, out: tuple[FloatArray, ...]) -> None:
        gravity_gyro_single((a, g, dt32), out, single_state, single_coefficients)

    def arm(
        label: str,
        run: Callable[[FloatArray, FloatArray, tuple[FloatArray, ...]], None],
        data: tuple[FloatArray, FloatArray],
        dtype: type,
    ) -> Callable[[int], None]:
        def block(b: int) -> None:
            s = _block(b)
            out = _outputs(_BLOCK, devices, dtype)
            a, g = data[0][s], data[1][s]
            start = time.process_time_ns()
            run(a, g, out)
            if b >= first:
                spent[label] += time.process_time_ns() - start
            ups[label][s] = out[0]
            lps[label][s] = out[3]
            flags[label][s, 0] = out[1]
            flags[label][s, 1] = out[2]

        return block

    first = warm // _BLOCK
    spent = {"double": 0, "single": 0}
    runs = {
        "double": arm("double", double, (acc, gyr), np.float64),
        "single": arm("single", single, (acc32, gyr32), np.float32),
    }
    _in_turn(runs, blocks, gap_ms)
    samples = max((blocks - first) * _BLOCK * devices, 1)
    # atan2(|u x v|, u . v): exact for the tiny angles arccos rounds to zero.
    u, v = ups["double"], ups["single"]
    angle = np.degrees(
        np.arctan2(np.linalg.norm(np.cross(u, v, axis=1), axis=1), np.einsum("ncd,ncd->nd", u, v))
    )
    return {
        "double_ns": spent["double"] / samples,
        "single_ns": spent["single"] / samples,
        "up_deg_median": float(np.median(angle)),
        "up_deg_p99": float(np.percentile(angle, 99.0)),
        "up_deg_max": float(angle.max()),
        "samples_over_1deg": float(np.count_nonzero(angle > 1.0)),
        "devices_over_1deg": float(np.count_nonzero((angle > 1.0).any(axis=0))),
        "acc_lp_g": float(np.abs(lps["double"] - lps["single"]).max()),
        "settled_differ": float(np.count_nonzero(flags["double"][:, 0] != flags["single"][:, 0])),
        "rest_differ": float(np.count_nonzero(flags["double"][:, 1] != flags["single"][:, 1])),
        "samples": float(blocks * _BLOCK * devices),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.single_precision", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--warm", type=float, default=30.0, help="untimed seconds first (30)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds (20)")
    parser.add_argument("--gap-ms", type=float, default=3.0, help="spin before each block (3)")
    args = parser.parse_args(argv)
    started = time.process_time()
    r = compare(args.devices, args.warm, args.seconds, args.gap_ms)
    print(
        f"gravity filter kernel, {args.devices} devices, {_BLOCK}-sample blocks, "
        f"{args.gap_ms:g} ms spin before each; CPU ns per sample:"
    )
    print(f"  double precision (the engine's)   {r['double_ns']:6.1f}")
    print(f"  single precision                  {r['single_ns']:6.1f}")
    print(f"  ratio                             {r['double_ns'] / r['single_ns']:6.2f} x")
    print(f"over {r['samples']:,.0f} samples, single precision against double:")
    print(
        "  up direction's angle, median / 99th percentile / largest   "
        f"{r['up_deg_median']:.2g} / {r['up_deg_p99']:.2g} / {r['up_deg_max']:.2g} deg"
    )
    print(
        "  samples (devices) whose up direction differs by over 1 deg    "
        f"{r['samples_over_1deg']:.0f} ({r['devices_over_1deg']:.0f})"
    )
    print(f"  low-passed accelerometer, largest difference               {r['acc_lp_g']:.2g} g")
    print(f"  samples whose rest flag differs                            {r['rest_differ']:.0f}")
    print(f"  samples whose settled flag differs                         {r['settled_differ']:.0f}")
    print(f"({time.process_time() - started:.0f} s of CPU, compiling included)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
