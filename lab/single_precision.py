"""What single precision would buy the gravity filter: speed and the error it costs.

Issue 13's target (the batched engine at five times VQF's ``updateBatch``)
is out of reach with the engine's double-precision arithmetic on these
machines (docs/architecture.md). One cheaper computation the issue's author
could allow is single precision: twice the lanes per AVX2 instruction and
half the bytes per sample. This module measures that for the stage that
costs most, the gravity filter, before anyone rewrites the engine for it:
:func:`gravity_gyro_single` is the engine's gyroscope kernel
(:func:`posture.kernels.gravity.gravity_gyro`) with every value, constant
and intermediate in float32 (the helpers are the engine's own, which numba
compiles for float32 arrays; only the per-sample body, whose literals
would otherwise promote the arithmetic to float64, is restated here).

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
import math
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from lab.kernel_split import _BLOCK, _block, _device_last, _spin, _warm_samples
from posture.kernels.gravity import (
    _BIAS,
    _COS,
    _GYR_PREV,
    _HALF2,
    _INERTIAL_LP,
    _INIT_SUM,
    _PHI,
    _QUAT,
    _REST,
    _REST_LP,
    _ROWS,
    _RUN,
    _SETTLED,
    _SINC,
    _SINCE,
    _UP,
    LANES,
    _acc_rest_lane,
    _copy_outputs,
    _copy_state,
    _lowpass_or_mean,
    _start_fresh,
    _sum_sq,
)
from posture.kernels.jit import helper, kernel, select
from posture.kernels.lanes import biquad_lane

__all__ = ["compare", "gravity_gyro_single", "main"]

FloatArray = NDArray[np.floating[Any]]


def _f32(x: float) -> float:
    """``x`` as an np.float32 (typed as the float it stands for)."""
    return cast(float, np.float32(x))


# The engine kernel's constants, in single precision (numba types a global
# np.float32 as float32, a Python float as float64).
_DEG = _f32(math.pi / 180.0)
_ZERO, _ONE, _HALF, _QUARTER, _TWELFTH = (
    _f32(0.0),
    _f32(1.0),
    _f32(0.5),
    _f32(0.25),
    _f32(1.0 / 12.0),
)
_C0, _C1, _C2, _C3, _C4 = (
    _f32(1.0 / 40320.0),
    _f32(-1.0 / 720.0),
    _f32(1.0 / 24.0),
    _f32(-0.5),
    _f32(1.0),
)
_S0, _S1, _S2, _S3, _S4 = (
    _f32(1.0 / 362880.0),
    _f32(-1.0 / 5040.0),
    _f32(1.0 / 120.0),
    _f32(-1.0 / 6.0),
    _f32(1.0),
)
_SERIES_MAX_HALF2 = _f32(0.1 * 0.1)

SINGLE_LANES = 2 * LANES
"""Devices per lane block in single precision: the engine's workspace bytes,
twice its lanes (8 floats a ymm register). At 1000 devices after a 3 ms
spin, 64 lanes ran the kernel 1.6x as fast as double precision, 32 lanes
only 1.2-1.3x."""


@helper
def _samples_single(data: Any, outputs: Any, coefficients: Any, w: Any, first: int, m: int) -> None:
    """The engine's ``_gyro_samples``, term by term, in float32."""
    acc_g, gyr_dps, dt_s = data
    rest_sos, inertial_sos, thresholds, samples, lead_s, fresh_dt_s = coefficients
    n = acc_g.shape[0]
    rb0, rb1, rb2, ra1, ra2 = rest_sos[0], rest_sos[1], rest_sos[2], rest_sos[3], rest_sos[4]
    ib0, ib1, ib2 = inertial_sos[0], inertial_sos[1], inertial_sos[2]
    ia1, ia2, iz0, iz1 = inertial_sos[3], inertial_sos[4], inertial_sos[5], inertial_sos[6]
    rest_acc2, rest_gyr2, bias_clip2 = thresholds[0], thresholds[1], thresholds[2]
    rest_samples = samples[0]
    init_samples = samples[1]
    settle_samples = samples[2]
    base = np.uint64(first)
    for i in range(n):
        for lane in range(m):
            d = base + np.uint64(lane)
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            g0 = gyr_dps[i, 0, d] * _DEG
            g1 = gyr_dps[i, 1, d] * _DEG
            g2 = gyr_dps[i, 2, d] * _DEG
            dt_in = dt_s[i, d]
            acc_dev2 = _acc_rest_lane(w, lane, 6, a0, a1, a2, rest_sos)
            h0 = biquad_lane(w, _REST_LP + 3, _REST_LP + 9, lane, g0, rb0, rb1, rb2, ra1, ra2)
            h1 = biquad_lane(w, _REST_LP + 4, _REST_LP + 10, lane, g1, rb0, rb1, rb2, ra1, ra2)
            h2 = biquad_lane(w, _REST_LP + 5, _REST_LP + 11, lane, g2, rb0, rb1, rb2, ra1, ra2)
            quiet = (
                (acc_dev2 < rest_acc2)
                & (_sum_sq(g0 - h0, g1 - h1, g2 - h2) < rest_gyr2)
                & (_sum_sq(h0, h1, h2) < bias_clip2)
            )
            run = select(quiet, w[_RUN, lane] + _ONE, _ZERO)
            w[_RUN, lane] = run
            resting = run >= rest_samples
            w[_REST, lane] = select(resting, _ONE, _ZERO)
            b0 = select(resting, h0, w[_BIAS + 0, lane] + _ZERO)
            b1 = select(resting, h1, w[_BIAS + 1, lane] + _ZERO)
            b2 = select(resting, h2, w[_BIAS + 2, lane] + _ZERO)
            w[_BIAS + 0, lane] = b0
            w[_BIAS + 1, lane] = b1
            w[_BIAS + 2, lane] = b2
            r0 = g0 - b0
            r1 = g1 - b1
            r2 = g2 - b2
            p0 = w[_GYR_PREV + 0, lane]
            p1 = w[_GYR_PREV + 1, lane]
            p2 = w[_GYR_PREV + 2, lane]
            w[_GYR_PREV + 0, lane] = r0
            w[_GYR_PREV + 1, lane] = r1
            w[_GYR_PREV + 2, lane] = r2
            fresh = w[_SINCE, lane] == _ZERO
            dt = select(fresh, fresh_dt_s, dt_in)
            k = lead_s / dt
            s0 = (r0 - p0) * k
            s1 = (r1 - p1) * k
            s2 = (r2 - p2) * k
            p0 += s0
            p1 += s1
            p2 += s2
            r0 += s0
            r1 += s1
            r2 += s2
            half_dt = _HALF * dt
            cone = (dt * dt) * _TWELFTH
            q0 = p0 * cone
            q1 = p1 * cone
            q2 = p2 * cone
            v0 = (p0 + r0) * half_dt + (q1 * r2 - q2 * r1)
            v1 = (p1 + r1) * half_dt + (q2 * r0 - q0 * r2)
            v2 = (p2 + r2) * half_dt + (q0 * r1 - q1 * r0)
            v0 = select(fresh, _ZERO, v0)
            v1 = select(fresh, _ZERO, v1)
            v2 = select(fresh, _ZERO, v2)
            w[_PHI + 0, lane] = v0
            w[_PHI + 1, lane] = v1
            w[_PHI + 2, lane] = v2
            half2 = _sum_sq(v0, v1, v2) * _QUARTER
            w[_HALF2, lane] = half2
            w[_COS, lane] = (((half2 * _C0 + _C1) * half2 + _C2) * half2 + _C3) * half2 + _C4
            w[_SINC, lane] = (((half2 * _S0 + _S1) * half2 + _S2) * half2 + _S3) * half2 + _S4
        for lane in range(m):
            half2 = w[_HALF2, lane]
            if half2 > _SERIES_MAX_HALF2:
                half = math.sqrt(half2)
                w[_COS, lane] = math.cos(half)
                w[_SINC, lane] = math.sin(half) / half
        for lane in range(m):
            d = base + np.uint64(lane)
            since_reset = w[_SINCE, lane]
            half_sinc = w[_SINC, lane] * _HALF
            bw = w[_COS, lane]
            bx = w[_PHI + 0, lane] * half_sinc
            by = w[_PHI + 1, lane] * half_sinc
            bz = w[_PHI + 2, lane] * half_sinc
            qw = w[_QUAT + 0, lane]
            x = w[_QUAT + 1, lane]
            y = w[_QUAT + 2, lane]
            z = w[_QUAT + 3, lane]
            nw = ((qw * bw - x * bx) - y * by) - z * bz
            nx = ((qw * bx + x * bw) + y * bz) - z * by
            ny = ((qw * by - x * bz) + y * bw) + z * bx
            nz = ((qw * bz + x * by) - y * bx) + z * bw
            inv = _ONE / math.sqrt(((nw * nw + nx * nx) + ny * ny) + nz * nz)
            qw = nw * inv
            x = nx * inv
            y = ny * inv
            z = nz * inv
            w[_QUAT + 0, lane] = qw
            w[_QUAT + 1, lane] = x
            w[_QUAT + 2, lane] = y
            w[_QUAT + 3, lane] = z
            x2 = x + x
            y2 = y + y
            z2 = z + z
            xx = x * x2
            yy = y * y2
            zz = z * z2
            xy = x * y2
            xz = x * z2
            yz = y * z2
            wx = qw * x2
            wy = qw * y2
            wz = qw * z2
            m00 = (_ONE - yy) - zz
            m01 = xy - wz
            m02 = xz + wy
            m10 = xy + wz
            m11 = (_ONE - xx) - zz
            m12 = yz - wx
            m20 = xz - wy
            m21 = yz + wx
            m22 = (_ONE - xx) - yy
            a0 = acc_g[i, 0, d]
            a1 = acc_g[i, 1, d]
            a2 = acc_g[i, 2, d]
            e0 = (m00 * a0 + m01 * a1) + m02 * a2
            e1 = (m10 * a0 + m11 * a1) + m12 * a2
            e2 = (m20 * a0 + m21 * a1) + m22 * a2
            starting = since_reset < init_samples
            handover = since_reset + _ONE == init_samples
            seen = since_reset + _ONE
            t0 = w[_INIT_SUM + 0, lane]
            t1 = w[_INIT_SUM + 1, lane]
            t2 = w[_INIT_SUM + 2, lane]
            w[_INIT_SUM + 0, lane] = t0 + select(starting, e0, _ZERO)
            w[_INIT_SUM + 1, lane] = t1 + select(starting, e1, _ZERO)
            w[_INIT_SUM + 2, lane] = t2 + select(starting, e2, _ZERO)
            m0 = (t0 + e0) / seen
            m1 = (t1 + e1) / seen
            m2 = (t2 + e2) / seen
            l0 = _lowpass_or_mean(
                w, _INERTIAL_LP + 0, _INERTIAL_LP + 3, lane, e0, m0, starting, handover,
                ib0, ib1, ib2, ia1, ia2, iz0, iz1,
            )  # fmt: skip
            l1 = _lowpass_or_mean(
                w, _INERTIAL_LP + 1, _INERTIAL_LP + 4, lane, e1, m1, starting, handover,
                ib0, ib1, ib2, ia1, ia2, iz0, iz1,
            )  # fmt: skip
            l2 = _lowpass_or_mean(
                w, _INERTIAL_LP + 2, _INERTIAL_LP + 5, lane, e2, m2, starting, handover,
                ib0, ib1, ib2, ia1, ia2, iz0, iz1,
            )  # fmt: skip
            u0 = (m00 * l0 + m10 * l1) + m20 * l2
            u1 = (m01 * l0 + m11 * l1) + m21 * l2
            u2 = (m02 * l0 + m12 * l1) + m22 * l2
            norm = math.sqrt(_sum_sq(u0, u1, u2))
            w[_UP + 0, lane] = u0 / norm
            w[_UP + 1, lane] = u1 / norm
            w[_UP + 2, lane] = u2 / norm
            w[_SETTLED, lane] = select(since_reset >= settle_samples, _ONE, _ZERO)
            w[_SINCE, lane] = seen
        _copy_outputs(outputs, w, i, base, m)


