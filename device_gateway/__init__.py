"""BLE gateway: finds the wearables, keeps them connected, decodes their packets."""

from device_gateway.config import (
    BleSettings,
    BrokerConfig,
    GatewayConfig,
    PatientThresholds,
    WearableConfig,
)
from device_gateway.gateway import Gateway

__all__ = [
    "BleSettings",
    "BrokerConfig",
    "Gateway",
    "GatewayConfig",
    "PatientThresholds",
    "WearableConfig",
]
