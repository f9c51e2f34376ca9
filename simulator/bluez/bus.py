"""A private D-Bus system bus: ``dbus-daemon`` with its own configuration.

bleak's BlueZ backend talks to whatever bus ``DBUS_SYSTEM_BUS_ADDRESS``
names, so a test (or a manual check) can give it a system bus of its own,
with no root and without touching the machine's bus: a unix socket in a
temporary folder and a policy that lets the current user own any name
(``org.bluez`` included) and call anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["DBUS_DAEMON", "PrivateSystemBus"]

logger = logging.getLogger(__name__)

DBUS_DAEMON = shutil.which("dbus-daemon")
"""Path of the ``dbus-daemon`` binary (Debian package ``dbus-daemon``), or None."""

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0

# A system bus (type "system": the same limits and semantics bluetoothd
# sees) whose policy trusts everyone: it lives for one test, in a folder
# only this user can reach.
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow send_destination="*"/>
  </policy>
</busconfig>
"""


class PrivateSystemBus:
    """``dbus-daemon`` on a private socket; an async context manager.

    ``address`` (after start) is what ``DBUS_SYSTEM_BUS_ADDRESS`` should be
    set to. The folder holding the socket and the configuration is made in
    ``/tmp`` (a unix socket path must stay under 108 bytes) and removed on
    stop.

    Raises:
        FileNotFoundError: ``dbus-daemon`` is not installed.
        RuntimeError: the daemon did not start (its stderr is in the message).
    """

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._process: asyncio.subprocess.Process | None = None
        self.address = ""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the daemon and wait until it prints its address.

        After :meth:`crash` it starts again on the same socket (same address).
        """
        if DBUS_DAEMON is None:
            raise FileNotFoundError("dbus-daemon is not installed (Debian package dbus-daemon)")
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="pm-bus-"))
        socket_path = self._folder / "system_bus_socket"
        socket_path.unlink(missing_ok=True)
        config = self._folder / "system.conf"
        config.write_text(_CONFIG.format(socket=socket_path), encoding="utf-8")
        self._process = await asyncio.create_subprocess_exec(
            DBUS_DAEMON,
            f"--config-file={config}",
            "--nofork",
            "--nopidfile",
            "--print-address=1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                line = await self._process.stdout.readline()
        except TimeoutError:
            line = b""
        if not line.strip():
            err = b""
            if self._process.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        err = await self._process.stderr.read()
            await self.stop()
            raise RuntimeError(f"dbus-daemon did not start: {err.decode(errors='replace')}")
        # The daemon prints the address with a guid; clients need only the path.
        self.address = f"unix:path={socket_path}"
        logger.info("private system bus at %s", self.address)

    @property
    def pid(self) -> int | None:
        """Process id of the running daemon (for CPU accounting), else None."""
        return None if self._process is None else self._process.pid

    async def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and remove its folder. Idempotent."""
        await self.crash()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    async def crash(self) -> None:
        """The system bus goes away (every connection on it drops); ``start`` brings it back."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
