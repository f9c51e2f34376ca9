"""Test helper: the real gateway running over a simulated world."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from alerts import AlertPublisher, AlertSink, EventType, MemorySink
from device_gateway import Gateway, GatewayConfig
from simulator import SimulatedWorld

if TYPE_CHECKING:
    from brokers import Collector

HANG_S = 30.0  # a guard against a hang, never a measurement (as in tests/brokers.py)


@asynccontextmanager
async def gateway_running(
    config: GatewayConfig, sink: AlertSink, world: SimulatedWorld
) -> AsyncIterator[Gateway]:
    """The gateway supervising ``world``'s wearables until the block ends."""
    gateway = Gateway(
        config, sink, scanner_backend=world.scanner_backend, client_backend=world.client_backend
    )
    async with asyncio.TaskGroup() as tasks:
        service = tasks.create_task(gateway.run(), name="gateway under test")
        try:
            yield gateway
        finally:
            service.cancel()


async def all_events_arrived(collector: Collector, publisher: AlertPublisher) -> None:
    """Wait until ``collector`` holds every event ``publisher`` had acknowledged.

    Called after the publisher closed: a PUBACK means the broker has the event,
    not that the subscriber has it yet, so count what arrived instead of
    sleeping for it.
    """
    published = publisher.metrics.events_published
    await collector.wait_for(lambda ms: sum(m.topic.endswith("/events") for m in ms) >= published)


async def connected_then_speed_up(
    sink: MemorySink, config: GatewayConfig, world: SimulatedWorld, speed: float
) -> None:
    """Once the gateway has reported every wearable connected, run ``world``
    at ``speed``.

    Start the world slowly (speed 1): then the scenario's fixed times (a fault
    at 20 s) cannot pass while a gateway that a loaded machine made slow to
    start has not even connected yet. An event, not a head start in seconds.
    """
    patients = {w.patient_id for w in config.wearables}
    async with asyncio.timeout(HANG_S):
        while not patients <= {e.patient_id for e in sink.of_type(EventType.DEVICE_CONNECTED)}:
            await asyncio.sleep(0.02)
    world.set_speed(speed)
