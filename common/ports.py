"""A free TCP port for a server this process is about to start.

``bind(0)`` hands out a port from the kernel's ephemeral range, the same
range every outgoing ``connect()`` on the machine draws its source port
from. Between probing such a port and the server binding it, any connection
may take it: a CI run lost a NATS node that way (its route port became the
source port of another node's connection a few milliseconds earlier). A port
below the ephemeral range is never given to an outgoing connection, so only
another listener can take it, and the probe below checks there is none.

A port handed out is not bound until its server starts, so the probe cannot
see it: a process starting several servers at once (a three-node cluster
takes nine ports) would get the same port twice about once in 350 clusters.
The ports handed out lately are therefore never handed out again.
"""

from __future__ import annotations

import random
import socket
from collections import deque
from pathlib import Path

__all__ = ["free_port"]

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LINUX_DEFAULT_EPHEMERAL_LOW = 32768
# Below this sit the registered services (PostgreSQL 5432, MQTT 1883, ...).
_LOWEST_PICK = 20000
_ATTEMPTS = 200
# Its own generator: a test that seeds ``random`` must not make every call
# try the same ports in the same order.
_pick = random.Random()
# The last ports handed out, in order: far fewer than the range holds.
_recent: deque[int] = deque(maxlen=1024)


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _LINUX_DEFAULT_EPHEMERAL_LOW


def _bindable(family: socket.AddressFamily, host: str, port: int) -> bool:
    with socket.socket(family) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, outside the ephemeral range if it can.

    Falls back to the kernel's choice (``bind(0)``) when the ephemeral range
    leaves no room below it or no port there is free.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = _ephemeral_low()
    if low - _LOWEST_PICK >= 1000:
        for _ in range(_ATTEMPTS):
            port = _pick.randrange(_LOWEST_PICK, low)
            if port not in _recent and _bindable(family, host, port):
                _recent.append(port)
                return port
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        port = int(probe.getsockname()[1])
    _recent.append(port)
    return port
