"""What the compiled kernels cost and give: first-call cost, the gravity filter
alone and the whole engine, compiled against the NumPy reference.

* First call: a fresh Python process with an empty numba cache directory
  (``NUMBA_CACHE_DIR``) builds the engine's gravity filters (gyroscope and
  accelerometer-only, one device and many) and runs ``warm_up()`` (the
  activity and slouch kernels), and times those first calls, i.e. the
  compilation; a second process on the same directory times the same
  calls loaded from the on-disk cache. CPU time of the child process.
* The gravity filter alone: :class:`~posture.orientation.GravityFilter`
  compiled and NumPy over the same devices in the same blocks, and VQF's
  ``updateBatch`` (its fastest path: whole recordings) on the same samples,
  interleaved block by block in CPU time of this process.
* The angles alone: :class:`~posture.calibration.TrunkAngles` compiled and
  NumPy over the same devices in the same blocks.
* The whole engine: :class:`~posture.batch.BatchEngine` (many devices) and
  :class:`~posture.engine.PostureEngine` (one), compiled and NumPy, block by
  block in turn on the same data.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lab.batch_bench import _Vqf, synthetic_devices
from posture.batch import BatchEngine
from posture.calibration import Calibration, TrunkAngles
from posture.config import EngineConfig
from posture.engine import PostureEngine
from posture.falls import FallSettings, FallStage
from posture.kernels import KERNEL_ENV, Kernel, numba_version
from posture.orientation import GravityFilter, GravityFilterParams

__all__ = [
    "FirstCall",
    "KernelPair",
    "bench_angles",
    "bench_engines",
    "bench_fall_stage",
    "bench_gravity",
    "describe_first_call",
    "first_call",
]

FloatArray = NDArray[np.float64]

# Run in a child process: the first call of each kernel the engine uses (the
# gravity filter's for one device and many, then warm_up() for the activity
# and slouch kernels), CPU seconds.
_CHILD = """
import json, time
import numpy as np
t0 = time.process_time()
from posture.orientation import GravityFilter, GravityFilterParams
from posture.kernels import warm_up
imported = time.process_time() - t0
t0 = time.process_time()
for gyro in (True, False):
    for devices in (1, 16):
        f = GravityFilter(GravityFilterParams(50.0, gyro), devices, kernel="compiled")
        acc = np.zeros((10, 3, devices))
        acc[:, 2] = 1.0
        gyr = np.zeros((10, 3, devices)) if gyro else None
        f.process(acc, gyr, np.full((10, devices), 0.02))
warm_up()
print(json.dumps({"import_s": imported, "first_calls_s": time.process_time() - t0}))
"""


@dataclass(frozen=True)
class FirstCall:
    """The compiled kernels' start-up cost (CPU seconds of a fresh process)."""

    numba_version: str
    uncached_s: float
    """First calls of every engine kernel with an empty cache (compilation)."""
    cached_s: float
    """The same calls in a second process, loaded from the on-disk cache."""
    import_s: float
    """Importing the engine's orientation module (numba itself is imported on first call)."""


def first_call() -> FirstCall | None:
    """Measure the first-call cost in child processes; None where numba does not import."""
    version = numba_version()
    if version is None:
        return None
    with tempfile.TemporaryDirectory(prefix="posture-numba-cache-") as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, KERNEL_ENV: Kernel.COMPILED.value}
        runs = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", _CHILD],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return FirstCall(
        numba_version=version,
        uncached_s=float(runs[0]["first_calls_s"]),
        cached_s=float(runs[1]["first_calls_s"]),
        import_s=float(runs[1]["import_s"]),
    )


@dataclass(frozen=True)
class KernelPair:
    """Throughput of one workload with each kernel (and VQF where it applies)."""

    what: str
    devices: int
    block: int
    compiled_samples_per_s: float
    numpy_samples_per_s: float
    vqf_samples_per_s: float = math.nan

    @property
    def speedup(self) -> float:
        return self.compiled_samples_per_s / self.numpy_samples_per_s


@contextlib.contextmanager
def _kernel(kernel: Kernel) -> Iterator[None]:
    """``$POSTURE_KERNEL`` set to ``kernel`` while an engine is built."""
    before = os.environ.get(KERNEL_ENV)
    os.environ[KERNEL_ENV] = kernel.value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(KERNEL_ENV, None)
        else:
            os.environ[KERNEL_ENV] = before


