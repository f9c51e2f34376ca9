"""Test helper: the real gateway running over a simulated world."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from alerts import AlertPublisher, AlertSink
from device_gateway import Gateway, GatewayConfig
from simulator import SimulatedWorld

if TYPE_CHECKING:
    from brokers import Collector


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
