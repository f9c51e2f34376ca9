"""The GATT table a simulated wearable serves (docs/protocol.md).

Handles are ATT value handles as a real device would lay them out: each
service declaration, then per characteristic its declaration, value and
Client Characteristic Configuration Descriptor (CCCD) where it notifies.
"""

from __future__ import annotations

from dataclasses import dataclass

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.uuids import normalize_uuid_16

from device_gateway.protocol import (
    BATTERY_LEVEL_CHAR_UUID,
    BATTERY_SERVICE_UUID,
    CONTROL_CHAR_UUID,
    IMU_CHAR_UUID,
    MAX_ATT_PAYLOAD,
    POSTURE_SERVICE_UUID,
)
from simulator.config import WearableConfig

__all__ = [
    "BATTERY_LEVEL_HANDLE",
    "CCCD_UUID",
    "CONTROL_HANDLE",
    "DEVICE_INFO_SERVICE_UUID",
    "FIRMWARE_REVISION_HANDLE",
    "IMU_HANDLE",
    "MANUFACTURER",
    "MANUFACTURER_NAME_HANDLE",
    "MODEL_NUMBER_HANDLE",
    "build_services",
    "read_only_values",
]

MTU = MAX_ATT_PAYLOAD + 3
CCCD_UUID = normalize_uuid_16(0x2902)
DEVICE_INFO_SERVICE_UUID = normalize_uuid_16(0x180A)
_MODEL_NUMBER_UUID = normalize_uuid_16(0x2A24)
_FIRMWARE_REVISION_UUID = normalize_uuid_16(0x2A26)
_MANUFACTURER_NAME_UUID = normalize_uuid_16(0x2A29)
MANUFACTURER = "PostureWear (simulated)"

IMU_HANDLE = 0x0012
CONTROL_HANDLE = 0x0015
BATTERY_LEVEL_HANDLE = 0x0022
MODEL_NUMBER_HANDLE = 0x0032
FIRMWARE_REVISION_HANDLE = 0x0034
MANUFACTURER_NAME_HANDLE = 0x0036


@dataclass(frozen=True, slots=True)
class _Char:
    handle: int
    uuid: str
    properties: tuple[str, ...]
    cccd: bool = False


_TABLE: tuple[tuple[int, str, tuple[_Char, ...]], ...] = (
    (
        0x0010,
        POSTURE_SERVICE_UUID,
        (
            _Char(IMU_HANDLE, IMU_CHAR_UUID, ("notify",), cccd=True),
            _Char(CONTROL_HANDLE, CONTROL_CHAR_UUID, ("write", "write-without-response")),
        ),
    ),
    (
        0x0020,
        BATTERY_SERVICE_UUID,
        (_Char(BATTERY_LEVEL_HANDLE, BATTERY_LEVEL_CHAR_UUID, ("read", "notify"), cccd=True),),
    ),
    (
        0x0030,
        DEVICE_INFO_SERVICE_UUID,
        (
            _Char(MODEL_NUMBER_HANDLE, _MODEL_NUMBER_UUID, ("read",)),
            _Char(FIRMWARE_REVISION_HANDLE, _FIRMWARE_REVISION_UUID, ("read",)),
            _Char(MANUFACTURER_NAME_HANDLE, _MANUFACTURER_NAME_UUID, ("read",)),
        ),
    ),
)


def _max_write_without_response() -> int:
    return MTU - 3


def build_services(config: WearableConfig) -> BleakGATTServiceCollection:
    """A fresh service collection, as service discovery after connecting returns."""
    collection = BleakGATTServiceCollection()
    for service_handle, service_uuid, chars in _TABLE:
        service = BleakGATTService(config.address, service_handle, service_uuid)
        collection.add_service(service)
        for char in chars:
            characteristic = BleakGATTCharacteristic(
                config.address,
                char.handle,
                char.uuid,
                list(char.properties),  # type: ignore[arg-type]
                _max_write_without_response,
                service,
            )
            collection.add_characteristic(characteristic)
            if char.cccd:
                collection.add_descriptor(
                    BleakGATTDescriptor(config.address, char.handle + 1, CCCD_UUID, characteristic)
                )
    return collection


def read_only_values(config: WearableConfig) -> dict[int, bytes]:
    """Values of the Device Information characteristics, by handle."""
    return {
        MODEL_NUMBER_HANDLE: config.model.encode(),
        FIRMWARE_REVISION_HANDLE: config.firmware.encode(),
        MANUFACTURER_NAME_HANDLE: MANUFACTURER.encode(),
    }