def _interleaved(steps: list[Callable[[int], None]], starts: list[int]) -> list[float]:
    """CPU seconds of each step over every block start, the steps taking turns
    (A/B/A/B: a shared machine's load falls on each alike)."""
    spent = [0.0] * len(steps)
    for a in starts:
        for k, step in enumerate(steps):
            cpu0 = time.process_time()
            step(a)
            spent[k] += time.process_time() - cpu0
    return spent


def _compiled_against_numpy(
    what: str, devices: int, block: int, steps: list[Callable[[int], None]], starts: list[int]
) -> KernelPair:
    """Throughput of the compiled step (``steps[0]``) and the NumPy one
    (``steps[1]``), taking turns over every block start."""
    cpu = _interleaved(steps, starts)
    samples = len(starts) * block * devices
    return KernelPair(
        what=what,
        devices=devices,
        block=block,
        compiled_samples_per_s=samples / max(cpu[0], 1e-9),
        numpy_samples_per_s=samples / max(cpu[1], 1e-9),
    )


def bench_gravity(
    devices: int,
    rate_hz: float = 50.0,
    has_gyro: bool = True,
    block: int = 10,
    seconds: float = 20.0,
) -> KernelPair:
    """The gravity filter alone, compiled against NumPy, VQF interleaved (module docstring)."""
    t, acc_rows, gyr_rows = synthetic_devices(devices, seconds + 2.0, rate_hz)
    acc = np.ascontiguousarray(acc_rows.transpose(1, 2, 0))  # (n, 3, D)
    gyr = np.ascontiguousarray(gyr_rows.transpose(1, 2, 0)) if has_gyro else None
    dt = np.full((t.shape[1], devices), 1.0 / rate_hz)
    params = GravityFilterParams(sample_rate_hz=rate_hz, has_gyro=has_gyro)
    filters = [GravityFilter(params, devices, kernel=k) for k in (Kernel.COMPILED, Kernel.NUMPY)]
    warm = round(2.0 * rate_hz) // block * block
    n = t.shape[1]
    starts = list(range(warm, n - block + 1, block))
    vqf = _Vqf(acc_rows, gyr_rows, rate_hz, chunks=len(starts))

    def step(f: GravityFilter) -> Callable[[int], None]:
        def run(a: int) -> None:
            f.process(
                acc[a : a + block], None if gyr is None else gyr[a : a + block], dt[a : a + block]
            )

        return run

    for a in range(0, warm, block):
        for f in filters:
            step(f)(a)
    gc.collect()
    cpu = _interleaved([step(f) for f in filters] + [lambda _a: vqf.step()], starts)
    vqf.finish()
    samples = len(starts) * block * devices
    return KernelPair(
        what="gravity filter",
        devices=devices,
        block=block,
        compiled_samples_per_s=samples / max(cpu[0], 1e-9),
        numpy_samples_per_s=samples / max(cpu[1], 1e-9),
        vqf_samples_per_s=vqf.samples_per_s,
    )


def bench_engines(
    devices: int,
    rate_hz: float = 50.0,
    has_gyro: bool = True,
    block: int = 10,
    seconds: float = 10.0,
    warm_s: float = 20.0,
) -> KernelPair:
    """The whole engine with each kernel: BatchEngine for several devices,
    PostureEngine for one; block by block in turn on the same data."""
    t, acc, gyr_full = synthetic_devices(devices, warm_s + seconds, rate_hz)
    gyr = gyr_full if has_gyro else None
    config = EngineConfig(sample_rate_hz=rate_hz, has_gyro=has_gyro)
    steps: list[Callable[[int], None]] = []
    for kernel in (Kernel.COMPILED, Kernel.NUMPY):
        with _kernel(kernel):
            steps.append(_engine_step(config, devices, t, acc, gyr, block))
    n = t.shape[1]
    warm = round(warm_s * rate_hz) // block * block
    for a in range(0, warm, block):
        for s in steps:
            s(a)
    gc.collect()
    starts = list(range(warm, n - block + 1, block))
    return _compiled_against_numpy(
        "BatchEngine" if devices > 1 else "PostureEngine", devices, block, steps, starts
    )


