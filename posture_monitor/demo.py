"""``posture-monitor demo``: simulated patients through the real service.

The demo runs the production path end to end: simulated wearables (a bleak
backend) → the gateway → the engine → the MQTT publisher → a broker → the
physiotherapist's ``watch`` view, which reads only from the broker. With no
``--broker`` it starts the embedded broker (amqtt, MQTT 3.1.1) in-process, so
it needs nothing installed beyond the package.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from contextlib import AsyncExitStack
from typing import Any, TextIO

from alerts import AlertPublisher, EmbeddedBroker, MqttSettings
from common.shutdown import run_until_terminated
from device_gateway import Gateway, GatewayConfig
from physio.watch import watch_live
from simulator import Scenario, SimulatedWorld, demo_scenario

__all__ = ["configure_parser", "demo_config", "run", "run_demo"]

_log = logging.getLogger(__name__)

DEMO_GATEWAY_ID = "demo-gateway"
# Short enough that the demo's sloucher gets a reminder within the first
# minute; a clinic's default is 30 s (device_gateway.config).
DEMO_SLOUCH_DWELL_S = 10.0
# After the scenario ends: time for the last events to reach the view.
_SETTLE_S = 1.5


def demo_config(scenario: Scenario, *, dwell_s: float = DEMO_SLOUCH_DWELL_S) -> GatewayConfig:
    """A gateway config that allow-lists every wearable of ``scenario``."""
    return GatewayConfig.from_mapping(
        {
            "gateway_id": DEMO_GATEWAY_ID,
            "defaults": {"slouch_dwell_s": dwell_s},
            # Simulated links come back within seconds; a short grace shows
            # device_disconnected/connected in a demo-length run.
            "ble": {"disconnect_grace_s": 5.0, "backoff_max_s": 5.0},
            "wearables": [
                {"address": p.wearable.address, "patient_id": p.id} for p in scenario.patients
            ],
        },
        source="<demo>",
    )


async def run_demo(
    *,
    patients: int = 3,
    duration_s: float | None = None,
    speed: float = 1.0,
    seed: int = 7,
    broker_url: str | None = None,
    out: TextIO = sys.stdout,
    tty: bool | None = None,
) -> None:
    """Run the demo until ``duration_s`` of scenario time (or until cancelled)."""
    scenario = demo_scenario(patients)
    config = demo_config(scenario)
    async with AsyncExitStack() as stack:
        if broker_url is None:
            broker = await stack.enter_async_context(EmbeddedBroker())
            settings = broker.settings()  # MQTT 3.1.1: amqtt speaks nothing newer
        else:
            settings = MqttSettings.from_url(broker_url)
        world = await stack.enter_async_context(SimulatedWorld(scenario, seed=seed, speed=speed))
        publisher = await stack.enter_async_context(
            AlertPublisher(settings, gateway_id=config.gateway_id, topic_root=config.topic_root)
        )
        gateway = Gateway(
            config,
            publisher,
            scanner_backend=world.scanner_backend,
            client_backend=world.client_backend,
        )
        async with asyncio.TaskGroup() as tasks:
            view = tasks.create_task(
                watch_live(settings, topic_root=config.topic_root, out=out, tty=tty),
                name="demo view",
            )
            service = tasks.create_task(gateway.run(), name="demo gateway")
            if duration_s is None:
                await asyncio.Event().wait()  # until Ctrl-C
            else:
                await world.sleep_until(duration_s)
            service.cancel()
            # Let the last events travel through the broker to the view.
            await asyncio.sleep(_SETTLE_S)
            view.cancel()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patients", type=_positive_int, default=3, help="simulated patients")
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        metavar="S",
        help="scenario seconds to run (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--speed", type=_positive_float, default=1.0, help="scenario seconds per real second"
    )
    parser.add_argument("--seed", type=int, default=7, help="same seed, same events")
    parser.add_argument(
        "--broker",
        metavar="URL",
        default=None,
        help="publish to this broker (default: start an embedded one)",
    )


def run(args: argparse.Namespace) -> int:
    demo = run_demo(
        patients=args.patients,
        duration_s=args.duration,
        speed=args.speed,
        seed=args.seed,
        broker_url=args.broker,
    )
    try:
        # SIGTERM (timeout, docker stop) unwinds as Ctrl-C does.
        _result, terminated = asyncio.run(run_until_terminated(demo))
    except KeyboardInterrupt:
        terminated = True
    if terminated:
        print("\ndemo stopped", file=sys.stderr)
    return 0


def _positive_float(text: str) -> float:
    return _positive(text, float)


def _positive_int(text: str) -> int:
    return int(_positive(text, int))


def _positive(text: str, kind: Any) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
