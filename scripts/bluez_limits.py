"""How many wearables, and how many notifications a second, the BlueZ path carries here.

Usage::

    .venv/bin/python scripts/bluez_limits.py --wearables 10 40 --seconds 15

For each ward size the real gateway (with an in-memory sink) runs twice,
interleaved: over the simulator's bleak backend (the reference: no D-Bus),
then over bleak's BlueZ backend with the BlueZ stand-in on a private
``dbus-daemon`` (simulator.bluez). Each run prints the wearables connected,
the IMU notifications a second the gateway decoded, the packets lost on the
way (sequence gaps and queue drops the gateway counted), and the CPU time per
notification of this process and of ``dbus-daemon`` (process CPU, not wall
time), so the cost of the D-Bus path is a ratio measured in the same run.
The stand-in runs in this process: on a real gateway that share of the
cost is bluetoothd's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass

from alerts import MemorySink
from device_gateway import Gateway
from posture_monitor.demo import demo_config
from simulator import SimulatedWorld, demo_scenario
from simulator.bluez import BluezStandIn, PrivateSystemBus

_TICK_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    path: str
    wearables: int
    connected: int
    packets_per_s: float
    lost: int
    cpu_us_per_packet: float
    daemon_us_per_packet: float


def _daemon_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK_S  # utime + stime


async def _measure(
    gateway: Gateway, world: SimulatedWorld, seconds: float, daemon_pid: int | None
) -> tuple[int, int, int, float, float]:
    """Warm up until every wearable streams (or 20 s), then measure ``seconds``:
    (connected, packets lost, packets decoded, process CPU s, dbus-daemon CPU s)."""
    loop = asyncio.get_running_loop()
    warm_until = loop.time() + 20.0
    while loop.time() < warm_until and not (
        gateway.supervisors and all(s.monitor.connected for s in gateway.supervisors)
    ):
        await asyncio.sleep(0.2)

    def lost() -> int:
        return sum(s.counters.lost + s.counters.queue_dropped for s in gateway.supervisors)

    lost0 = lost()
    got0 = sum(s.counters.packets for s in gateway.supervisors)
    cpu0, daemon0 = time.process_time(), _daemon_cpu_s(daemon_pid)
    await asyncio.sleep(seconds)
    cpu, daemon = time.process_time() - cpu0, _daemon_cpu_s(daemon_pid) - daemon0
    got = sum(s.counters.packets for s in gateway.supervisors) - got0
    connected = sum(s.monitor.connected for s in gateway.supervisors)
    return connected, lost() - lost0, got, cpu, daemon


async def run_once(wearables: int, seconds: float, *, bluez: bool) -> Run:
    scenario = demo_scenario(wearables)
    config = demo_config(scenario)
    async with contextlib.AsyncExitStack() as stack:
        world = await stack.enter_async_context(SimulatedWorld(scenario, seed=1, speed=1.0))
        daemon_pid = None
        if bluez:
            bus = await stack.enter_async_context(PrivateSystemBus())
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
            daemon_pid = bus.pid
            await stack.enter_async_context(BluezStandIn(world, bus_address=bus.address))
            gateway = Gateway(config, MemorySink())
        else:
            gateway = Gateway(
                config,
                MemorySink(),
                scanner_backend=world.scanner_backend,
                client_backend=world.client_backend,
            )
        service = asyncio.create_task(gateway.run())
        try:
            connected, lost, got, cpu, daemon = await _measure(gateway, world, seconds, daemon_pid)
        finally:
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service
    return Run(
        "bluez" if bluez else "simulator",
        wearables,
        connected,
        got / seconds,
        lost,
        cpu / max(got, 1) * 1e6,
        daemon / max(got, 1) * 1e6,
    )


def _print(run: Run) -> None:
    print(
        f"{run.path:10} {run.wearables:5} wearables  {run.connected:5} connected  "
        f"{run.packets_per_s:8.1f} notifications/s  {run.lost:5} lost  "
        f"CPU {run.cpu_us_per_packet:7.0f} us/notification (+ dbus-daemon "
        f"{run.daemon_us_per_packet:5.0f} us)",
        flush=True,
    )


async def main_async(sizes: list[int], seconds: float, rounds: int) -> None:
    for wearables in sizes:
        runs: dict[str, list[Run]] = {"simulator": [], "bluez": []}
        for _ in range(rounds):  # A/B/A/B: the ratio holds on a noisy machine
            for bluez in (False, True):
                try:
                    run = await run_once(wearables, seconds, bluez=bluez)
                except Exception as exc:  # a limit reached is a result, not a crash
                    print(
                        f"{'bluez' if bluez else 'simulator':10} {wearables:5} wearables  "
                        f"FAILED: {exc!r}",
                        flush=True,
                    )
                    continue
                runs[run.path].append(run)
                _print(run)
        if not runs["simulator"] or not runs["bluez"]:
            continue
        sim = sum(r.cpu_us_per_packet for r in runs["simulator"]) / len(runs["simulator"])
        bz = sum(r.cpu_us_per_packet + r.daemon_us_per_packet for r in runs["bluez"]) / len(
            runs["bluez"]
        )
        print(
            f"{wearables} wearables: the BlueZ path costs {bz / sim:.2f}x the CPU per "
            f"notification of the simulator backend ({bz:.0f} vs {sim:.0f} us, daemon included); "
            f"one core would carry about {1e6 / bz:.0f} notifications/s "
            f"({1e6 / bz / 5:.0f} wearables at 5 packets/s)",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wearables", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main_async(args.wearables, args.seconds, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
