"""The service's one exception root and its few subclasses.

Each subclass also derives from the matching built-in so callers that only
know the built-in (``except ValueError``) still catch it. Errors of bleak and
paho never leak past their adapters; they are re-raised as one of these with
``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "BluetoothUnavailableError",
    "BrokerError",
    "ConfigError",
    "PacketError",
    "PostureMonitorError",
]


class PostureMonitorError(Exception):
    """Root of every error this service raises on purpose."""


class ConfigError(PostureMonitorError, ValueError):
    """A configuration or scenario file is missing or invalid.

    The message names the file and the key.
    """


class PacketError(PostureMonitorError, ValueError):
    """A notification packet from a wearable is malformed."""


class BrokerError(PostureMonitorError, ConnectionError):
    """The MQTT broker refused us, or cannot be reached."""


class BluetoothUnavailableError(PostureMonitorError, ConnectionError):
    """No usable Bluetooth adapter on this machine."""
