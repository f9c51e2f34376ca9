"""Throughput and memory of the batched and single-device engines, against VQF.

``python -m lab.batch_bench --bench [--devices 1000] [--seconds 10] [--block 10]``
streams a synthetic upper-back recording (posture changes, walking bouts,
noise, gyroscope bias; every device starts at a different point of it and
wears its puck at a different spin) through

* :class:`~posture.batch.BatchEngine` over all devices, ``--block`` samples
  per device per call (a gateway tick), in the layout the gateway's tick
  hands it (:meth:`~posture.batch.BatchEngine.process_device_last`: time
  first, device last), timing the fall detectors apart;
* :class:`~posture.engine.PostureEngine`, one device in 10-sample packets;
* VQF's fastest path, ``VQF(Ts).updateBatch(gyr, acc)`` over each device's
  whole recording (a C++ loop), on the same samples, in the same run;

and reports samples per second, microseconds per sample, and the memory each
wearable costs (traced allocations of the engines after a warm-up). The
engines first run ``--warm`` seconds of the recording (calibrations settle),
then ``--seconds`` are timed. Times are CPU time of this process, ours and
VQF interleaved (A/B/A/B) so that a shared, noisy machine loads both alike;
run with ``OPENBLAS_NUM_THREADS=1`` for per-core figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from posture.batch import BatchEngine
from posture.config import EngineConfig
from posture.engine import PostureEngine

__all__ = ["BenchResult", "main", "run_bench", "synthetic_devices"]

FloatArray = NDArray[np.float64]
PACKET = 10


def synthetic_devices(
    devices: int, seconds: float, rate_hz: float, seed: int = 0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(t_s (D, n), acc_g (D, n, 3), gyr_dps (D, n, 3))`` of ``devices`` wearables.

    One 120 s trunk recording (slow bends and leans, walking bouts with
    vertical bounce and sway, sensor noise and gyroscope bias), each device
    starting at its own offset into it and with its puck spun by its own
    angle about the skin normal.
    """
    rng = np.random.default_rng(seed)
    base_n = round(120.0 * rate_hz)
    t = np.arange(base_n) / rate_hz
    walking = (np.sin(2 * np.pi * t / 40.0) > 0.3).astype(float)
    rotvec = np.stack(
        [
            np.radians(20) * np.sin(2 * np.pi * t / 23.0)
            + np.radians(3) * walking * np.sin(2 * np.pi * 0.9 * t),
            np.radians(8) * np.sin(2 * np.pi * t / 31.0),
            np.radians(30) * np.sin(2 * np.pi * t / 57.0),
        ],
        axis=1,
    )
    # Sensor -> world (z up); the nominal mounting's sensor y is up (the
    # -90° turn about x), z points out of the back.
    rot = Rotation.from_rotvec(rotvec) * Rotation.from_euler("x", -90.0, degrees=True)
    world_acc = np.zeros((base_n, 3))
    world_acc[:, 2] = 1.0 + 0.3 * walking * np.sin(2 * np.pi * 1.8 * t)
    world_acc[:, 0] = 0.15 * walking * np.sin(2 * np.pi * 0.9 * t)
    acc = rot.inv().apply(world_acc)
    dq = (rot[1:] * rot[:-1].inv()).as_rotvec()
    omega = np.vstack([dq[:1], dq]) * rate_hz
    gyr = np.degrees(rot.inv().apply(omega))
    n = round(seconds * rate_hz)
    idx = (rng.integers(0, base_n, devices)[:, None] + np.arange(n)[None, :]) % base_n
    spins = Rotation.from_euler("z", rng.uniform(0.0, 360.0, (devices, 1)), degrees=True)
    spin_m = spins.as_matrix()  # (D, 3, 3), nominal sensor -> spun sensor
    acc_d = np.einsum("dij,dnj->dni", spin_m, acc[idx]) + rng.normal(0, 0.01, (devices, n, 3))
    gyr_d = np.einsum("dij,dnj->dni", spin_m, gyr[idx]) + rng.normal(0, 0.3, (devices, n, 3))
    gyr_d += rng.normal(0.0, 0.5, (devices, 1, 3))
    t_d = np.broadcast_to(np.arange(n) / rate_hz, (devices, n)).copy()
    return t_d, acc_d, gyr_d


