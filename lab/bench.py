"""``posture-monitor bench engine``: throughput and memory of the posture engine.

For each device count the benchmark creates that many
:class:`~posture.PostureEngine` instances and streams a synthetic trunk
recording (slow posture changes, walking bouts, sensor noise and gyroscope
bias; each device starts at a different point of it) in 10-sample packets,
round-robin across devices as a gateway would (``--packet`` sets the size). It reports CPU time per
sample (samples per second per core), the share of one core a single
wearable at ``--rate`` needs, and the traced memory per device (Python
objects and NumPy buffers after warm-up, via :mod:`tracemalloc`). On the
same data it times VQF, a compiled filter, as the reference: per packet
beside the single-device path and ``updateBatch`` over whole recordings
beside the batched path, each interleaved with ours (A/B/A/B) in CPU time so
the ratio holds on a shared, noisy machine. Every flag applies to both paths.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
import tracemalloc
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lab.batch_bench import run_bench, synthetic_devices
from lab.kernel_bench import (
    bench_angles,
    bench_engines,
    bench_fall_stage,
    bench_gravity,
    describe_first_call,
    first_call,
)
from posture.config import EngineConfig
from posture.engine import PostureEngine
from posture.kernels import compiled_available, selected_kernel

__all__ = ["bench_engine", "configure_parser", "run", "synthetic_stream"]

FloatArray = NDArray[np.float64]
PACKET = 10
_STREAM_S = 120.0


def synthetic_stream(
    rate_hz: float, seconds: float = _STREAM_S, seed: int = 0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """A realistic upper-back IMU recording: ``(t_s (n,), acc_g (n, 3), gyr_dps (n, 3))``.

    One wearable of the batched benchmark's ward, so both paths and the
    reference filters are measured on the same kind of data.
    """
    t, acc, gyr = synthetic_devices(1, seconds, rate_hz, seed)
    return t[0], acc[0], gyr[0]


@dataclass(frozen=True)
class EngineResult:
    devices: int
    samples: int
    samples_per_s_per_core: float
    us_per_sample: float
    core_share_per_wearable: float
    """Fraction of one core one wearable at the benchmark rate needs."""
    memory_per_device_bytes: float
    vqf_packets_samples_per_s: float
    """VQF ``updateBatch`` per packet on the same data, interleaved with ours (NaN without vqf)."""


def _engines(n: int, rate_hz: float, has_gyro: bool) -> list[PostureEngine]:
    return [
        PostureEngine(EngineConfig(sample_rate_hz=rate_hz, has_gyro=has_gyro)) for _ in range(n)
    ]


def bench_engine(
    devices: int,
    rate_hz: float,
    has_gyro: bool,
    min_samples: int = 30_000,
    packet: int = PACKET,
) -> EngineResult:
    """Stream ``packet``-sample blocks round-robin through ``devices`` engines;
    time the CPU spent."""
    t, acc, gyr = synthetic_stream(rate_hz)
    n = t.size
    engines = _engines(devices, rate_hz, has_gyro)
    offsets = (np.arange(devices) * 7919 * packet) % (n - packet)
    offsets -= offsets % packet
    rounds = max(1, math.ceil(min_samples / (devices * packet)))
    # Warm-up: one packet each (first-call allocations are not steady state).
    clock = np.zeros(devices)

    def feed(rnd: int) -> None:
        for d, eng in enumerate(engines):
            i = int((offsets[d] + rnd * packet) % (n - packet))
            sl = slice(i, i + packet)
            eng.process(clock[d] + t[:packet], acc[sl], gyr[sl] if has_gyro else None)
            clock[d] += packet / rate_hz

    feed(0)
    reference = _PacketReference(acc, gyr, rate_hz, packet)
    gc.collect()
    cpu = 0.0
    for rnd in range(1, rounds + 1):
        cpu0 = time.process_time()
        feed(rnd)
        cpu += time.process_time() - cpu0
        # A/B interleaved: the reference sees the same machine load as ours.
        reference.step(devices)
    samples = rounds * devices * packet
    per_sample = cpu / samples
    return EngineResult(
        devices=devices,
        samples=samples,
        samples_per_s_per_core=1.0 / per_sample if per_sample > 0 else math.inf,
        us_per_sample=per_sample * 1e6,
        core_share_per_wearable=per_sample * rate_hz,
        memory_per_device_bytes=memory_per_device(min(devices, 50), rate_hz, has_gyro),
        vqf_packets_samples_per_s=reference.samples_per_s,
    )


def memory_per_device(devices: int, rate_hz: float, has_gyro: bool) -> float:
    """Traced bytes per engine after 10 s of data (buffers full)."""
    t, acc, gyr = synthetic_stream(rate_hz, seconds=12.0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        engines = _engines(devices, rate_hz, has_gyro)
        for eng in engines:
            for i in range(0, t.size - PACKET + 1, PACKET):
                eng.process(
                    t[i : i + PACKET],
                    acc[i : i + PACKET],
                    gyr[i : i + PACKET] if has_gyro else None,
                )
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / devices


class _PacketReference:
    """VQF fed packet by packet, as our engine is, timed in CPU seconds between our rounds."""

    def __init__(self, acc: FloatArray, gyr: FloatArray, rate_hz: float, packet: int) -> None:
        self.cpu_s = 0.0
        self.samples = 0
        try:
            from vqf import VQF
        except ImportError:  # the bench extra is optional
            self._filter = None
            return
        self._filter = VQF(1.0 / rate_hz)
        self._acc_ms2 = np.ascontiguousarray(acc * 9.81)
        self._gyr_rps = np.ascontiguousarray(np.radians(gyr))
        self._packet = packet
        self._at = 0

    def step(self, packets: int) -> None:
        if self._filter is None:
            return
        n, k = self._acc_ms2.shape[0], self._packet
        cpu0 = time.process_time()
        for _ in range(packets):
            if self._at + k > n:
                self._at = 0
            self._filter.updateBatch(
                self._gyr_rps[self._at : self._at + k], self._acc_ms2[self._at : self._at + k]
            )
            self._at += k
        self.cpu_s += time.process_time() - cpu0
        self.samples += packets * k

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.cpu_s if self.samples and self.cpu_s > 0 else math.nan


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``engine`` subcommand to ``parser``."""
    sub = parser.add_subparsers(dest="bench_command", metavar="{engine,gateway,simulator}")
    sub.required = True
    eng = sub.add_parser(
        "engine", help="throughput and memory of PostureEngine", description=__doc__
    )
    eng.add_argument("--devices", default="1,10,100,1000", help="comma-separated device counts")
    eng.add_argument("--rate", type=float, default=50.0, help="wearable rate in Hz (50)")
    eng.add_argument("--acc-only", action="store_true", help="wearables without a gyroscope")
    eng.add_argument(
        "--packet",
        type=int,
        default=PACKET,
        help=f"samples per engine call on the single-device path ({PACKET}, one packet; "
        "the gateway hands a backlog over in one call)",
    )
    eng.add_argument(
        "--skip-first-call",
        action="store_true",
        help="leave out the compiled kernels' first-call cost (two fresh processes, "
        "one compiling every kernel: about half a minute)",
    )
    eng.add_argument("--json", action="store_true", help="print JSON instead of a table")
    from lab import gateway_bench

    gateway_bench.configure_gateway_parser(
        sub.add_parser(
            "gateway",
            help="the whole gateway path per wearable, to a real broker",
            description=gateway_bench.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    from lab import sim_bench

    sim_bench.configure_simulator_parser(
        sub.add_parser(
            "simulator",
            help="what the simulator costs per wearable, through the bleak backend",
            description=sim_bench.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print it; 0 on success, 2 on bad arguments."""
    if args.bench_command == "gateway":
        from lab.gateway_bench import run_gateway

        return run_gateway(args)
    if args.bench_command == "simulator":
        from lab.sim_bench import run_simulator

        return run_simulator(args)
    try:
        counts = [int(v) for v in str(args.devices).split(",") if v.strip()]
        if not counts or min(counts) < 1 or max(counts) > 100_000:
            raise ValueError
    except ValueError:
        print(f"bench engine: --devices must be counts like 1,10,100, got {args.devices!r}")
        return 2
    if not (math.isfinite(args.rate) and 10.0 <= args.rate <= 2000.0):
        print(f"bench engine: --rate must be in 10..2000 Hz, got {args.rate!r}")
        return 2
    if not 1 <= args.packet <= 1000:
        print(f"bench engine: --packet must be in 1..1000 samples, got {args.packet!r}")
        return 2
    has_gyro = not args.acc_only
    results = [bench_engine(n, args.rate, has_gyro, packet=args.packet) for n in counts]
    # The batched path (state laid out across devices) honours the same flags,
    # with VQF's updateBatch interleaved on the same data.
    batched = [
        run_bench(devices=n, seconds=10.0, rate_hz=args.rate, block=args.packet, has_gyro=has_gyro)
        for n in counts
        if n >= 10
    ]
    # The compiled kernel: its first-call cost (fresh processes) and what it
    # gives against the NumPy reference, alone and in the whole engine.
    kernel = selected_kernel()
    first = None if args.skip_first_call else first_call()
    many = max(counts)
    kernel_pairs = []
    if compiled_available():  # without numba "compiled" would time NumPy twice
        kernel_pairs = [
            bench_gravity(1, args.rate, has_gyro, block=args.packet, seconds=60.0),
            bench_fall_stage(1, args.rate, has_gyro, block=args.packet, seconds=60.0),
            bench_angles(1, args.rate, block=args.packet, seconds=60.0),
            bench_engines(1, args.rate, has_gyro, block=args.packet, seconds=60.0),
        ]
        if many > 1:
            kernel_pairs.insert(1, bench_gravity(many, args.rate, has_gyro, args.packet, 10.0))
            kernel_pairs.insert(3, bench_fall_stage(many, args.rate, has_gyro, args.packet, 10.0))
            kernel_pairs.insert(5, bench_angles(many, args.rate, args.packet, 10.0))
            kernel_pairs.append(bench_engines(many, args.rate, has_gyro, args.packet, 5.0, 5.0))
    report: dict[str, Any] = {
        "rate_hz": args.rate,
        "packet_samples": args.packet,
        "has_gyro": has_gyro,
        "kernel": kernel.value,
        "timing": "CPU time of this process; references interleaved A/B with ours",
        "compiled_kernel": None if first is None else asdict(first),
        "engine": [asdict(r) for r in results],
        "batched_path": [{**asdict(b), "ratio_vs_vqf": b.ratio_vs_vqf} for b in batched],
        "kernels": [{**asdict(k), "speedup": k.speedup} for k in kernel_pairs],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    sensors = "gyroscope + accelerometer" if has_gyro else "accelerometer only"
    print(
        f"PostureEngine at {args.rate:g} Hz, {args.packet}-sample packets, {sensors}, "
        f"{kernel.value} kernel (CPU time; VQF per packet interleaved on the same data)"
    )
    head = ("devices", "samples/s/core", "us/sample", "core/wearable", "memory/device", "x VQF")
    print(f"{head[0]:>8} {head[1]:>15} {head[2]:>10} {head[3]:>14} {head[4]:>14} {head[5]:>8}")
    for r in results:
        ratio = r.samples_per_s_per_core / r.vqf_packets_samples_per_s
        print(
            f"{r.devices:>8} {r.samples_per_s_per_core:>15,.0f} {r.us_per_sample:>10.1f} "
            f"{r.core_share_per_wearable:>13.3%} {r.memory_per_device_bytes / 1024:>11.1f} KiB "
            f"{ratio:>8.3f}"
        )
    if batched:
        print(
            f"batched path (BatchEngine, {sensors}, {kernel.value} kernel, CPU time, "
            "VQF updateBatch interleaved):"
        )
        print(
            f"{'devices':>8} {'samples/s':>12} {'x VQF batch':>12} {'w/o falls':>12} "
            f"{'x VQF':>7} {'memory/device':>14}"
        )
        for b in batched:
            print(
                f"{b.devices:>8} {b.batch_samples_per_s:>12,.0f} {b.ratio_vs_vqf:>12.2f} "
                f"{b.batch_without_falls_samples_per_s:>12,.0f} "
                f"{b.ratio_without_falls_vs_vqf:>7.2f} "
                f"{b.batch_memory_per_device_bytes / 1024:>11.1f} KiB"
            )
    if first is not None or not compiled_available():
        print(describe_first_call(first))
    if kernel_pairs:
        print(
            "compiled against NumPy, block by block in turn (CPU time; VQF updateBatch over "
            "whole recordings, same data):"
        )
        head = ("", "devices", "compiled/s", "NumPy/s", "x NumPy", "VQF/s")
        print(f"{head[0]:>16} {head[1]:>8} {head[2]:>12} {head[3]:>12} {head[4]:>8} {head[5]:>12}")
    for k in kernel_pairs:
        vqf = "" if math.isnan(k.vqf_samples_per_s) else f"{k.vqf_samples_per_s:>12,.0f}"
        print(
            f"{k.what:>16} {k.devices:>8} {k.compiled_samples_per_s:>12,.0f} "
            f"{k.numpy_samples_per_s:>12,.0f} {k.speedup:>8.2f} {vqf}"
        )
    return 0
