"""Test helper: the real gateway running over a simulated world."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from device_gateway import Gateway, GatewayConfig
from device_gateway.gateway import MetricsSink
from simulator import SimulatedWorld


@asynccontextmanager
async def gateway_running(
    config: GatewayConfig, sink: MetricsSink, world: SimulatedWorld
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