@dataclass(frozen=True)
class BenchResult:
    devices: int
    block: int
    rate_hz: float
    has_gyro: bool
    batch_samples_per_s: float
    """Whole batched engine (fall detectors included), per CPU second."""
    batch_without_falls_samples_per_s: float
    """The batched numerics alone: the same engine with its per-device fall detectors left out."""
    falls_us_per_device_block: float
    vqf_batch_samples_per_s: float
    """VQF ``updateBatch`` (6-axis), same data, interleaved, per CPU second; NaN without vqf."""
    single_us_per_sample: float
    """PostureEngine, one wearable, ``block``-sample packets, whole engine."""
    single_core_share_per_wearable: float
    batch_memory_per_device_bytes: float
    single_memory_bytes: float

    @property
    def ratio_vs_vqf(self) -> float:
        return self.batch_samples_per_s / self.vqf_batch_samples_per_s

    @property
    def ratio_without_falls_vs_vqf(self) -> float:
        return self.batch_without_falls_samples_per_s / self.vqf_batch_samples_per_s


class _Vqf:
    """VQF's ``updateBatch`` over whole device recordings, timed in CPU seconds.

    The reference is interleaved with our engine (one device chunk of VQF after
    each time slice of ours), so both see the same machine load: on a shared
    machine a ratio from two runs minutes apart is mostly noise.
    """

    def __init__(self, acc: FloatArray, gyr: FloatArray, rate_hz: float, chunks: int) -> None:
        self.cpu_s = 0.0
        self.samples = 0
        try:
            from vqf import VQF
        except ImportError:  # the bench extra is optional
            self._vqf = None
            return
        self._vqf = VQF
        self._rate_hz = rate_hz
        self._acc_ms2 = np.ascontiguousarray(acc * 9.81)
        self._gyr_rps = np.ascontiguousarray(np.radians(gyr))
        self._bounds = np.linspace(0, acc.shape[0], max(chunks, 1) + 1).round().astype(int)
        self._next = 0

    def step(self) -> None:
        """Run the next chunk of devices (nothing once all have run)."""
        if self._vqf is None or self._next >= self._bounds.size - 1:
            return
        lo, hi = self._bounds[self._next], self._bounds[self._next + 1]
        self._next += 1
        cpu0 = time.process_time()
        for d in range(lo, hi):
            self._vqf(1.0 / self._rate_hz).updateBatch(self._gyr_rps[d], self._acc_ms2[d])
        self.cpu_s += time.process_time() - cpu0
        self.samples += int(hi - lo) * self._acc_ms2.shape[1]

    def finish(self) -> None:
        while self._vqf is not None and self._next < self._bounds.size - 1:
            self.step()

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.cpu_s if self.samples and self.cpu_s > 0 else math.nan


def _time_batch(
    engine: BatchEngine,
    t: FloatArray,
    acc: FloatArray,
    gyr: FloatArray | None,
    warm: int,
    block: int,
    between: Callable[[], None] = lambda: None,
) -> tuple[float, int]:
    """Warm up on ``warm`` samples, then time the rest in CPU seconds: ``(seconds, blocks)``.

    ``between`` runs (untimed) after every timed block: the interleaved reference.
    """

    # The layout a gateway's tick hands the engine (time first, device last),
    # made once, untimed: VQF likewise gets each device's samples contiguous.
    t_last = np.ascontiguousarray(t.T)
    acc_last = np.ascontiguousarray(acc.transpose(1, 2, 0))
    gyr_last = None if gyr is None else np.ascontiguousarray(gyr.transpose(1, 2, 0))

    def run(a: int) -> None:
        b = a + block
        engine.process_device_last(
            t_last[a:b], acc_last[a:b], None if gyr_last is None else gyr_last[a:b]
        )

    n = t.shape[1]
    for a in range(0, warm, block):
        run(a)
    gc.collect()
    cpu = 0.0
    blocks = 0
    for a in range(warm, n - block + 1, block):
        cpu0 = time.process_time()
        run(a)
        cpu += time.process_time() - cpu0
        blocks += 1
        between()
    return cpu, blocks


