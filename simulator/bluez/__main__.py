"""``python -m simulator.bluez``: a private system bus with the BlueZ stand-in, for a manual check.

Prints the ``DBUS_SYSTEM_BUS_ADDRESS`` to export in another shell, then
serves simulated wearables until Ctrl-C::

    python -m simulator.bluez --scenario demo --adapters hci0 hci1
    # in another shell:
    export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/tmp/pm-bus-.../system_bus_socket
    posture-monitor scan --seconds 3
    posture-monitor run --config gateway.toml

Typing ``off``/``on`` (power hci0), ``unplug``/``plug``, ``restart`` or
``mute ADDRESS`` on its standard input makes bluetoothd misbehave.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from simulator.bluez.bus import PrivateSystemBus
from simulator.bluez.standin import BluezStandIn
from simulator.demo import builtin_scenario_path, builtin_scenarios
from simulator.loader import load_scenario
from simulator.world import SimulatedWorld


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator.bluez", description=__doc__)
    parser.add_argument(
        "--scenario", default="demo", help=f"a built-in ({builtin_scenarios()}) or a TOML file"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="scenario seconds per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--adapters", nargs="+", default=["hci0"], help="adapter names")
    parser.add_argument("--bluez-version", default="5.66", help="error wording (5.66 or 5.55)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    path = (
        builtin_scenario_path(args.scenario)
        if args.scenario in builtin_scenarios()
        else args.scenario
    )
    async with (
        PrivateSystemBus() as bus,
        SimulatedWorld(load_scenario(path), seed=args.seed, speed=args.speed) as world,
        BluezStandIn(
            world,
            bus_address=bus.address,
            adapters=tuple(args.adapters),
            bluez_version=args.bluez_version,
        ) as standin,
    ):
        print(f"export DBUS_SYSTEM_BUS_ADDRESS={bus.address}", flush=True)
        print(f"wearables: {', '.join(world.addresses)}; Ctrl-C to stop", flush=True)
        await _commands(standin)


async def _commands(standin: BluezStandIn) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            await asyncio.Event().wait()  # stdin closed: serve until Ctrl-C
        words = line.split()
        if not words:
            continue
        command, rest = words[0], words[1:]
        adapter = rest[0] if rest and command != "mute" else standin.adapter_names[0]
        if command in ("off", "on"):
            standin.power(adapter, command == "on")
        elif command == "unplug":
            standin.unplug(adapter)
        elif command == "plug":
            standin.plug(adapter)
        elif command == "restart":
            await standin.restart()
        elif command == "mute" and rest:
            standin.mute(rest[0])
        else:
            print("commands: off|on|unplug|plug [hciN], restart, mute ADDRESS", flush=True)
            continue
        print(f"{command}: done", flush=True)


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
