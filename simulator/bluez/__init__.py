"""A BlueZ stand-in on a private D-Bus system bus, for tests and manual checks.

``PrivateSystemBus`` starts ``dbus-daemon`` on a socket of its own;
``BluezStandIn(world, bus_address=...)`` serves ``org.bluez`` on it over a
:class:`~simulator.world.SimulatedWorld`. Point bleak at it with
``DBUS_SYSTEM_BUS_ADDRESS`` and its default (BlueZ) backend runs unchanged.
``python -m simulator.bluez`` runs both for a manual check. The product never
imports this package.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from simulator.bluez.adapter import ConnectFailure
    from simulator.bluez.bus import PrivateSystemBus
    from simulator.bluez.standin import BluezStandIn

__all__ = ["BluezStandIn", "ConnectFailure", "PrivateSystemBus"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"BluezStandIn": "standin", "ConnectFailure": "adapter", "PrivateSystemBus": "bus"},
)
