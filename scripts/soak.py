"""Soak run: many simulated wearables for a long scenario, through a real broker.

Usage::

    .venv/bin/python scripts/soak.py --wearables 100 --hours 1 --speed 6

Every patient cycles through a day-like timeline (sitting, slouching,
walking, bending, lying down and getting up; every tenth patient also falls
and gets up again every 20 minutes) with radio faults sprinkled in. The
script runs the real gateway over the simulator's bleak backend against a
private Mosquitto (or ``--broker URL``), and a persistent-session subscriber
counts what arrives. It prints the resident memory at the start (after one
scenario minute of warm-up) and at the end, and the events lost: events the
gateway handed to the publisher that never reached the subscriber (must be
zero).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from alerts import AlertPublisher, MemorySink, MqttClient, MqttSettings
from common.ports import free_port
from device_gateway import Gateway, GatewayConfig
from simulator import SimulatedWorld, parse_scenario

CYCLE: list[tuple[dict[str, object], int]] = [  # (activity table, seconds)
    ({"activity": "sit"}, 300),
    ({"activity": "slouch", "flexion_deg": 35, "duration_s": 150}, 200),
    ({"activity": "stand"}, 30),
    ({"activity": "walk", "duration_s": 120}, 130),
    ({"activity": "bend", "flexion_deg": 70}, 20),
    ({"activity": "sit_down", "style": "gentle"}, 240),
    ({"activity": "lie_down", "position": "supine"}, 300),
    ({"activity": "get_up", "to": "stand"}, 60),
]


def _toml_value(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def soak_scenario_toml(wearables: int, hours: float) -> str:
    duration_s = hours * 3600.0
    lines = ["[scenario]", 'name = "soak"', f"duration_s = {duration_s}", ""]
    for index in range(wearables):
        number = index + 1
        lines += [
            "[[patients]]",
            f'id = "soak-{number:04d}"',
            "[patients.wearable]",
            f'address = "C0:FF:EE:{(number >> 16) & 0xFF:02X}:{(number >> 8) & 0xFF:02X}:'
            f'{number & 0xFF:02X}"',
            f'model = "{"acc_only" if index % 3 == 2 else "acc_gyro"}"',
            "packet_loss = 0.005",
            "corruption = 0.002",
            "[patients.wearable.mounting]",
            f"spin_deg = {((index * 37) % 60 - 30) % 360}",  # within ±30° of nominal
            "tilt_deg = 10.0",
        ]
        t_s = 0.0
        step = index % len(CYCLE)  # patients start at different points of the day
        falls = index % 10 == 0
        next_fall_s = 600.0 + index
        while t_s < duration_s:
            # A fall (walk, fall, get up) only where the day continues with sitting.
            if falls and t_s >= next_fall_s and step % len(CYCLE) == 0:
                entries: list[tuple[dict[str, object], int]] = [
                    ({"activity": "walk"}, 10),
                    ({"activity": "fall"}, 60),
                    ({"activity": "get_up", "to": "stand"}, 30),
                ]
                next_fall_s += 1200.0
            else:
                entries = [CYCLE[step % len(CYCLE)]]
                step += 1
            for table, length_s in entries:
                lines += ["[[patients.timeline]]", f"at_s = {t_s:.1f}"]
                lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
                t_s += length_s
        if index % 25 == 7:  # a link loss every now and then
            lines += [
                "[[patients.timeline]]",
                "at_s = 1500.0",
                'fault = "disconnect"',
                "duration_s = 40.0",
            ]
        lines.append("")
    return "\n".join(lines)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


@contextlib.contextmanager
def private_mosquitto() -> Iterator[str]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "mosquitto.conf"
        # No queue limit for the subscriber, and no Nagle delay on acks.
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            "set_tcp_nodelay true\nuser root\n"
        )
        process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait()


async def soak(wearables: int, hours: float, speed: float, broker_url: str) -> int:
    scenario = parse_scenario(tomllib.loads(soak_scenario_toml(wearables, hours)), source="<soak>")
    config = GatewayConfig.from_mapping(
        {
            "gateway_id": "soak",
            "wearables": [
                {"address": p.wearable.address, "patient_id": p.id} for p in scenario.patients
            ],
        }
    )
    settings = MqttSettings.from_url(broker_url)
    received: set[str] = set()
    duration_s = hours * 3600.0
    async with (
        MqttClient(settings, client_id="soak-physio", session_expiry_s=3600) as physio,
        SimulatedWorld(scenario, seed=1, speed=speed) as world,
        AlertPublisher(settings, gateway_id="soak") as publisher,
    ):
        await physio.subscribe("posture/v1/patients/+/events", qos=1)

        async def count() -> None:
            async for message in physio.messages():
                received.add(json.loads(message.payload)["event_id"])

        sink = MemorySink(forward=publisher)  # remembers what the gateway handed over
        gateway = Gateway(
            config, sink, scanner_backend=world.scanner_backend, client_backend=world.client_backend
        )
        started = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            counter = tasks.create_task(count())
            service = tasks.create_task(gateway.run())
            await world.sleep_until(60.0)
            rss_start = rss_mib()
            report_every_s = 600.0
            t_s = 60.0
            while t_s < duration_s:
                t_s = min(duration_s, t_s + report_every_s)
                await world.sleep_until(t_s)
                print(
                    f"scenario {t_s / 60:5.0f} min  wall {time.monotonic() - started:6.0f} s  "
                    f"rss {rss_mib():6.1f} MiB  events {len(sink.events)}",
                    flush=True,
                )
            service.cancel()
            sent = {event.event_id: event.type.value for event in sink.events}
            deadline = time.monotonic() + 30.0
            while set(sent) - received and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            counter.cancel()
        rss_end = rss_mib()
        metrics = gateway.device_metrics()

    lost = set(sent) - received
    totals = Counter(sum((Counter(m) for m in metrics.values()), Counter()))
    wall_s = time.monotonic() - started
    print(f"\nwearables {wearables}, scenario {hours:g} h at speed {speed:g} in {wall_s:.0f} s")
    if world.slipped_s > 0.0:
        print(
            f"this machine could not keep up with speed {speed:g}: scenario time slipped "
            f"{world.slipped_s:.0f} s (ran at {duration_s / wall_s:.1f}x on average)"
        )
    print(
        f"memory: rss {rss_start:.1f} MiB at start (after 1 min), {rss_end:.1f} MiB at end "
        f"({rss_end - rss_start:+.1f} MiB)"
    )
    print(
        f"events: {len(sent)} published, {len(lost)} lost; by type {dict(Counter(sent.values()))}"
    )
    print(
        f"packets: {totals['packets']} received, {totals['queue_dropped']} dropped by the "
        f"gateway's full queues (it could not keep up), {totals['malformed']} malformed, "
        f"{totals['lost']} sequence gaps (radio losses and the gateway's drops)"
    )
    return 1 if lost else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wearables", type=int, default=100)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--speed", type=float, default=6.0)
    parser.add_argument("--broker", default=None, help="default: a private mosquitto")
    args = parser.parse_args()
    if args.broker:
        return asyncio.run(soak(args.wearables, args.hours, args.speed, args.broker))
    with private_mosquitto() as url:
        return asyncio.run(soak(args.wearables, args.hours, args.speed, url))


if __name__ == "__main__":
    sys.exit(main())
