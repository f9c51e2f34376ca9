"""Fixtures for the gateway over bleak's real BlueZ backend (a pytest plugin
that tests/conftest.py loads; tests using it are marked ``bluez``).

``system_bus``  a private ``dbus-daemon`` (system-bus configuration) for one
                test; ``DBUS_SYSTEM_BUS_ADDRESS`` points at it while the test
                runs, so bleak's default backend talks to it and nothing else.
``bluez_ward``  factory: ``async with bluez_ward(scenario, ...) as ward``
                runs a simulated world, the BlueZ stand-in on the bus and
                the real gateway (no ``backend=``), publishing to a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from alerts import AlertPublisher
from device_gateway import Gateway, GatewayConfig
from simulator import Scenario, SimulatedWorld
from simulator.bluez import BluezStandIn, PrivateSystemBus
from simulator.bluez.bus import DBUS_DAEMON


@pytest.fixture
async def system_bus(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PrivateSystemBus]:
    """A private system bus; bleak's BlueZ backend is pointed at it."""
    if DBUS_DAEMON is None:
        pytest.skip("dbus-daemon not installed")
    async with PrivateSystemBus() as bus:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
        yield bus


@dataclass
class BluezWard:
    """What a test drives and observes: the world, the stand-in, the gateway."""

    world: SimulatedWorld
    standin: BluezStandIn
    gateway: Gateway
    publisher: AlertPublisher
    service: asyncio.Task[None]


WardFactory = Callable[..., AbstractAsyncContextManager[BluezWard]]


@pytest.fixture
def bluez_ward(system_bus: PrivateSystemBus, broker: Any) -> WardFactory:
    """Factory of a ward on the stand-in: ``bluez_ward(scenario, config, seed=, speed=)``."""

    @asynccontextmanager
    async def make(
        scenario: Scenario,
        config: GatewayConfig,
        *,
        seed: int = 7,
        speed: float = 10.0,
        standin_options: dict[str, Any] | None = None,
        publisher_options: dict[str, Any] | None = None,
    ) -> AsyncIterator[BluezWard]:
        async with (
            SimulatedWorld(scenario, seed=seed, speed=speed) as world,
            BluezStandIn(
                world, bus_address=system_bus.address, **(standin_options or {})
            ) as standin,
            AlertPublisher(
                broker.settings(), gateway_id=config.gateway_id, **(publisher_options or {})
            ) as publisher,
        ):
            # The default backend: exactly what `posture-monitor run` builds.
            gateway = Gateway(config, publisher)
            async with asyncio.TaskGroup() as tasks:
                service = tasks.create_task(gateway.run(), name="gateway on BlueZ")
                try:
                    yield BluezWard(world, standin, gateway, publisher, service)
                finally:
                    service.cancel()

    return make
