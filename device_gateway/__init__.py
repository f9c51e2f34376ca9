"""BLE gateway: finds the wearables, keeps them connected, decodes their packets.

``Gateway`` is imported lazily so that the wire protocol
(``device_gateway.protocol``), which the simulator also uses, does not pull in
the engine and the MQTT stack.
"""

from typing import TYPE_CHECKING, Any

from device_gateway.config import (
    BleSettings,
    BrokerConfig,
    GatewayConfig,
    PatientThresholds,
    WearableConfig,
)

if TYPE_CHECKING:
    from device_gateway.gateway import Gateway

__all__ = [
    "BleSettings",
    "BrokerConfig",
    "Gateway",
    "GatewayConfig",
    "PatientThresholds",
    "WearableConfig",
]


def __getattr__(name: str) -> Any:
    if name == "Gateway":
        from device_gateway.gateway import Gateway

        return Gateway
    raise AttributeError(f"module 'device_gateway' has no attribute {name!r}")
