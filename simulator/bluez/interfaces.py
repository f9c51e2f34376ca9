"""The org.bluez adapter and device interfaces of the stand-in, as bluetoothd exports them.

Each class holds its properties in a dict and announces changes with
``PropertiesChanged``, as bluetoothd does; methods delegate to an owner
(:mod:`simulator.bluez.standin`) that knows the simulated radio. Names,
signatures, error names and messages follow BlueZ's documentation
(``doc/org.bluez.*.rst``); the GATT ones are in
:mod:`simulator.bluez.gatt_objects` and what bleak's BlueZ backend expects of them.

No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus
signatures from the annotations at class creation.
"""

from collections.abc import Awaitable
from typing import Annotated, Any, Protocol

from dbus_fast import PropertyAccess, Variant
from dbus_fast.annotations import (
    DBusBool,
    DBusInt16,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
)
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

__all__ = [
    "ERROR_DOES_NOT_EXIST",
    "ERROR_FAILED",
    "ERROR_IN_PROGRESS",
    "ERROR_NOT_CONNECTED",
    "ERROR_NOT_PERMITTED",
    "ERROR_NOT_READY",
    "Adapter1",
    "Battery1",
    "Device1",
    "Props",
]

ERROR_IN_PROGRESS = "org.bluez.Error.InProgress"
ERROR_NOT_READY = "org.bluez.Error.NotReady"
ERROR_FAILED = "org.bluez.Error.Failed"
ERROR_NOT_CONNECTED = "org.bluez.Error.NotConnected"
ERROR_NOT_PERMITTED = "org.bluez.Error.NotPermitted"
ERROR_DOES_NOT_EXIST = "org.bluez.Error.DoesNotExist"

DBusStrings = Annotated[list[str], DBusSignature("as")]
DBusVardict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
DBusManufacturerData = Annotated[dict[int, Variant], DBusSignature("a{qv}")]
DBusByte = Annotated[int, DBusSignature("y")]
DBusPaths = Annotated[list[str], DBusSignature("ao")]


class Props(ServiceInterface):
    """Properties kept in a dict; ``update`` emits ``PropertiesChanged``."""

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        super().__init__(name)
        self.values = values

    def update(self, **changed: Any) -> None:
        """Set properties and announce the ones whose value changed."""
        really = {k: v for k, v in changed.items() if self.values.get(k) != v}
        self.values.update(really)
        if really:
            self.emit_properties_changed(really)

    def notify(self, name: str, value: Any) -> None:
        """Set and announce even an equal value (a notification repeats bytes)."""
        self.values[name] = value
        self.emit_properties_changed({name: value})


class AdapterOwner(Protocol):
    """What the adapter's methods need from the stand-in."""

    def current_sender(self) -> str: ...
    def start_discovery(self, sender: str) -> None: ...
    def stop_discovery(self, sender: str) -> None: ...
    def set_discovery_filter(self, sender: str, uuids: list[str]) -> None: ...
    def remove_device(self, path: str) -> None: ...
    def set_powered(self, on: bool) -> None: ...


class Adapter1(Props):
    """``org.bluez.Adapter1`` at ``/org/bluez/hciN``."""

    def __init__(self, owner: AdapterOwner, address: str, name: str) -> None:
        super().__init__(
            "org.bluez.Adapter1",
            {
                "Address": address,
                "AddressType": "public",
                "Name": name,
                "Alias": name,
                "Powered": True,
                "Discovering": False,
                "Roles": ["central", "peripheral"],
            },
        )
        self._owner = owner

    @dbus_method()
    def StartDiscovery(self) -> None:
        self._owner.start_discovery(self._owner.current_sender())

    @dbus_method()
    def StopDiscovery(self) -> None:
        self._owner.stop_discovery(self._owner.current_sender())

    @dbus_method()
    def SetDiscoveryFilter(self, properties: DBusVardict) -> None:
        uuids = properties.get("UUIDs")
        self._owner.set_discovery_filter(
            self._owner.current_sender(), [] if uuids is None else list(uuids.value)
        )

    @dbus_method()
    def RemoveDevice(self, device: DBusObjectPath) -> None:
        self._owner.remove_device(device)

    @dbus_method()
    def GetDiscoveryFilters(self) -> DBusStrings:
        return ["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable"]

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return str(self.values["Address"])

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return str(self.values["AddressType"])

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return str(self.values["Name"])

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return str(self.values["Alias"])

    @dbus_property()
    def Powered(self) -> DBusBool:
        return bool(self.values["Powered"])

    @Powered.setter  # type: ignore[no-redef]
    def Powered(self, value: DBusBool) -> None:
        self._owner.set_powered(bool(value))

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> DBusBool:
        return bool(self.values["Discovering"])

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> DBusStrings:
        return list(self.values["Roles"])


class DeviceOwner(Protocol):
    """What a device's methods need from the stand-in."""

    def connect(self, device: "Device1") -> Awaitable[None]: ...
    def disconnect(self, device: "Device1") -> Awaitable[None]: ...


class Device1(Props):
    """``org.bluez.Device1`` at ``/org/bluez/hciN/dev_XX_XX_XX_XX_XX_XX``."""

    def __init__(self, owner: DeviceOwner, path: str, values: dict[str, Any]) -> None:
        super().__init__("org.bluez.Device1", values)
        self._owner = owner
        self.path = path

    @property
    def address(self) -> str:
        return str(self.values["Address"])

    @dbus_method()
    async def Connect(self) -> None:
        await self._owner.connect(self)

    @dbus_method()
    async def Disconnect(self) -> None:
        await self._owner.disconnect(self)

    @dbus_method()
    def Pair(self) -> None:
        # The wearable needs no bonding (docs/protocol.md); BlueZ would pair anyway.
        self.update(Paired=True, Bonded=True)

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return str(self.values["Address"])

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return str(self.values["AddressType"])

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return str(self.values["Name"])

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return str(self.values["Alias"])

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return str(self.values["Adapter"])

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> DBusBool:
        return bool(self.values["Paired"])

    @dbus_property(access=PropertyAccess.READ)
    def Bonded(self) -> DBusBool:
        return bool(self.values["Bonded"])

    @dbus_property()
    def Trusted(self) -> DBusBool:
        return bool(self.values["Trusted"])

    @Trusted.setter  # type: ignore[no-redef]
    def Trusted(self, value: DBusBool) -> None:
        self.update(Trusted=bool(value))

    @dbus_property(access=PropertyAccess.READ)
    def Blocked(self) -> DBusBool:
        return bool(self.values["Blocked"])

    @dbus_property(access=PropertyAccess.READ)
    def LegacyPairing(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> DBusBool:
        return bool(self.values["Connected"])

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:
        return bool(self.values["ServicesResolved"])

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return int(self.values["RSSI"])

    @dbus_property(access=PropertyAccess.READ)
    def TxPower(self) -> DBusInt16:
        return int(self.values["TxPower"])

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> DBusStrings:
        return list(self.values["UUIDs"])

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> DBusManufacturerData:
        return dict(self.values["ManufacturerData"])

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> DBusVardict:
        return dict(self.values["ServiceData"])


class Battery1(Props):
    """``org.bluez.Battery1`` on a connected device (BlueZ's battery plugin)."""

    def __init__(self, percentage: int) -> None:
        super().__init__("org.bluez.Battery1", {"Percentage": percentage, "Source": "GATT"})

    @dbus_property(access=PropertyAccess.READ)
    def Percentage(self) -> DBusByte:
        return int(self.values["Percentage"])

    @dbus_property(access=PropertyAccess.READ)
    def Source(self) -> DBusStr:
        return str(self.values["Source"])
