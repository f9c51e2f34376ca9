"""Where a batched engine block's CPU time goes: each compiled kernel, and the rest.

``python -m lab.kernel_split [--devices 1000] [--warm 30] [--seconds 10] [--cold | --gap-ms MS]
[--gravity-alone | --vqf | --floor]``
runs :class:`~posture.batch.BatchEngine` over the benchmark's synthetic ward
(:func:`lab.batch_bench.synthetic_devices`, 10-sample blocks, the layout a
gateway tick hands it) and times every call of every kernel the
``posture.kernels`` modules export, in CPU time, after ``--warm`` seconds of
the ward (the default, 30, is ``bench engine``'s window: a ward that started
at once, still calibrating; 120 is a settled one). What is left of the
block's time is the Python and NumPy between the kernel calls. ``--cold``
runs VQF's ``updateBatch`` between blocks (untimed), as ``bench engine``
does, so each block starts with the caches another program left.
``--gap-ms MS`` instead spins for MS milliseconds between blocks on a few
KiB of its own, touching next to nothing of the engine's. On these shared
machines what a block loses is the time it waited, not what ran meanwhile
(2026-12-07, 1000 devices: 77 ns a sample straight after the last block,
104 after a 1 ms spin, 121 after 3 ms, 159 after 10 ms, 132 after VQF's
slice): a gateway, whose ticks are 200 ms apart, runs every block so.
``--gravity-alone`` times the gravity filter's kernel alone over the same
blocks, nothing else of the engine run (after a gap it too runs slow), on
the engine's device-last arrays and on the same arrays laid out in lane
blocks (:mod:`lab.blocked_layout`), alternately.
``--vqf`` times the reference instead, over the same ward, two ways: VQF's
``updateBatch`` over each device's whole timed recording (a fresh ``VQF``
per device, as ``bench engine`` calls it; ``--gap-ms`` between devices),
and as a gateway would call it, one ``VQF`` per device kept from tick to
tick and ``updateBatch`` on each device's 10 samples a tick (``--gap-ms``
between ticks). ``--floor`` times the engine's block and the least a block
must touch (:class:`lab.minimal_pass.MinimalPass`: the inputs, the outputs,
a fall history row per sample, every device's state once; no stage's
arithmetic) in three orders (streaming across the ward, lane block by lane
block as the engine's kernels go, lane blocks laid out contiguously) on the
same blocks, in rotating order, the ``--gap-ms`` spin before each: the
floor a fused pass of every stage would start from, and what its loops'
order costs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lab.batch_bench import _Vqf, synthetic_devices
from lab.minimal_pass import Block, MinimalPass, Order

__all__ = ["main", "split"]

FloatArray = NDArray[np.float64]

_FLOOR_LABELS = {
    Order.STREAM: "least a block touches, each sample across the ward",
    Order.LANES: "the same, lane block by lane block",
    Order.BLOCKED: "the same, lane blocks laid out contiguously",
}
_MODULES = ("steps", "gravity", "activity", "capture", "angles", "slouch", "falls")
_BLOCK = 10


def _timed(kernel: Any, label: str, spent: dict[str, int]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        start = time.process_time_ns()
        try:
            return kernel(*args)
        finally:
            spent[label] = spent.get(label, 0) + time.process_time_ns() - start

    return call


def _spin(seconds: float) -> None:
    """Keep the core busy for ``seconds`` of wall time, touching almost no memory."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _device_last(
    devices: int, seconds: float, rate_hz: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """The synthetic ward laid out as a gateway tick hands it, time first and
    device last: ``t (n, D)``, ``acc``, ``gyr`` (n, 3, D); and ``acc``,
    ``gyr`` as generated (D, n, 3), which VQF reads."""
    t, acc, gyr = synthetic_devices(devices, seconds, rate_hz)
    return (
        np.ascontiguousarray(t.T),
        np.ascontiguousarray(acc.transpose(1, 2, 0)),
        np.ascontiguousarray(gyr.transpose(1, 2, 0)),
        acc,
        gyr,
    )


def _block(b: int) -> slice:
    """The samples of block ``b``."""
    return slice(b * _BLOCK, (b + 1) * _BLOCK)


def _warm_samples(warm_s: float, rate_hz: float) -> int:
    """The untimed samples first: ``warm_s`` of them, in whole blocks."""
    return round(warm_s * rate_hz) // _BLOCK * _BLOCK


