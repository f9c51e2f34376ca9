"""Command line and wiring of the posture-monitoring service."""

from posture_monitor.errors import (
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
