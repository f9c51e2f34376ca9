"""BLE gateway: finds the wearables, keeps them connected, decodes their packets.

The wire protocol (``device_gateway.protocol``), which the simulator also
uses, must stay light: every name here is imported on first use, so
importing the protocol does not pull in the engine and the MQTT stack.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from device_gateway.config import (
        BleSettings,
        BrokerConfig,
        GatewayConfig,
        WearableConfig,
    )
    from device_gateway.gateway import Gateway

__all__ = [
    "BleSettings",
    "BrokerConfig",
    "Gateway",
    "GatewayConfig",
    "WearableConfig",
]

# Each name's module is imported on first use (see common.lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BleSettings": "config",
        "BrokerConfig": "config",
        "Gateway": "gateway",
        "GatewayConfig": "config",
        "WearableConfig": "config",
    },
)