def _time_blocks(
    process: Callable[[slice], object],
    first: int,
    n: int,
    between: Callable[[], None],
    timing_starts: Callable[[], None] = lambda: None,
) -> tuple[int, int]:
    """``(CPU ns, blocks)`` of ``process`` over the blocks of samples
    ``first ... n - 1``, ``between`` run (untimed) after each; the blocks
    before ``first`` run untimed, then ``timing_starts``."""
    for a in range(0, first, _BLOCK):
        process(slice(a, a + _BLOCK))
    timing_starts()
    gc.collect()
    total = blocks = 0
    for a in range(first, n - _BLOCK + 1, _BLOCK):
        start = time.process_time_ns()
        process(slice(a, a + _BLOCK))
        total += time.process_time_ns() - start
        blocks += 1
        between()
    return total, blocks


def _time_in_turn(
    runs: dict[str, Callable[[int], object]], blocks: int, first: int, gap_ms: float
) -> dict[str, float]:
    """CPU ns of each of ``runs`` (called with a block number) summed over
    blocks ``first ...``: every block runs them all, in an order that rotates
    from block to block, a spin of ``gap_ms`` before each."""
    labels = list(runs)
    gap = _gap(gap_ms)
    spent = dict.fromkeys(labels, 0)
    for b in range(blocks):
        shift = b % len(labels)
        for label in labels[shift:] + labels[:shift]:
            gap()
            start = time.process_time_ns()
            runs[label](b)
            if b >= first:
                spent[label] += time.process_time_ns() - start
    return {label: float(ns) for label, ns in spent.items()}


def _gap(gap_ms: float) -> Callable[[], None]:
    return (lambda: _spin(gap_ms / 1000.0)) if gap_ms > 0.0 else (lambda: None)


