"""What the gateway must know of BlueZ that bleak does not tell: is scanning possible?

bleak's BlueZ backend reports neither that ``bluetoothd`` went away, nor
that the adapter was powered off, unplugged or stopped discovering: a
scanner started before any of these simply never calls back again, and a
gateway built on it keeps saying it is fine while no fall can be detected.
Stock BlueZ (5.48+) also hides the Battery Service from GATT clients (its
battery plugin claims it) and offers ``org.bluez.Battery1`` instead.

:class:`BluezWatch` reads both from the system bus, read-only, with the
library bleak itself uses (dbus-fast): the owner of ``org.bluez``, the
adapters (``Powered``, ``Discovering``) and the wearables' ``Battery1``
``Percentage``, from ``GetManagedObjects`` and then the signals that change
them. It honours ``DBUS_SYSTEM_BUS_ADDRESS`` as bleak does. Linux only; the
gateway imports it only when it runs on bleak's default backend there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from dbus_fast import BusType, Message, MessageType, unpack_variants
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from common.backoff import Backoff
from device_gateway.scanner import RadioHealth

__all__ = ["AdapterInfo", "BluezWatch"]

_log = logging.getLogger(__name__)

_BLUEZ = "org.bluez"
_DBUS = "org.freedesktop.DBus"
_DBUS_PATH = "/org/freedesktop/DBus"
_ADAPTER = "org.bluez.Adapter1"
_BATTERY = "org.bluez.Battery1"
_MATCHES = (
    f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{_BLUEZ}'",
    "type='signal',interface='org.freedesktop.DBus.ObjectManager',"
    "member='InterfacesAdded',arg0path='/org/bluez/'",
    "type='signal',interface='org.freedesktop.DBus.ObjectManager',"
    "member='InterfacesRemoved',arg0path='/org/bluez/'",
    # Only adapter and battery changes: never the notifications' Value changes.
    f"type='signal',interface='org.freedesktop.DBus.Properties',"
    f"member='PropertiesChanged',arg0='{_ADAPTER}'",
    f"type='signal',interface='org.freedesktop.DBus.Properties',"
    f"member='PropertiesChanged',arg0='{_BATTERY}'",
)


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """One adapter as BlueZ shows it (``name`` like ``hci0``)."""

    name: str
    address: str
    powered: bool
    discovering: bool


BatteryCallback = Callable[[int], None]


class BluezWatch:
    """The owner of ``org.bluez``, its adapters and batteries; an async context manager.

    ``adapter``: the adapter the gateway scans with (``hci1``), or None for
    the first powered one (bleak's choice). ``generation`` grows each time
    bluetoothd (re)appears on the bus: a scan started before is dead.

    Raises:
        ConnectionError (from ``__aenter__``): no system bus to connect to.
    """

    def __init__(self, adapter: str | None = None) -> None:
        self.adapter = adapter
        self.generation = 0
        self.version = 0
        """Grows with every change of bluetoothd's presence or of an adapter."""
        self._bus: MessageBus | None = None
        self._present = False
        self._adapters: dict[str, dict[str, Any]] = {}  # path -> Adapter1 properties
        self._batteries: dict[str, int] = {}  # device path -> percent
        self._battery_callbacks: dict[str, list[BatteryCallback]] = {}
        self._changed = asyncio.Event()
        self._refresh: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self._connect()
        self._keeper = asyncio.get_running_loop().create_task(
            self._stay_connected(), name="bluez watch"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in (self._keeper, self._refresh):
            if task is not None:
                task.cancel()
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.disconnect()
            with contextlib.suppress(Exception):  # it may have died on its own
                await bus.wait_for_disconnect()

    async def _connect(self) -> None:
        """Connect, subscribe, read what BlueZ has. Raises ConnectionError."""
        bus = MessageBus(bus_type=BusType.SYSTEM)
        try:
            await bus.connect()
            bus.add_message_handler(self._on_signal)
            self._bus = bus
            for rule in _MATCHES:
                await self._call(_DBUS, _DBUS_PATH, _DBUS, "AddMatch", "s", [rule])
            owner = await self._call(_DBUS, _DBUS_PATH, _DBUS, "NameHasOwner", "s", [_BLUEZ])
        except (OSError, EOFError, ValueError, DBusError) as exc:
            self._bus = None
            bus.disconnect()
            raise ConnectionError(f"cannot reach the D-Bus system bus: {exc}") from exc
        if owner is not None and owner.body[0]:
            self._present = True
            self.generation += 1
            await self._load()
        self._bump()

    async def _stay_connected(self) -> None:
        """When the system bus itself goes away (dbus restarted), say so and reconnect."""
        backoff = Backoff(0.5, 10.0)
        while True:
            bus = self._bus
            if bus is not None:
                with contextlib.suppress(Exception):  # how it died does not matter
                    await bus.wait_for_disconnect()
                _log.error("lost the D-Bus system bus; reconnecting")
                self._bus = None
                self._present = False
                self._adapters.clear()
                self._batteries.clear()
                self._bump()
            await asyncio.sleep(backoff.next_delay())
            with contextlib.suppress(ConnectionError):
                await self._connect()
                backoff.reset()
                _log.info("reconnected to the D-Bus system bus")

    # -- what the gateway asks ------------------------------------------------
    def health(self) -> RadioHealth:
        """Whether the chosen adapter can scan now, and if not, why (for the status)."""
        if self._bus is None:
            return RadioHealth.down("no_system_bus", "the D-Bus system bus is unreachable")
        if not self._present:
            return RadioHealth.down("bluez_not_running", "bluetoothd is not on the system bus")
        path = self._adapter_path()
        if path is None:
            wanted = self.adapter or "any adapter"
            return RadioHealth.down("no_adapter", f"no Bluetooth adapter ({wanted}) present")
        props = self._adapters[path]
        name = path.rsplit("/", 1)[-1]
        if not props.get("Powered", False):
            return RadioHealth.down("adapter_off", f"adapter {name} is powered off")
        return RadioHealth.up(name, discovering=bool(props.get("Discovering", False)))

    def adapters(self) -> list[AdapterInfo]:
        """Every adapter BlueZ has, sorted by name."""
        return sorted(
            (
                AdapterInfo(
                    path.rsplit("/", 1)[-1],
                    str(p.get("Address", "?")),
                    bool(p.get("Powered", False)),
                    bool(p.get("Discovering", False)),
                )
                for path, p in self._adapters.items()
            ),
            key=lambda a: a.name,
        )

    async def wait_changed(self, seen: int) -> None:
        """Return once ``version`` differs from ``seen`` (at once if it already does)."""
        if self.version == seen:
            await self._changed.wait()

    def _bump(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def watch_battery(self, device_path: str, callback: BatteryCallback) -> Callable[[], None]:
        """Call ``callback(percent)`` now if known and on every change; returns the remover."""
        callbacks = self._battery_callbacks.setdefault(device_path, [])
        callbacks.append(callback)
        if device_path in self._batteries:
            callback(self._batteries[device_path])

        def remove() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return remove

    # -- D-Bus ---------------------------------------------------------------------
    def _adapter_path(self) -> str | None:
        if self.adapter is not None:
            path = f"/org/bluez/{self.adapter}"
            return path if path in self._adapters else None
        # bleak's default: the first adapter that is powered, else the first one.
        paths = sorted(self._adapters)
        powered = [p for p in paths if self._adapters[p].get("Powered")]
        return next(iter(powered or paths), None)

    async def _call(
        self,
        dest: str,
        path: str,
        iface: str,
        member: str,
        sig: str = "",
        body: list[Any] | None = None,
    ) -> Message | None:
        if self._bus is None:
            return None
        reply = await self._bus.call(
            Message(
                destination=dest,
                path=path,
                interface=iface,
                member=member,
                signature=sig,
                body=body or [],
            )
        )
        if reply is None or reply.message_type is MessageType.ERROR:
            _log.debug("%s.%s failed: %s", iface, member, None if reply is None else reply.body)
            return None
        return reply

    async def _load(self) -> None:
        try:
            reply = await self._call(
                _BLUEZ, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"
            )
        except (OSError, EOFError, DBusError) as exc:
            # The bus went away meanwhile; _stay_connected takes it from here.
            _log.warning("reading BlueZ's objects failed: %s", exc)
            return
        self._adapters.clear()
        if reply is not None:
            for path, interfaces in reply.body[0].items():
                self._add(path, unpack_variants(interfaces))
        self._bump()

    def _add(self, path: str, interfaces: dict[str, dict[str, Any]]) -> None:
        if _ADAPTER in interfaces:
            self._adapters[path] = dict(interfaces[_ADAPTER])
            self._bump()
        if _BATTERY in interfaces and "Percentage" in interfaces[_BATTERY]:
            self._set_battery(path, int(interfaces[_BATTERY]["Percentage"]))

    def _set_battery(self, path: str, percent: int) -> None:
        self._batteries[path] = percent
        for callback in list(self._battery_callbacks.get(path, [])):
            callback(percent)

    def _on_signal(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        try:
            self._handle(msg)
        except (DBusError, ValueError, TypeError, KeyError, IndexError) as exc:
            _log.warning("ignoring a malformed BlueZ signal %s: %s", msg.member, exc)

    def _handle(self, msg: Message) -> None:
        if msg.member == "NameOwnerChanged":
            _name, _old, new = msg.body
            self._present = bool(new)
            self._adapters.clear()
            self._batteries.clear()
            if new:
                self.generation += 1
                _log.info("bluetoothd appeared on the system bus")
                self._refresh = asyncio.get_running_loop().create_task(self._load())
            else:
                _log.warning("bluetoothd left the system bus")
            self._bump()
        elif msg.member == "InterfacesAdded":
            path, interfaces = msg.body
            self._add(path, unpack_variants(interfaces))
        elif msg.member == "InterfacesRemoved":
            path, names = msg.body
            if _ADAPTER in names and self._adapters.pop(path, None) is not None:
                self._bump()
            if _BATTERY in names:
                self._batteries.pop(path, None)
        elif msg.member == "PropertiesChanged" and msg.path is not None:
            interface, changed, _invalidated = msg.body
            values = unpack_variants(changed)
            if interface == _ADAPTER and msg.path in self._adapters:
                self._adapters[msg.path].update(values)
                self._bump()
            elif interface == _BATTERY and "Percentage" in values:
                self._set_battery(msg.path, int(values["Percentage"]))
