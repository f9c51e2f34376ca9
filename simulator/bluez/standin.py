"""A stand-in for ``bluetoothd`` on a (private) system bus, over a simulated ward.

:class:`BluezStandIn` owns the name ``org.bluez`` on the bus at
``bus_address`` and exports what bleak's BlueZ backend reads: the
ObjectManager at ``/`` (dbus-fast answers ``GetManagedObjects`` and sends
``InterfacesAdded``/``InterfacesRemoved``), one ``org.bluez.Adapter1`` per
adapter, and per wearable in range ``Device1``, its GATT objects and
``Battery1`` (see :mod:`simulator.bluez.adapter`). The wearables are those
of a running :class:`~simulator.world.SimulatedWorld`, so samples, faults
and timing are the simulator's.

Besides serving, it misbehaves on request, the way a Bluetooth stack does:
``power(adapter, False)``, ``unplug``/``plug`` an adapter, ``crash`` and
``start`` again (the bus name vanishes and comes back, every link drops,
nothing is cached), ``fail_connect`` (scripted BlueZ errors), ``mute`` (the
link stays up but notifications stop) and ``forget`` (a device leaves the
object tree).

Why a stand-in on dbus-fast and not python-dbusmock's ``bluez5`` template:
dbusmock needs dbus-python, a C extension that needs libdbus headers and a
compiler to install here; its templates run in a separate process driven by
D-Bus calls, so feeding 5 notifications per second per wearable from the
simulator's physics would mean a D-Bus round trip per packet through a mock
control API; and its template has no GATT objects. dbus-fast is the library
bleak itself uses, already installed with bleak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from simulator.bluez.adapter import ABORTED_NEW, ABORTED_OLD, ConnectFailure, StandInAdapter
from simulator.world import SimulatedWorld

__all__ = ["BLUEZ_NAME", "BluezStandIn", "ConnectFailure"]

logger = logging.getLogger(__name__)

BLUEZ_NAME = "org.bluez"
_SWEEP_S = 0.25
_SEND_BUFFER_BYTES = 4 << 20


class BluezStandIn:
    """bluetoothd's D-Bus face over ``world``; an async context manager.

    Args:
        world: a running simulated world (the radio).
        bus_address: the bus to serve on, e.g. ``unix:path=/tmp/x/socket``.
        adapters: adapter names, e.g. ``("hci0",)``; each powered at start.
        absent: adapters of ``adapters`` not plugged in at start (see ``plug``).
        battery_plugin: hide the Battery Service and expose ``Battery1``, as
            stock BlueZ (5.48+) does; False is ``bluetoothd -P battery``.
        bluez_version: "5.66" words an aborted LE connection
            ``le-connection-abort-by-local``; below 5.62 it is
            ``Software caused connection abort``.
        le_connect_timeout_s: how long a ``Connect`` to an unreachable device
            waits before failing (real time).
        temporary_timeout_s: a device neither connected nor seen for this long
            leaves the object tree (BlueZ's ``TemporaryTimeout``, 30 s).
    """

    def __init__(
        self,
        world: SimulatedWorld,
        *,
        bus_address: str,
        adapters: tuple[str, ...] = ("hci0",),
        absent: tuple[str, ...] = (),
        battery_plugin: bool = True,
        bluez_version: str = "5.66",
        le_connect_timeout_s: float = 5.0,
        temporary_timeout_s: float = 30.0,
    ) -> None:
        self.world = world
        self.bus_address = bus_address
        self.adapter_names = adapters
        self.battery_plugin = battery_plugin
        self.version = bluez_version
        major, minor = (int(p) for p in bluez_version.split(".")[:2])
        self.abort_message = ABORTED_NEW if (major, minor) >= (5, 62) else ABORTED_OLD
        self.le_connect_timeout_s = le_connect_timeout_s
        self.temporary_timeout_s = temporary_timeout_s
        self.adapters: dict[str, StandInAdapter] = {}
        self.unplugged: set[str] = set(absent)
        self.current_sender = ""
        self.notifications = 0
        """IMU and other notifications relayed as ``PropertiesChanged`` since start."""
        self.connect_calls = 0
        self.failed_connects: list[tuple[str, str]] = []
        """(address, "error name: message") of every failed ``Connect``."""
        self.removed_devices: list[str] = []
        """Addresses whose device object left the tree, in order."""
        self.scripted_failures: dict[str, deque[ConnectFailure]] = {}
        self._bus: MessageBus | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

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
        await self.crash()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    @property
    def running(self) -> bool:
        """True while the stand-in owns ``org.bluez`` on the bus."""
        return self._bus is not None

    async def start(self) -> None:
        """Connect, take the name ``org.bluez``, export the plugged adapters.

        Raises:
            RuntimeError: already running, or the name is taken.
        """
        if self._bus is not None:
            raise RuntimeError("the BlueZ stand-in is already running")
        bus = MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM)
        await bus.connect()
        # dbus-fast (5.2) drops the whole connection when a write would block
        # (EAGAIN; python-dbus-next issue 153): seen with 40 wearables while
        # dbus-daemon was starved of CPU. Room for seconds of notifications
        # (the kernel caps it at net.core.wmem_max).
        sock = getattr(bus, "_sock", None)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER_BYTES)
        bus.add_message_handler(self._on_message)
        await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"],
            )
        )
        self._bus = bus
        reply = await bus.request_name(BLUEZ_NAME)
        if reply.value != 1:  # 1: primary owner
            await self.crash()
            raise RuntimeError(f"could not own {BLUEZ_NAME} (reply {reply!r})")
        self.adapters = {}
        for index, name in enumerate(self.adapter_names):
            if name not in self.unplugged:
                self._add_adapter(name, index)
        self._sweeper = self.spawn(self._sweep(), "temporary devices")
        logger.info("BlueZ stand-in %s serving on %s", self.version, self.bus_address)

    async def crash(self) -> None:
        """bluetoothd dies: every link drops, the name and all objects vanish. Idempotent."""
        bus, self._bus = self._bus, None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if bus is not None:
            bus.disconnect()
            # The bus may have died first (the daemon stopped): nothing to wait for.
            with contextlib.suppress(Exception):
                await bus.wait_for_disconnect()
            logger.info("BlueZ stand-in stopped")
        for adapter in self.adapters.values():
            adapter.shut_down_silently()
        self.adapters = {}

    async def restart(self) -> None:
        """bluetoothd restarts: crash, then serve again with an empty cache."""
        await self.crash()
        await self.start()

    # -- faults ------------------------------------------------------------------
    def power(self, adapter: str, on: bool) -> None:
        """Power an adapter off or on (``bluetoothctl power off``, rfkill)."""
        self.adapters[adapter].set_powered(on)

    def unplug(self, adapter: str) -> None:
        """The adapter is removed (USB unplugged): it and its devices leave the tree."""
        state = self.adapters.pop(adapter)
        self.unplugged.add(adapter)
        state.shut_down()
        for path in list(state.all_paths()):
            self.unexport(path)
        self.unexport(state.path)

    def plug(self, adapter: str) -> None:
        """The adapter is back (re-plugged or reset): powered, nothing discovered yet."""
        self.unplugged.discard(adapter)
        self._add_adapter(adapter, self.adapter_names.index(adapter))

    def fail_connect(self, address: str, *failures: ConnectFailure) -> None:
        """The next ``Connect`` calls to ``address`` fail with these errors, in order."""
        self.scripted_failures.setdefault(address.upper(), deque()).extend(failures)

    def record_failure(self, address: str, error: str) -> None:
        self.failed_connects.append((address.upper(), error))

    def mute(self, address: str, muted: bool = True, *, adapter: str = "hci0") -> None:
        """Notifications from ``address`` stop (or resume) while the link stays up."""
        self.adapters[adapter]._device(address).muted = muted

    def forget(self, address: str, *, adapter: str = "hci0") -> None:
        """The device leaves the object tree (``RemoveDevice``; a connected one drops)."""
        state = self.adapters[adapter]
        state.remove_device(state.device_path(address))

    # -- observation -------------------------------------------------------------
    def connected(self, address: str, *, adapter: str = "hci0") -> bool:
        state = self.adapters.get(adapter)
        device = None if state is None else state.devices.get(address.upper())
        return device is not None and device.client is not None

    def known(self, address: str, *, adapter: str = "hci0") -> bool:
        """The device has an object in the tree (cached, connected or not)."""
        state = self.adapters.get(adapter)
        return state is not None and address.upper() in state.devices

    def connections(self) -> int:
        return sum(a.connected_count() for a in self.adapters.values())

    # -- for the adapters ----------------------------------------------------------
    def export(self, path: str, iface: ServiceInterface) -> None:
        if self._bus is not None:
            self._bus.export(path, iface)

    def unexport(self, path: str, iface: ServiceInterface | None = None) -> None:
        if self._bus is not None:
            self._bus.unexport(path, iface)

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``work`` in the background, logging (never raising) its failure."""
        task = asyncio.get_running_loop().create_task(work, name=f"bluez {name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("stand-in task %s failed: %r", task.get_name(), task.exception())

    def _add_adapter(self, name: str, index: int) -> None:
        state = StandInAdapter(self, name, f"00:1A:7D:DA:71:{index:02X}")
        self.adapters[name] = state
        self.export(state.path, state.iface)

    def _on_message(self, msg: Message) -> None:
        # Discovery sessions belong to the calling client: remember who calls,
        # and end the sessions of clients that leave the bus.
        if msg.message_type is MessageType.METHOD_CALL:
            self.current_sender = msg.sender or ""
        elif msg.member == "NameOwnerChanged" and msg.body and not msg.body[2]:
            for adapter in self.adapters.values():
                adapter.client_gone(msg.body[0])

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SWEEP_S)
            for adapter in list(self.adapters.values()):
                adapter.forget_stale(loop.time(), self.temporary_timeout_s)