def split(
    devices: int,
    warm_s: float,
    seconds: float,
    cold: bool,
    rate_hz: float = 50.0,
    gap_ms: float = 0.0,
) -> tuple[float, dict[str, float]]:
    """``(ns per sample of the whole block, {kernel: ns per sample})``;
    ``cold``: VQF between blocks; ``gap_ms``: a spin of that long instead."""
    spent: dict[str, int] = {}
    originals = []
    for name in _MODULES:
        module = importlib.import_module(f"posture.kernels.{name}")
        for export in module.__all__:
            kernel = getattr(module, export)
            if hasattr(kernel, "py_func"):  # a compiled kernel, not a constant
                originals.append((module, export, kernel))
                setattr(module, export, _timed(kernel, f"{name}.{export}", spent))
    try:
        from posture.batch import BatchEngine
        from posture.config import EngineConfig

        warm = _warm_samples(warm_s, rate_hz)
        t, acc, gyr, acc_rows, gyr_rows = _device_last(devices, warm_s + seconds, rate_hz)
        engine = BatchEngine(EngineConfig(sample_rate_hz=rate_hz, has_gyro=True), devices)

        def block(s: slice) -> object:
            return engine.process_device_last(t[s], acc[s], gyr[s])

        n = t.shape[0]
        vqf = _Vqf(acc_rows, gyr_rows, rate_hz, chunks=max((n - warm) // _BLOCK, 1))
        total, blocks = _time_blocks(
            block, warm, n, vqf.step if cold else _gap(gap_ms), timing_starts=spent.clear
        )
    finally:
        for module, export, kernel in originals:
            setattr(module, export, kernel)
    samples = max(blocks * _BLOCK * devices, 1)
    return total / samples, {k: v / samples for k, v in spent.items()}


def gravity_alone(
    devices: int, warm_s: float, seconds: float, gap_ms: float, rate_hz: float = 50.0
) -> tuple[float, float]:
    """CPU ns per sample of the gravity filter's kernel run alone over the
    ward's blocks, nothing else of the engine's: ``(device last, lane
    blocks)``, on the engine's device-last arrays (about 140 bytes a sample)
    and on the same arrays laid out in lane blocks
    (:func:`lab.blocked_layout.gravity_by_lane_block`; per real device, the
    padding to whole blocks charged), alternately, a spin of ``gap_ms``
    before each."""
    from lab.blocked_layout import gravity_by_lane_block, gravity_outputs, to_blocks
    from posture.orientation import GravityFilter, GravityFilterParams

    warm = _warm_samples(warm_s, rate_hz)
    _, acc, gyr, _, _ = _device_last(devices, warm_s + seconds, rate_hz)
    dt = np.full((_BLOCK, devices), 1.0 / rate_hz)
    gravity = GravityFilter(GravityFilterParams(sample_rate_hz=rate_hz, has_gyro=True), devices)
    # The blocked run keeps its own copy of the filter's fresh state, its
    # arrays and the ward's laid out in lane blocks beforehand (untimed).
    args = gravity._bound_args(devices)
    state = tuple(to_blocks(np.array(a)) for a in args[:8])
    coefficients = args[8:]
    dt_blocks = to_blocks(dt)
    layouts = [
        (to_blocks(acc[_block(b)]), to_blocks(gyr[_block(b)]))
        for b in range(acc.shape[0] // _BLOCK)
    ]

    def blocked(b: int) -> None:
        acc_b, gyr_b = layouts[b]
        outputs = gravity_outputs(acc_b)
        gravity_by_lane_block((acc_b, gyr_b, dt_blocks), outputs, state, coefficients)

    runs: dict[str, Callable[[int], object]] = {
        "device last": lambda b: gravity.process(acc[_block(b)], gyr[_block(b)], dt),
        "lane blocks": blocked,
    }
    first = warm // _BLOCK
    spent = _time_in_turn(runs, len(layouts), first, gap_ms)
    samples = max((len(layouts) - first) * _BLOCK * devices, 1)
    return spent["device last"] / samples, spent["lane blocks"] / samples


def vqf_two_ways(
    devices: int, warm_s: float, seconds: float, gap_ms: float, rate_hz: float = 50.0
) -> tuple[float, float]:
    """CPU ns per sample of VQF's ``updateBatch`` over the ward's timed
    samples: ``(whole recordings, per tick)`` (see the module docstring).

    Raises:
        ImportError: vqf is not installed (the ``bench`` extra).
    """
    from vqf import VQF

    warm = _warm_samples(warm_s, rate_hz)
    _, _, _, acc, gyr = _device_last(devices, warm_s + seconds, rate_hz)
    # VQF's units, each device's samples contiguous (as bench engine gives them).
    acc_ms2 = np.ascontiguousarray(acc * 9.81)
    gyr_rps = np.ascontiguousarray(np.radians(gyr))
    n = acc.shape[1]
    ts = 1.0 / rate_hz
    gap = _gap(gap_ms)

    gc.collect()
    whole = 0
    for d in range(devices):
        start = time.process_time_ns()
        VQF(ts).updateBatch(gyr_rps[d, warm:], acc_ms2[d, warm:])
        whole += time.process_time_ns() - start
        gap()

    filters = [VQF(ts) for _ in range(devices)]

    def tick(s: slice) -> None:
        for d, v in enumerate(filters):
            v.updateBatch(gyr_rps[d, s], acc_ms2[d, s])

    per_tick, ticks = _time_blocks(tick, warm, n, gap)
    samples = devices * (n - warm)
    return whole / max(samples, 1), per_tick / max(ticks * _BLOCK * devices, 1)


def _by_block(minimal: MinimalPass, layouts: list[Block]) -> Callable[[int], None]:
    """Run ``minimal`` on its ``b``-th block, laid out beforehand."""
    return lambda b: minimal.process(layouts[b])


def floor(
    devices: int, warm_s: float, seconds: float, gap_ms: float, rate_hz: float = 50.0
) -> tuple[dict[str, float], int]:
    """``({label: CPU ns per sample}, state bytes per device)``: the engine's
    block and :class:`~lab.minimal_pass.MinimalPass` in each of its orders
    over the ward's timed blocks, one after the other in an order that
    rotates every block, a spin of ``gap_ms`` before each."""
    from posture.batch import BatchEngine
    from posture.config import EngineConfig

    warm = _warm_samples(warm_s, rate_hz)
    t, acc, gyr, _, _ = _device_last(devices, warm_s + seconds, rate_hz)
    engine = BatchEngine(EngineConfig(sample_rate_hz=rate_hz, has_gyro=True), devices)
    passes = {order: MinimalPass(engine, order) for order in Order}
    # Each pass's blocks in its own layout, made before timing (a gateway
    # builds its tick in the layout its engine takes).
    blocks = {
        order: [
            p.layout(t[_block(b)], acc[_block(b)], gyr[_block(b)])
            for b in range(t.shape[0] // _BLOCK)
        ]
        for order, p in passes.items()
    }
    runs: dict[str, Callable[[int], object]] = {
        "BatchEngine block": lambda b: engine.process_device_last(
            t[_block(b)], acc[_block(b)], gyr[_block(b)]
        ),
        **{_FLOOR_LABELS[order]: _by_block(p, blocks[order]) for order, p in passes.items()},
    }
    count = len(blocks[Order.STREAM])
    first = warm // _BLOCK
    spent = _time_in_turn(runs, count, first, gap_ms)
    samples = max((count - first) * _BLOCK * devices, 1)
    return {label: ns / samples for label, ns in spent.items()}, passes[Order.STREAM].state_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.kernel_split", description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument(
        "--warm", type=float, default=30.0, help="untimed seconds of the ward first"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds")
    between = parser.add_mutually_exclusive_group()
    between.add_argument("--cold", action="store_true", help="VQF between blocks, as bench engine")
    between.add_argument(
        "--gap-ms", type=float, default=0.0, help="spin this long between blocks instead"
    )
    alone = parser.add_mutually_exclusive_group()
    alone.add_argument(
        "--gravity-alone",
        action="store_true",
        help="time only the gravity filter over the ward (with --gap-ms, gaps between blocks)",
    )
    alone.add_argument(
        "--vqf",
        action="store_true",
        help="time VQF over the ward instead: whole recordings, and per tick as a gateway would",
    )
    alone.add_argument(
        "--floor",
        action="store_true",
        help="time the engine and the least a block must touch, alternately (with --gap-ms)",
    )
    args = parser.parse_args(argv)
    if args.floor:
        if args.cold:
            parser.error("--floor takes --gap-ms, not --cold")
        figures, state_bytes = floor(args.devices, args.warm, args.seconds, args.gap_ms)
        print(
            f"{args.devices} devices, {_BLOCK}-sample blocks, after {args.warm:g} s, "
            f"{args.gap_ms:g} ms spin before each block, in rotating order; CPU ns per sample "
            f"(the passes: inputs, outputs, fall ring, {state_bytes} B of state a device):"
        )
        for label, ns in figures.items():
            print(f"  {label:<52} {ns:7.1f}")
        return 0
    if args.vqf:
        if args.cold:
            parser.error("--vqf takes --gap-ms, not --cold")
        try:
            whole_ns, tick_ns = vqf_two_ways(args.devices, args.warm, args.seconds, args.gap_ms)
        except ImportError:
            print("lab.kernel_split --vqf: vqf is not installed (pip install -e '.[bench]')")
            return 2
        print(
            f"VQF updateBatch, {args.devices} devices, {args.seconds:g} s timed after "
            f"{args.warm:g} s, {args.gap_ms:g} ms spin between calls; CPU ns per sample:"
        )
        print(f"  each device's whole recording, one call      {whole_ns:7.1f}")
        print(f"  each device's {_BLOCK} samples a tick, one VQF kept {tick_ns:7.1f}")
        return 0
    if args.gravity_alone:
        if args.cold:
            parser.error("--gravity-alone takes --gap-ms, not --cold")
        device_last_ns, blocked_ns = gravity_alone(
            args.devices, args.warm, args.seconds, args.gap_ms
        )
        print(
            f"GravityFilter alone, {args.devices} devices, {_BLOCK}-sample blocks, "
            f"{args.gap_ms:g} ms spin before each, alternately; CPU ns per sample:"
        )
        print(f"  device-last arrays (the engine's)     {device_last_ns:7.1f}")
        print(f"  the same kernel, lane blocks laid out {blocked_ns:7.1f}")
        return 0
    whole, kernels = split(args.devices, args.warm, args.seconds, args.cold, gap_ms=args.gap_ms)
    if args.cold:
        between_blocks = "cold (VQF between blocks)"
    elif args.gap_ms > 0.0:
        between_blocks = f"a {args.gap_ms:g} ms spin between blocks"
    else:
        between_blocks = "warm"
    inside = sum(kernels.values())
    print(
        f"BatchEngine, {args.devices} devices, {_BLOCK}-sample blocks, after {args.warm:g} s, "
        f"{between_blocks}; CPU ns per sample:"
    )
    print(f"  whole block                  {whole:7.1f}")
    for label, ns in sorted(kernels.items(), key=lambda item: -item[1]):
        print(f"  {label:<28} {ns:7.1f}")
    print(f"  outside the kernels          {whole - inside:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
