"""The simulated ward: scenario time, the wearables and their radio links.

:class:`SimulatedWorld` owns scenario time (``(loop.time() - start) * speed``)
and two background tasks in a TaskGroup it owns: the pump, which advances
every wearable and delivers what it emits to the connected client, and the
advertiser, which shows advertising wearables to running scanners. The
gateway reaches the world only through bleak: ``world.scanner_backend`` and
``world.client_backend`` are passed as ``backend=``.

When the machine cannot keep up with ``speed`` (the pump falls more than
``max(1 s, 10 ticks)`` of scenario time behind), scenario time slips: the
world runs slower than asked instead of handing every wearable's backlog to
the gateway at once, which no radio does. ``slipped_s`` counts the
scenario seconds given up; the samples are the same either way (they are a
function of scenario time).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Self

import numpy as np
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakDeviceNotFoundError, BleakError
from numpy.typing import ArrayLike

from device_gateway.protocol import POSTURE_SERVICE_UUID, BuzzCommand
from simulator.backend import make_backends
from simulator.blocks import measure_blocks
from simulator.config import Scenario
from simulator.emissions import WearableStats
from simulator.link import Link
from simulator.noise import normal, stream_key, uniform
from simulator.truth import Truth
from simulator.ward import WardSensors
from simulator.wearable import SimulatedWearable

if TYPE_CHECKING:
    from simulator.backend import SimulatedClient, SimulatedScanner

__all__ = ["SimulatedWorld", "WearableStatus", "WorldState"]

logger = logging.getLogger(__name__)

_ATT_DELAY_S = 0.015  # one connection interval for a read or write, scenario time


class WorldState(enum.Enum):
    """Lifecycle: a world runs once."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class WearableStatus:
    """A snapshot of one wearable, for tests and the demo's console."""

    address: str
    patient_id: str
    local_name: str
    reachable: bool
    connected: bool
    sample_rate_hz: int
    battery_pct: int
    stats: WearableStats