def bench_fall_stage(
    devices: int,
    rate_hz: float = 50.0,
    has_gyro: bool = True,
    block: int = 10,
    seconds: float = 10.0,
    warm_s: float = 5.0,
) -> KernelPair:
    """The fall stage alone (stage 0, ring write, screen, the per-device path
    where needed) with each kernel, block by block in turn on the same data;
    the up direction is the normalised accelerometer (the stage only reads it)."""
    t, acc_rows, gyr_rows = synthetic_devices(devices, warm_s + seconds, rate_hz)
    t_l = np.ascontiguousarray(t.T)
    acc = np.ascontiguousarray(acc_rows.transpose(1, 2, 0))
    gyr = np.ascontiguousarray(gyr_rows.transpose(1, 2, 0)) if has_gyro else None
    up = acc / np.linalg.norm(acc, axis=1, keepdims=True)
    stages = [
        FallStage(FallSettings(), rate_hz, devices, np.array([0.0, 0.0, 1.0]), kernel=k)
        for k in (Kernel.COMPILED, Kernel.NUMPY)
    ]

    def step(st: FallStage) -> Callable[[int], None]:
        def run(a: int) -> None:
            b = a + block
            st.process(t_l[a:b], acc[a:b], None if gyr is None else gyr[a:b], up[a:b])

        return run

    steps = [step(st) for st in stages]
    n = t.shape[1]
    warm = round(warm_s * rate_hz) // block * block
    for a in range(0, warm, block):
        for s in steps:
            s(a)
    gc.collect()
    starts = list(range(warm, n - block + 1, block))
    return _compiled_against_numpy("fall stage", devices, block, steps, starts)


def bench_angles(
    devices: int,
    rate_hz: float = 50.0,
    block: int = 10,
    seconds: float = 10.0,
) -> KernelPair:
    """The engine's angles alone (:class:`~posture.calibration.TrunkAngles`)
    with each kernel, block by block in turn on the same data: up-directions
    the normalised accelerometer, each device calibrated to its first sample
    except every tenth (a wearable not yet calibrated)."""
    _, acc, _ = synthetic_devices(devices, seconds, rate_hz)
    up = np.ascontiguousarray(acc.transpose(1, 2, 0))
    up /= np.linalg.norm(up, axis=1, keepdims=True)
    matrix = np.stack([Calibration.from_up(up[0, :, d]).matrix for d in range(devices)], axis=2)
    calibrated = np.arange(devices) % 10 != 9
    angles = [TrunkAngles(k) for k in (Kernel.COMPILED, Kernel.NUMPY)]

    def step(a: TrunkAngles) -> Callable[[int], None]:
        def run(i: int) -> None:
            a.of_devices(up[i : i + block], matrix, calibrated)

        return run

    steps = [step(a) for a in angles]
    for s in steps:  # compile (or load) before timing
        s(0)
    gc.collect()
    starts = list(range(0, up.shape[0] - block + 1, block))
    return _compiled_against_numpy("angles", devices, block, steps, starts)


def _engine_step(
    config: EngineConfig,
    devices: int,
    t: FloatArray,
    acc: FloatArray,
    gyr: FloatArray | None,
    block: int,
) -> Callable[[int], None]:
    """One block (from sample ``a``) through a new engine: PostureEngine for one
    device, BatchEngine for several."""
    if devices == 1:
        single = PostureEngine(config)

        def one(a: int) -> None:
            g = None if gyr is None else gyr[0, a : a + block]
            single.process(t[0, a : a + block], acc[0, a : a + block], g)

        return one
    batch = BatchEngine(config, devices)

    def many(a: int) -> None:
        g = None if gyr is None else gyr[:, a : a + block]
        batch.process(t[:, a : a + block], acc[:, a : a + block], g)

    return many


def describe_first_call(fc: FirstCall | None) -> str:
    """The bench's one-line summary of the compiled kernel."""
    if fc is None:
        return "compiled kernel: unavailable (numba does not import here); the NumPy engine runs"
    return (
        f"compiled kernel: numba {fc.numba_version} (first call {fc.uncached_s:.2f} s uncached"
        f" / {fc.cached_s:.2f} s cached; CPU time of fresh processes, all engine kernels)"
    )