def run_bench(
    devices: int = 1000,
    seconds: float = 10.0,
    block: int = 10,
    rate_hz: float = 50.0,
    warm_s: float = 30.0,
    has_gyro: bool = True,
) -> BenchResult:
    """Measure (see the module docstring). All times are CPU time of this process."""
    t, acc, gyr_full = synthetic_devices(devices, warm_s + seconds, rate_hz)
    gyr = gyr_full if has_gyro else None
    config = EngineConfig(sample_rate_hz=rate_hz, has_gyro=has_gyro)
    n = t.shape[1]
    warm = round(warm_s * rate_hz) // block * block
    timed_blocks = max((n - warm) // block, 1)

    # Ours, A/B-interleaved with VQF on the same data (the reference always
    # uses the gyroscope: VQF has no accelerometer-only mode).
    vqf = _Vqf(acc, gyr_full, rate_hz, chunks=timed_blocks)
    cpu, blocks = _time_batch(BatchEngine(config, devices), t, acc, gyr, warm, block, vqf.step)
    vqf.finish()
    samples = blocks * block * devices
    # The same with the per-device fall detectors left out: what the
    # batched layout itself achieves.
    numerics = BatchEngine(config, devices)
    setattr(numerics._core, "_falls", lambda *args: None)  # noqa: B010 - measurement only
    # VQF runs between its blocks too (untimed here), so both runs find the
    # caches as VQF leaves them: otherwise the difference would count every
    # stage's cold caches as the fall detector's.
    vqf_again = _Vqf(acc, gyr_full, rate_hz, chunks=timed_blocks)
    cpu_numerics, _ = _time_batch(numerics, t, acc, gyr, warm, block, vqf_again.step)

    # One wearable in ``block``-sample packets, the same way (a few devices' streams).
    single_cpu = 0.0
    single_samples = 0
    for d in range(min(devices, 8)):
        single = PostureEngine(config)
        g = None if gyr is None else gyr[d]
        for a in range(0, n - block + 1, block):
            cpu0 = time.process_time()
            single.process(
                t[d, a : a + block],
                acc[d, a : a + block],
                g[a : a + block] if g is not None else None,
            )
            if a >= warm:
                single_cpu += time.process_time() - cpu0
                single_samples += block
    single_us = single_cpu / max(single_samples, 1) * 1e6

    return BenchResult(
        devices=devices,
        block=block,
        rate_hz=rate_hz,
        has_gyro=has_gyro,
        batch_samples_per_s=samples / max(cpu, 1e-9),
        batch_without_falls_samples_per_s=samples / max(cpu_numerics, 1e-9),
        falls_us_per_device_block=max(cpu - cpu_numerics, 0.0) / max(blocks * devices, 1) * 1e6,
        vqf_batch_samples_per_s=vqf.samples_per_s,
        single_us_per_sample=single_us,
        single_core_share_per_wearable=single_us * 1e-6 * rate_hz,
        batch_memory_per_device_bytes=_memory(config, devices, t, acc, gyr, block) / devices,
        single_memory_bytes=_memory(
            config, 1, t[:1], acc[:1], None if gyr is None else gyr[:1], block
        ),
    )


def _memory(
    config: EngineConfig,
    devices: int,
    t: FloatArray,
    acc: FloatArray,
    gyr: FloatArray | None,
    block: int,
) -> float:
    """Bytes traced for an engine of ``devices`` after 4 s of warm-up."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    if devices == 1:
        single = PostureEngine(config)
        for a in range(0, round(4 * config.sample_rate_hz), block):
            single.process(
                t[0, a : a + block],
                acc[0, a : a + block],
                None if gyr is None else gyr[0, a : a + block],
            )
        keep: object = single
    else:
        batch = BatchEngine(config, devices)
        for a in range(0, round(4 * config.sample_rate_hz), block):
            batch.process(
                t[:, a : a + block],
                acc[:, a : a + block],
                None if gyr is None else gyr[:, a : a + block],
            )
        keep = batch
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del keep
    return float(used)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.batch_bench", description=__doc__)
    parser.add_argument("--bench", action="store_true", help="run the benchmark")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed span of each stream")
    parser.add_argument("--warm", type=float, default=30.0, help="untimed span first")
    parser.add_argument("--block", type=int, default=PACKET)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--acc-only", action="store_true", help="wearables without a gyroscope")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return 0
    r = run_bench(
        args.devices, args.seconds, args.block, args.rate, args.warm, has_gyro=not args.acc_only
    )
    if args.json:
        print(json.dumps({**asdict(r), "ratio_vs_vqf": r.ratio_vs_vqf}, indent=2))
        return 0
    print(f"BatchEngine, {r.devices} devices, {r.block}-sample blocks at {r.rate_hz:g} Hz:")
    print(f"  whole engine       {r.batch_samples_per_s / 1e6:7.2f} M samples/s")
    print(
        f"  without falls      {r.batch_without_falls_samples_per_s / 1e6:7.2f} M samples/s "
        f"(the fall detectors add {r.falls_us_per_device_block:.1f} µs per device-block)"
    )
    print(f"VQF updateBatch      {r.vqf_batch_samples_per_s / 1e6:7.2f} M samples/s (same data)")
    without = r.ratio_without_falls_vs_vqf
    print(f"  ratio              {r.ratio_vs_vqf:7.2f} x (without falls {without:.2f} x)")
    print(
        f"PostureEngine, one wearable, {r.block}-sample packets, whole engine: "
        f"{r.single_us_per_sample:.2f} µs/sample = "
        f"{100 * r.single_core_share_per_wearable:.3f} % of a core at {r.rate_hz:g} Hz"
    )
    print(
        f"memory per wearable: {r.batch_memory_per_device_bytes / 1024:.1f} KiB batched, "
        f"{r.single_memory_bytes / 1024:.1f} KiB single"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover - command line
    raise SystemExit(main())
