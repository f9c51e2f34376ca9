"""``posture-monitor bench simulator``: what the simulator costs per wearable.

A scale test of the gateway runs its wearables on the simulator, in the same
process; if the simulator costs as much as the gateway, the test measures the
simulator. This benchmark runs ``--wearables`` simulated wearables of the demo
ward (the slouching, falling and control roles, every wearable at 50 Hz with a
gyroscope, 10-sample packets) in a :class:`~simulator.SimulatedWorld` at real
time, connects a client to each through bleak's own ``BleakClient`` API and
subscribes to its IMU notifications with a consumer that only counts bytes.
So everything that makes a notification is in the figure: the trunk
trajectory, the sensor model, noise and biases, quantisation, packet encoding
and the delivery through the bleak backend, plus the world's pump.

It prints the CPU time of this process per wearable-second of scenario time as
a share of one core, how many wearables one core keeps in real time at that
cost, whether the world kept real time (scenario time slipped less than 1 %
of the span), and
where the time goes: a second, shorter pass under :mod:`cProfile` whose
time is attributed to the simulator's stages (``--profile-seconds 0`` skips
it). It also times the physics alone against its per-wearable reference
(``SensorModel.measure``, what the simulator did before issue 13) on the
same samples, interleaved A/B/B/A. CPU time, so a busy machine slows the
run more than it moves the share.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import pstats
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from bleak import BleakClient, BleakGATTCharacteristic

from device_gateway.protocol import IMU_CHAR_UUID
from simulator import Scenario, SimulatedWearable, SimulatedWorld, demo_scenario
from simulator.noise import stream_key
from simulator.ward import WardSensors

__all__ = [
    "SimulatorBenchResult",
    "bench_ward",
    "configure_simulator_parser",
    "run_simulator",
    "run_simulator_bench",
]

_SAMPLE_RATE_HZ = 50
_SAMPLES_PER_PACKET = 10
_CONNECT_TIMEOUT_S = 120.0  # real seconds for a thousand connections on a busy machine

# Where the time goes: each stage is the cumulative time of its entry points
# (file suffix, function name) in the profile; what is left of the world's
# pump is scheduling. Names of both the per-wearable and the batched
# simulator, so the breakdown works on either.
_STAGES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "physics (trajectory, sensor, noise, quantisation)",
        (
            ("simulator/sensor.py", "measure"),
            ("simulator/blocks.py", "measure_blocks"),
        ),
    ),
    (
        "packet encoding",
        (
            ("device_gateway/protocol.py", "encode_imu_packet"),
            ("simulator/packets.py", "encode"),
        ),
    ),
    ("delivery (link, bleak, consumer)", (("simulator/link.py", "deliver"),)),
)
_PUMP = ("simulator/world.py", "_pump")


@dataclass(frozen=True)
class SimulatorBenchResult:
    wearables: int
    scenario_s: float
    """Scenario seconds measured."""
    cpu_s: float
    wall_s: float
    slipped_s: float
    """Scenario seconds the world gave up because it could not keep up."""
    core_share_per_wearable: float
    """CPU seconds per wearable-second simulated (fraction of one core): the CPU time
    over the packets delivered, each 10 samples = 0.2 s of one 50 Hz wearable (a
    world that falls behind catches up in bursts, so its clock is no measure)."""
    wearables_per_core: float
    """How many wearables one core runs in real time at that cost."""
    packets_received: int
    packets_expected: int
    stages_s: dict[str, float]
    """Profiled pass: CPU seconds by stage (profiling inflates them; compare shares)."""
    physics_us_per_wearable_s: float
    """The batched physics alone (``WardSensors``), CPU µs per wearable-second."""
    reference_physics_us_per_wearable_s: float
    """The per-wearable reference (``SensorModel.measure``) on the same samples,
    interleaved with it."""

    @property
    def real_time(self) -> bool:
        """The world kept up: its clock slipped less than 1 % of the span (a blip
        of the shared machine is not falling behind)."""
        return self.slipped_s <= 0.01 * self.scenario_s


def bench_ward(wearables: int) -> Scenario:
    """The demo ward of ``wearables`` patients, every wearable 50 Hz with a gyroscope."""
    ward = demo_scenario(wearables)
    patients = tuple(
        replace(
            p,
            wearable=replace(
                p.wearable,
                sample_rate_hz=_SAMPLE_RATE_HZ,
                model="acc_gyro",
                samples_per_packet=_SAMPLES_PER_PACKET,
            ),
        )
        for p in ward.patients
    )
    return replace(ward, name="bench-simulator", patients=patients)


class _Consumer:
    """The trivial notification consumer: counts packets and bytes."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0

    def __call__(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        self.packets += 1
        self.bytes += len(data)


async def _connect_all(world: SimulatedWorld, consumer: _Consumer) -> list[BleakClient]:
    async def one(address: str) -> BleakClient:
        client = BleakClient(address, backend=world.client_backend, timeout=_CONNECT_TIMEOUT_S)
        await client.connect()
        await client.start_notify(IMU_CHAR_UUID, consumer)
        return client

    return list(await asyncio.gather(*(one(a) for a in world.addresses)))


async def _measure(
    scenario: Scenario, seconds: float, profiler: cProfile.Profile | None
) -> dict[str, Any]:
    consumer = _Consumer()
    # Connecting is set-up, not measured: run it fast, then at real time.
    async with SimulatedWorld(scenario, seed=0, speed=4.0) as world:
        clients = await _connect_all(world, consumer)
        world.set_speed(1.0)
        await world.sleep(1.0)  # every wearable streaming before the clock starts
        packets0, slipped0 = consumer.packets, world.slipped_s
        t0_s, wall0, cpu0 = world.scenario_time(), time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        await world.sleep(seconds)
        if profiler is not None:
            profiler.disable()
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        scenario_s = world.scenario_time() - t0_s
        slipped_s = world.slipped_s - slipped0
        packets = consumer.packets - packets0
        for client in clients:
            await client.disconnect()
    return {
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "scenario_s": scenario_s,
        "slipped_s": slipped_s,
        "packets": packets,
    }


def _stage_times(stats: pstats.Stats, pump_s: float) -> dict[str, float]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for stage, entries in _STAGES:
        out[stage] = sum(_cumulative(raw, entries))
    out["scheduling (world pump, wearable state machines)"] = max(0.0, pump_s - sum(out.values()))
    total = sum(v[2] for v in raw.values())  # every function's own time
    out["event loop and the rest"] = max(0.0, total - pump_s)
    return out


def _cumulative(raw: dict[Any, Any], entries: Iterable[tuple[str, str]]) -> Iterable[float]:
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in raw.items():
        for suffix, function in entries:
            if name == function and filename.replace("\\", "/").endswith(suffix):
                yield ct


def physics_ab(
    scenario: Scenario, seconds: int = 4, reference_wearables: int = 100
) -> tuple[float, float]:
    """CPU µs per wearable-second of the batched physics and of the per-wearable
    reference, on the same second-long blocks of samples, interleaved A/B/B/A.

    The reference runs on the first ``reference_wearables`` (its cost per
    wearable does not depend on how many there are).
    """
    wearables = [SimulatedWearable(p, index=i, seed=0) for i, p in enumerate(scenario.patients)]
    ward = WardSensors([w.sensor for w in wearables])
    keys = np.asarray([stream_key(w.sensor.key, "noise", 0) for w in wearables], dtype=np.uint64)
    spent = {"batched": 0.0, "reference": 0.0}
    for second in range(seconds):
        index = second * _SAMPLE_RATE_HZ + np.arange(_SAMPLE_RATE_HZ, dtype=np.int64)
        order = ("batched", "reference") if second % 2 == 0 else ("reference", "batched")
        for path in order:
            cpu0 = time.process_time()
            if path == "batched":
                _measure_batched(ward, keys, index)
            else:
                _measure_reference(wearables[:reference_wearables], index)
            spent[path] += time.process_time() - cpu0
    per_batched = spent["batched"] / (seconds * len(wearables)) * 1e6
    per_reference = spent["reference"] / (seconds * min(reference_wearables, len(wearables)))
    return per_batched, per_reference * 1e6


def _measure_batched(ward: WardSensors, keys: np.ndarray, index: np.ndarray) -> None:
    k = keys.shape[0]
    t = np.tile(index / _SAMPLE_RATE_HZ, (k, 1))
    ward.measure(
        np.arange(k),
        t,
        window_s=np.full(k, 1.0 / _SAMPLE_RATE_HZ),
        since_boot_s=t,
        sample_index=np.tile(index, (k, 1)),
        noise_key=keys,
    )


def _measure_reference(wearables: list[SimulatedWearable], index: np.ndarray) -> None:
    t = index / _SAMPLE_RATE_HZ
    for w in wearables:
        w.sensor.measure(
            t, window_s=1.0 / _SAMPLE_RATE_HZ, since_boot_s=t, sample_index=index, boot=0
        )


def run_simulator_bench(
    wearables: int, seconds: float, *, profile_seconds: float = 0.0
) -> SimulatorBenchResult:
    """Run ``wearables`` simulated wearables for ``seconds`` of real time; measure."""
    scenario = bench_ward(wearables)
    measured = asyncio.run(_measure(scenario, seconds, None))
    stages: dict[str, float] = {}
    if profile_seconds > 0.0:
        profiler = cProfile.Profile(time.process_time)  # CPU, not time asleep in epoll
        asyncio.run(_measure(scenario, profile_seconds, profiler))
        stats = pstats.Stats(profiler)
        pump = list(_cumulative(stats.stats, [_PUMP]))  # type: ignore[attr-defined]
        stages = _stage_times(stats, sum(pump))
    physics_us, reference_us = physics_ab(scenario)
    wearable_s = measured["packets"] * _SAMPLES_PER_PACKET / _SAMPLE_RATE_HZ
    share = measured["cpu_s"] / max(wearable_s, 1e-9)
    return SimulatorBenchResult(
        wearables=wearables,
        scenario_s=measured["scenario_s"],
        cpu_s=measured["cpu_s"],
        wall_s=measured["wall_s"],
        slipped_s=measured["slipped_s"],
        core_share_per_wearable=share,
        wearables_per_core=1.0 / share if share > 0 else math.inf,
        packets_received=measured["packets"],
        packets_expected=round(
            wearables * measured["scenario_s"] * _SAMPLE_RATE_HZ / _SAMPLES_PER_PACKET
        ),
        stages_s=stages,
        physics_us_per_wearable_s=physics_us,
        reference_physics_us_per_wearable_s=reference_us,
    )


def configure_simulator_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wearables", default="100,1000", help="comma-separated wearable counts")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured span per count")
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=5.0,
        help="a profiled pass this long for the breakdown by stage (0: none)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_simulator(args: argparse.Namespace) -> int:
    try:
        counts = [int(v) for v in str(args.wearables).split(",") if v.strip()]
        if not counts or min(counts) < 1 or max(counts) > 9999:
            raise ValueError
    except ValueError:
        print(f"bench simulator: --wearables must be counts like 100,1000, got {args.wearables!r}")
        return 2
    if not (math.isfinite(args.seconds) and 2.0 <= args.seconds <= 3600.0):
        print(f"bench simulator: --seconds must be in 2..3600, got {args.seconds!r}")
        return 2
    if not (math.isfinite(args.profile_seconds) and 0.0 <= args.profile_seconds <= 600.0):
        print(f"bench simulator: --profile-seconds must be in 0..600, got {args.profile_seconds!r}")
        return 2
    results = [
        run_simulator_bench(n, args.seconds, profile_seconds=args.profile_seconds) for n in counts
    ]
    if args.json:
        print(json.dumps([{**asdict(r), "real_time": r.real_time} for r in results], indent=2))
        return 0
    print(
        "simulator (trajectory, sensor, noise, packets, delivery through the bleak backend) "
        f"for 50 Hz wearables, {args.seconds:g} s at real time each, CPU time of this process:"
    )
    print(
        f"{'wearables':>9} {'core/wearable':>14} {'per core':>9} {'packets':>17} "
        f"{'slipped s':>9} {'real time':>9}"
    )
    for r in results:
        print(
            f"{r.wearables:>9} {r.core_share_per_wearable:>13.4%} {r.wearables_per_core:>9,.0f} "
            f"{r.packets_received:>8}/{r.packets_expected:<8} {r.slipped_s:>9.2f} "
            f"{'yes' if r.real_time else 'NO':>9}"
        )
    print("physics alone, CPU per wearable-second (batched vs per-wearable reference, A/B):")
    for r in results:
        ratio = r.reference_physics_us_per_wearable_s / r.physics_us_per_wearable_s
        print(
            f"{r.wearables:>9} wearables: {r.physics_us_per_wearable_s:,.0f} µs batched, "
            f"{r.reference_physics_us_per_wearable_s:,.0f} µs reference ({ratio:.1f}x); "
            f"the physics is {r.physics_us_per_wearable_s / (r.core_share_per_wearable * 1e6):.0%}"
            " of the whole"
        )
    for r in results:
        if not r.stages_s:
            continue
        total = sum(r.stages_s.values())
        print(
            f"where the time goes, {r.wearables} wearables (profiled pass, share of its CPU; "
            "the profiler slows Python calls more than array work, so the scalar stages "
            "read high):"
        )
        for stage, seconds in r.stages_s.items():
            print(f"  {seconds / total:>6.1%}  {stage}")
    return 0
