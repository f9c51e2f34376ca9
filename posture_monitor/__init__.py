"""Command line and wiring of the posture-monitoring service."""

from common.errors import (
    BluetoothUnavailableError,
    BrokerError,
    ConfigError,
    PacketError,
    PostureMonitorError,
)

__all__ = [
    "BluetoothUnavailableError",
    "BrokerError",
    "ConfigError",
    "PacketError",
    "PostureMonitorError",
]
