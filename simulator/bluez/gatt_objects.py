"""The org.bluez GATT interfaces of the stand-in: services, characteristics, descriptors.

Exported per connection under the device's object path, removed when the
link drops (as BlueZ does for a device that is not bonded). Reads, writes
and notification switches are delegated to the simulated link.

No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus
signatures from the annotations at class creation.
"""

import contextlib
from collections.abc import Awaitable, Callable, Iterator

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError, BleakGATTProtocolError
from dbus_fast import DBusError, PropertyAccess
from dbus_fast.annotations import DBusBool, DBusBytes, DBusObjectPath, DBusStr, DBusUInt16
from dbus_fast.service import dbus_method, dbus_property

from simulator.bluez.interfaces import (
    ERROR_FAILED,
    ERROR_NOT_PERMITTED,
    DBusPaths,
    DBusStrings,
    DBusVardict,
    Props,
)

__all__ = ["GattCharacteristic1", "GattDescriptor1", "GattService1", "relayed_characteristic"]


class GattService1(Props):
    """``org.bluez.GattService1`` at ``.../serviceHHHH``."""

    def __init__(self, uuid: str, device_path: str, handle: int) -> None:
        super().__init__(
            "org.bluez.GattService1",
            {"UUID": uuid, "Device": device_path, "Primary": True, "Handle": handle},
        )

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return str(self.values["UUID"])

    @dbus_property(access=PropertyAccess.READ)
    def Device(self) -> DBusObjectPath:
        return str(self.values["Device"])

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> DBusBool:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Includes(self) -> DBusPaths:
        return []

    @dbus_property(access=PropertyAccess.READ)
    def Handle(self) -> DBusUInt16:
        return int(self.values["Handle"])


# The GATT operations a characteristic delegates to the simulated link.
GattRead = Callable[[], Awaitable[bytes]]
GattWrite = Callable[[bytes, bool], Awaitable[None]]
GattNotify = Callable[[bool], Awaitable[None]]


class GattCharacteristic1(Props):
    """``org.bluez.GattCharacteristic1`` at ``.../serviceHHHH/charHHHH``."""

    def __init__(
        self,
        uuid: str,
        service_path: str,
        handle: int,
        flags: list[str],
        mtu: int,
        *,
        read: GattRead,
        write: GattWrite,
        notify: GattNotify,
    ) -> None:
        super().__init__(
            "org.bluez.GattCharacteristic1",
            {
                "UUID": uuid,
                "Service": service_path,
                "Value": b"",
                "Notifying": False,
                "Flags": flags,
                "MTU": mtu,
                "Handle": handle,
            },
        )
        self._read = read
        self._write = write
        self._notify = notify

    @dbus_method()
    async def ReadValue(self, options: DBusVardict) -> DBusBytes:
        value = await self._read()
        self.update(Value=value)
        return value

    @dbus_method()
    async def WriteValue(self, value: DBusBytes, options: DBusVardict) -> None:
        kind = options.get("type")
        with_response = kind is None or kind.value != "command"
        await self._write(bytes(value), with_response)

    @dbus_method()
    async def StartNotify(self) -> None:
        if "notify" not in self.values["Flags"] and "indicate" not in self.values["Flags"]:
            raise DBusError("org.bluez.Error.NotSupported", "Operation is not supported")
        if self.values["Notifying"]:
            return
        await self._notify(True)
        self.update(Notifying=True)

    @dbus_method()
    async def StopNotify(self) -> None:
        if not self.values["Notifying"]:
            raise DBusError(ERROR_FAILED, "No notify session started")
        await self._notify(False)
        self.update(Notifying=False)

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return str(self.values["UUID"])

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObjectPath:
        return str(self.values["Service"])

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:
        return bytes(self.values["Value"])

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> DBusBool:
        return bool(self.values["Notifying"])

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrings:
        return list(self.values["Flags"])

    @dbus_property(access=PropertyAccess.READ)
    def MTU(self) -> DBusUInt16:
        return int(self.values["MTU"])

    @dbus_property(access=PropertyAccess.READ)
    def Handle(self) -> DBusUInt16:
        return int(self.values["Handle"])


class GattDescriptor1(Props):
    """``org.bluez.GattDescriptor1`` (the CCCD) at ``.../charHHHH/descHHHH``."""

    def __init__(self, uuid: str, characteristic_path: str, handle: int) -> None:
        super().__init__(
            "org.bluez.GattDescriptor1",
            {"UUID": uuid, "Characteristic": characteristic_path, "Value": b"", "Handle": handle},
        )

    @dbus_method()
    def ReadValue(self, options: DBusVardict) -> DBusBytes:
        return bytes(self.values["Value"])

    @dbus_method()
    def WriteValue(self, value: DBusBytes, options: DBusVardict) -> None:
        # BlueZ refuses CCCD writes from clients: StartNotify is the way.
        raise DBusError(ERROR_NOT_PERMITTED, "Write not permitted")

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return str(self.values["UUID"])

    @dbus_property(access=PropertyAccess.READ)
    def Characteristic(self) -> DBusObjectPath:
        return str(self.values["Characteristic"])

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:
        return bytes(self.values["Value"])

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrings:
        return ["read"]

    @dbus_property(access=PropertyAccess.READ)
    def Handle(self) -> DBusUInt16:
        return int(self.values["Handle"])


def relayed_characteristic(
    char: BleakGATTCharacteristic,
    service_path: str,
    mtu: int,
    client: Callable[[], BleakClient | None],
    on_value: Callable[[bytes], None],
) -> GattCharacteristic1:
    """``char`` of the simulated link as a D-Bus characteristic.

    ``client()`` is the link's bleak client (None once it dropped);
    ``on_value`` receives every notification of the link.
    """

    def connected() -> BleakClient:
        link = client()
        if link is None:
            raise DBusError(ERROR_FAILED, "Not connected")
        return link

    async def read() -> bytes:
        with _gatt_errors():
            return bytes(await connected().read_gatt_char(char.uuid))

    async def write(value: bytes, with_response: bool) -> None:
        with _gatt_errors():
            await connected().write_gatt_char(char.uuid, value, response=with_response)

    async def notify(on: bool) -> None:
        with _gatt_errors():
            if on:
                await connected().start_notify(char.uuid, lambda _c, data: on_value(bytes(data)))
            else:
                await connected().stop_notify(char.uuid)

    return GattCharacteristic1(
        char.uuid,
        service_path,
        char.handle,
        list(char.properties),
        mtu,
        read=read,
        write=write,
        notify=notify,
    )


@contextlib.contextmanager
def _gatt_errors() -> Iterator[None]:
    """bleak errors of the simulated link as the D-Bus errors BlueZ sends."""
    try:
        yield
    except BleakGATTProtocolError as exc:
        if exc.code == 0x02:
            raise DBusError(ERROR_NOT_PERMITTED, "Read not permitted") from exc
        if exc.code == 0x03:
            raise DBusError(ERROR_NOT_PERMITTED, "Write not permitted") from exc
        raise DBusError(ERROR_FAILED, f"Operation failed with ATT error: 0x{exc.code:02x}") from exc
    except BleakError as exc:
        raise DBusError(ERROR_FAILED, "Not connected") from exc