@kernel
def gravity_gyro_single(
    acc_g: Any,
    gyr_dps: Any,
    dt_s: Any,
    up_out: Any,
    settled_out: Any,
    rest_out: Any,
    acc_lp_out: Any,
    acc_dev2_out: Any,
    count: Any,
    quiet_run: Any,
    quat_si: Any,
    gyr_prev_rps: Any,
    init_sum: Any,
    bias_rps: Any,
    rest_lp: Any,
    inertial_lp: Any,
    rest_sos: Any,
    inertial_sos: Any,
    thresholds: Any,
    samples: Any,
    lead_s: Any,
    fresh_dt_s: Any,
) -> None:
    """:func:`posture.kernels.gravity.gravity_gyro`'s arguments, every float
    array float32 (and ``lead_s``, ``fresh_dt_s`` np.float32); its driver,
    with a float32 workspace."""
    n = acc_g.shape[0]
    d_count = acc_g.shape[2]
    _start_fresh(acc_g, gyr_dps, count, quiet_run, rest_lp, rest_sos)
    data = (acc_g, gyr_dps, dt_s)
    outputs = (up_out, settled_out, rest_out, acc_lp_out, acc_dev2_out)
    state = (count, quiet_run, quat_si, gyr_prev_rps, init_sum, bias_rps, rest_lp, inertial_lp)
    coefficients = (rest_sos, inertial_sos, thresholds, samples, lead_s, fresh_dt_s)
    w = np.empty((_ROWS, SINGLE_LANES), dtype=np.float32)
    for first in range(0, d_count, SINGLE_LANES):
        m = min(SINGLE_LANES, d_count - first)
        _copy_state(w, state, first, m, True)
        _samples_single(data, outputs, coefficients, w, first, m)
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
    """A kernel argument in single precision (integer arrays as they are)."""
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
    # The sample counts (rest, start-up, settle) as floats too: the body
    # compares float counters with them.
    single_args = (*single_args[:-3], np.asarray(single_args[-3], np.float32), *single_args[-2:])
    acc32, gyr32, dt32 = (np.ascontiguousarray(a, dtype=np.float32) for a in (acc, gyr, dt))
    ups = {
        "double": np.empty((blocks * _BLOCK, 3, devices)),
        "single": np.empty((blocks * _BLOCK, 3, devices)),
    }
    lps = {k: np.empty_like(v) for k, v in ups.items()}
    flags = {k: np.empty((blocks * _BLOCK, 2, devices), bool) for k in ups}

    def arm(
        label: str,
        kernel: Callable[..., None],
        data: tuple[FloatArray, ...],
        args: tuple[object, ...],
        dtype: type,
    ) -> Callable[[int], None]:
        def block(b: int) -> None:
            s = _block(b)
            out = _outputs(_BLOCK, devices, dtype)
            a, g = data[0][s], data[1][s]
            start = time.process_time_ns()
            kernel(a, g, data[2], *out, *args)
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
        "double": arm("double", gravity_gyro, (acc, gyr, dt), double_args, np.float64),
        "single": arm("single", gravity_gyro_single, (acc32, gyr32, dt32), single_args, np.float32),
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
