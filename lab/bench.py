"""``posture-monitor bench engine``: throughput and memory of the posture engine.

For each device count the benchmark creates that many
:class:`~posture.PostureEngine` instances and streams a synthetic trunk
recording (slow posture changes, walking bouts, sensor noise and gyroscope
bias; each device starts at a different point of it) in 10-sample packets,
round-robin across devices as a gateway would. It reports CPU time per
sample (samples per second per core), the share of one core a single
wearable at ``--rate`` needs, and the traced memory per device (Python
objects and NumPy buffers after warm-up, via :mod:`tracemalloc`). On the
same data, in the same run, it times VQF (``updateBatch`` over the whole
recording and per packet) and x-io Fusion (``imufusion``, per sample), as
reference ratios; both are compiled libraries, ours is NumPy.
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
from posture.config import EngineConfig
from posture.engine import PostureEngine

__all__ = ["configure_parser", "run", "synthetic_stream"]

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
    gc.collect()
    cpu0 = time.process_time()
    for rnd in range(1, rounds + 1):
        feed(rnd)
    cpu = time.process_time() - cpu0
    samples = rounds * devices * packet
    per_sample = cpu / samples
    return EngineResult(
        devices=devices,
        samples=samples,
        samples_per_s_per_core=1.0 / per_sample if per_sample > 0 else math.inf,
        us_per_sample=per_sample * 1e6,
        core_share_per_wearable=per_sample * rate_hz,
        memory_per_device_bytes=memory_per_device(min(devices, 50), rate_hz, has_gyro),
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


def bench_references(rate_hz: float, packet: int = PACKET) -> dict[str, float]:
    """Samples per second per core of VQF and imufusion on the benchmark data (if installed)."""
    t, acc, gyr = synthetic_stream(rate_hz)
    out: dict[str, float] = {}
    try:
        from vqf import VQF
    except ImportError:
        VQF = None
    if VQF is not None:
        gyr_rps = np.ascontiguousarray(np.radians(gyr))
        acc_mps2 = np.ascontiguousarray(acc * 9.81)
        cpu0 = time.process_time()
        VQF(1.0 / rate_hz).updateBatch(gyr_rps, acc_mps2)
        out["vqf_batch"] = t.size / max(time.process_time() - cpu0, 1e-9)
        vqf = VQF(1.0 / rate_hz)
        cpu0 = time.process_time()
        for i in range(0, t.size - packet + 1, packet):
            vqf.updateBatch(gyr_rps[i : i + packet], acc_mps2[i : i + packet])
        out["vqf_packets"] = t.size / max(time.process_time() - cpu0, 1e-9)
    try:
        import imufusion

        have_fusion = True
    except ImportError:
        have_fusion = False
    if have_fusion:
        ahrs = imufusion.Ahrs()
        settings = imufusion.AhrsSettings()
        settings.sample_rate = round(rate_hz)
        ahrs.set_settings(settings)
        cpu0 = time.process_time()
        for g, a in zip(gyr, acc, strict=True):
            ahrs.update_no_magnetometer(g, a)
        out["imufusion_per_sample"] = t.size / max(time.process_time() - cpu0, 1e-9)
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``engine`` subcommand to ``parser``."""
    sub = parser.add_subparsers(dest="bench_command", metavar="{engine}")
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
    eng.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print it; 0 on success, 2 on bad arguments."""
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
    refs = bench_references(args.rate, args.packet) if has_gyro else {}
    # The batched path (state laid out across devices), on its own synthetic
    # ward, with VQF's updateBatch timed on the same data in the same run.
    batched = [run_bench(devices=n, seconds=10.0, rate_hz=args.rate) for n in counts if n >= 10]
    single = results[0].samples_per_s_per_core
    report: dict[str, Any] = {
        "rate_hz": args.rate,
        "packet_samples": args.packet,
        "has_gyro": has_gyro,
        "engine": [asdict(r) for r in results],
        "batched_path": [asdict(b) for b in batched],
        "references_samples_per_s_per_core": refs,
        "reference_ratio_to_engine": {k: v / single for k, v in refs.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"PostureEngine at {args.rate:g} Hz, {args.packet}-sample packets, "
        f"{'gyroscope + accelerometer' if has_gyro else 'accelerometer only'} (CPU time)"
    )
    head = ("devices", "samples/s/core", "us/sample", "core/wearable", "memory/device")
    print(f"{head[0]:>8} {head[1]:>15} {head[2]:>10} {head[3]:>14} {head[4]:>14}")
    for r in results:
        print(
            f"{r.devices:>8} {r.samples_per_s_per_core:>15,.0f} {r.us_per_sample:>10.1f} "
            f"{r.core_share_per_wearable:>13.3%} {r.memory_per_device_bytes / 1024:>11.1f} KiB"
        )
    if batched:
        print("batched path (BatchEngine, gyroscope + accelerometer, wall time):")
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
    for name, rate in refs.items():
        print(
            f"reference {name:<22} {rate:>12,.0f} samples/s/core ({rate / single:,.1f}x the engine)"
        )
    return 0