class SimulatedWorld:
    """Simulated wearables for ``scenario``, reachable through bleak.

    ``seed`` selects every random number (same seed, same samples at the
    same scenario times); ``speed`` is scenario seconds per real second;
    ``tick_s`` (real seconds) is how often the pump runs.

    Use ``async with SimulatedWorld(...) as world`` or ``await start()`` /
    ``await stop()`` from one task.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int = 0,
        speed: float = 1.0,
        tick_s: float = 0.02,
        advertising_interval_s: float = 0.25,
    ) -> None:
        if not (math.isfinite(speed) and speed > 0.0):
            raise ValueError(f"speed must be a positive number, got {speed}")
        if not 0.001 <= tick_s <= 1.0:
            raise ValueError(f"tick_s must be in 0.001..1 s, got {tick_s}")
        self.scenario = scenario
        self.seed = seed
        self.speed = float(speed)
        self._tick_s = tick_s
        self._advertising_s = advertising_interval_s
        self._links: dict[str, Link] = {}
        for index, patient in enumerate(scenario.patients):
            wearable = SimulatedWearable(patient, index=index, seed=seed)
            self._links[wearable.address] = Link(wearable, stream_key("link", seed, index))
        # Every wearable's samples are measured together (simulator/ward.py);
        # the pump steps only the wearables with something due.
        self._order = list(self._links.values())
        self._ward = WardSensors([link.wearable.sensor for link in self._order])
        for row, link in enumerate(self._order):
            link.wearable.join_ward(self._ward, row)
        self._due_s = np.array([link.wearable.next_due_s for link in self._order])
        self._silent: set[Link] = set()  # connected links whose radio went quiet
        self._scanners: set[SimulatedScanner] = set()
        self._state = WorldState.NEW
        self._t0_loop = 0.0
        self._stopped_at_s = 0.0
        self._pumped_to_s = 0.0
        self._max_lag_s = max(1.0, 10.0 * tick_s * self.speed)
        self.slipped_s = 0.0
        """Scenario seconds the clock slipped because the machine fell behind."""
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        scanner, client = make_backends(self)
        self.scanner_backend: type[BaseBleakScanner] = scanner
        self.client_backend: type[BaseBleakClient] = client

    # -- lifecycle -------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def state(self) -> WorldState:
        return self._state

    async def start(self) -> None:
        """Start scenario time and the background tasks.

        Raises:
            RuntimeError: the world was already started.
        """
        if self._state is not WorldState.NEW:
            raise RuntimeError(f"cannot start a world that is {self._state.value}")
        self._t0_loop = asyncio.get_running_loop().time()
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._state = WorldState.RUNNING
        self._tasks = [
            group.create_task(self._pump(), name="simulator-pump"),
            group.create_task(self._advertise(), name="simulator-advertiser"),
        ]
        logger.info(
            "simulated world started: %d wearables, speed %.3g", len(self._links), self.speed
        )

    async def stop(self) -> None:
        """Stop the background tasks; scenario time freezes. Idempotent.

        Connected clients are marked disconnected without their
        disconnected callback (the gateway is shutting down too).
        """
        if self._state is not WorldState.RUNNING:
            self._state = WorldState.STOPPED
            return
        self._stopped_at_s = self.scenario_time()
        self._state = WorldState.STOPPED
        for task in self._tasks:
            task.cancel()
        assert self._group is not None
        await self._group.__aexit__(None, None, None)
        for link in self._links.values():
            link.drop("simulation stopped", notify=False)
        self._scanners.clear()
        logger.info("simulated world stopped at %.2f s", self._stopped_at_s)

    # -- time --------------------------------------------------------------------
    def scenario_time(self) -> float:
        """Scenario seconds since start (0 before start; frozen after stop)."""
        if self._state is WorldState.NEW:
            return 0.0
        if self._state is WorldState.STOPPED:
            return self._stopped_at_s
        return (asyncio.get_running_loop().time() - self._t0_loop) * self.speed

    def set_speed(self, speed: float) -> None:
        """Run on at ``speed`` scenario seconds per real second from now on;
        scenario time stays continuous.

        A test starts a world slowly and speeds it up once the gateway has
        connected every wearable (an event), so scenario times fixed in a
        scenario (a fault at 20 s) cannot pass before a gateway that a loaded
        machine made slow to start even sees the wearable.

        Raises:
            ValueError: ``speed`` not a positive number.
        """
        if not (math.isfinite(speed) and speed > 0.0):
            raise ValueError(f"speed must be a positive number, got {speed}")
        now_s = self.scenario_time()
        self.speed = float(speed)
        self._max_lag_s = max(1.0, 10.0 * self._tick_s * self.speed)
        if self._state is WorldState.RUNNING:
            self._t0_loop = asyncio.get_running_loop().time() - now_s / self.speed
        logger.info("simulated world at speed %.3g from %.2f s", self.speed, now_s)

    async def sleep(self, scenario_s: float) -> None:
        """Sleep for ``scenario_s`` seconds of scenario time."""
        await self.sleep_until(self.scenario_time() + max(0.0, scenario_s))

    async def sleep_until(self, t_s: float) -> None:
        """Sleep until scenario time reaches ``t_s`` (or the world stops)."""
        remaining = t_s - self.scenario_time()
        if self._state is not WorldState.RUNNING:
            await asyncio.sleep(max(0.0, remaining) / self.speed)
            return
        # A loop, not one sleep: the clock may slip meanwhile (module docstring).
        while remaining > 0.0 and self._state is WorldState.RUNNING:
            await asyncio.sleep(remaining / self.speed)
            remaining = t_s - self.scenario_time()

    # -- observation ---------------------------------------------------------------
    @property
    def addresses(self) -> tuple[str, ...]:
        """Addresses of the wearables, in scenario order (upper case)."""
        return tuple(self._links)

    def wearable(self, address: str) -> SimulatedWearable:
        """The simulated device behind ``address``. Raises KeyError."""
        return self._link(address).wearable

    def haptic_log(self, address: str) -> list[tuple[float, BuzzCommand]]:
        """Buzz commands the wearable received: (scenario s, command)."""
        return list(self._link(address).haptics)

    def truth(self, address: str, t_s: ArrayLike | None = None) -> Truth:
        """True trunk angles and activity of the wearable's patient.

        ``t_s`` (scenario s); default: the wearable's configured sample grid
        from 0 to the current scenario time.
        """
        wearable = self._link(address).wearable
        if t_s is None:
            step = 1.0 / wearable.config.sample_rate_hz
            t_s = np.arange(0.0, self.scenario_time() + step / 2, step)
        return wearable.truth(np.asarray(t_s, dtype=np.float64))

    def status(self, address: str) -> WearableStatus:
        link = self._link(address)
        w = link.wearable
        return WearableStatus(
            address=w.address,
            patient_id=w.patient.id,
            local_name=w.config.local_name,
            reachable=w.reachable,
            connected=link.client is not None,
            sample_rate_hz=w.sample_rate_hz,
            battery_pct=w.battery_percent,
            stats=replace(w.stats, rate_changes=list(w.stats.rate_changes)),
        )

    def _link(self, address: str) -> Link:
        try:
            return self._links[address.upper()]
        except KeyError:
            raise KeyError(f"no simulated wearable {address}") from None

    # -- background tasks ------------------------------------------------------------
    async def _pump(self) -> None:
        while True:
            now = self.scenario_time()
            behind_s = now - self._pumped_to_s - self._max_lag_s
            if behind_s > 0.0:
                self._slip(behind_s)
                now = self.scenario_time()
            self._advance(now)
            self._pumped_to_s = now
            await asyncio.sleep(self._tick_s)

    def _slip(self, scenario_s: float) -> None:
        if self.slipped_s == 0.0:
            logger.warning(
                "simulated world cannot keep up with speed %g; scenario time slows down",
                self.speed,
            )
        self._t0_loop += scenario_s / self.speed
        self.slipped_s += scenario_s

    def _advance(self, now: float) -> None:
        """Every wearable with something due to ``now``: step, measure together, deliver."""
        rows = np.flatnonzero(self._due_s <= now).tolist()
        for row in rows:
            link = self._order[row]
            link.wearable.step(now, streaming=link.streaming)
        requests = [r for row in rows if (r := self._order[row].wearable.block_request())]
        if requests:
            measure_blocks(self._ward, requests)
        for row in rows:
            link = self._order[row]
            for emission in link.wearable.emissions():
                link.deliver(emission)
            self._due_s[row] = link.wearable.next_due_s
            if link.radio_lost_s is not None:
                self._silent.add(link)
        for link in list(self._silent):
            link.supervise(now)
            if link.client is None or link.radio_lost_s is None:
                self._silent.discard(link)

    async def _advertise(self) -> None:
        while True:
            for scanner in list(self._scanners):
                self._advertise_to(scanner)
            await asyncio.sleep(max(self._advertising_s / self.speed, 0.02))  # speed may change

    def _advertise_to(self, scanner: SimulatedScanner) -> None:
        if scanner not in self._scanners:
            return
        for link in self._links.values():
            wearable = link.wearable
            if not wearable.reachable or link.client is not None:
                continue
            link.adverts += 1
            jitter = float(normal(link.key, [link.adverts])[0]) * 3.0
            rssi = round(min(-20.0, max(-105.0, wearable.config.rssi_dbm + jitter)))
            adv = AdvertisementData(
                local_name=wearable.config.local_name,
                manufacturer_data={},
                service_data={},
                service_uuids=[POSTURE_SERVICE_UUID],
                tx_power=0,
                rssi=rssi,
                platform_data=(),
            )
            scanner._on_advertisement(wearable.address, wearable.config.local_name, adv)

    # -- the backends' side ------------------------------------------------------------
    def _require_running(self) -> None:
        if self._state is not WorldState.RUNNING:
            raise BleakError(f"the simulated world is {self._state.value}")

    def _add_scanner(self, scanner: SimulatedScanner) -> None:
        self._require_running()
        self._scanners.add(scanner)
        # First adverts right after start(), not a whole interval later.
        asyncio.get_running_loop().call_soon(self._advertise_to, scanner)

    def _remove_scanner(self, scanner: SimulatedScanner) -> None:
        self._scanners.discard(scanner)

    def local_name(self, address: str) -> str | None:
        link = self._links.get(address.upper())
        return None if link is None else link.wearable.config.local_name

    async def _connect(self, client: SimulatedClient, timeout_s: float) -> Link:
        """Wait until the wearable is connectable, then connect (or fail)."""
        self._require_running()
        link = self._links.get(client.address.upper())
        if link is None:
            raise BleakDeviceNotFoundError(
                client.address, f"Device with address {client.address} was not found."
            )
        config = link.wearable.config
        async with asyncio.timeout(timeout_s):
            while True:
                self._require_running()
                if link.wearable.reachable and link.client is None:
                    await self.sleep(config.connect_delay_s)
                    if link.wearable.reachable and link.client is None:
                        break
                await asyncio.sleep(self._tick_s)
        attempt = link.connect_attempts
        link.connect_attempts += 1
        if float(uniform(stream_key(link.key, "connect"), [attempt])[0]) < config.connect_failure:
            raise BleakError("le-connection-abort-by-local (simulated connect failure)")
        link.attach(client)
        return link

    async def _att(self, link: Link, client: SimulatedClient) -> None:
        """One ATT round trip: waits while the radio is silent; raises if dropped."""
        await self.sleep(_ATT_DELAY_S)
        while link.client is client and link.radio_lost_s is not None:
            await asyncio.sleep(self._tick_s)
        if link.client is not client:
            raise BleakError("Not connected")
