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
from device_gateway.link import WearableSupervisor
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


async def until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Wait until ``check()`` holds (polled); fail naming ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what}") from None


@dataclass
class BluezWard:
    """What a test drives and observes: the world, the stand-in, the gateway."""

    world: SimulatedWorld
    standin: BluezStandIn
    gateway: Gateway
    publisher: AlertPublisher
    service: asyncio.Task[None]

    def supervisor(self, address: str) -> WearableSupervisor:
        return next(s for s in self.gateway.supervisors if s.address == address.upper())

    async def streaming(self, address: str, packets: int = 20, timeout_s: float = 30.0) -> None:
        """Wait until the gateway decoded ``packets`` more packets of ``address``."""
        await until(lambda: bool(self.gateway.supervisors), "the gateway starts")
        counters = self.supervisor(address).counters
        target = counters.packets + packets
        await until(
            lambda: counters.packets >= target,
            f"{packets} more packets from {address} reach the gateway",
            timeout_s,
        )


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
