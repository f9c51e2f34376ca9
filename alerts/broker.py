"""EmbeddedBroker: the pure-Python amqtt broker, for the demo and for tests
on a machine without Mosquitto.

amqtt 0.12 speaks MQTT 3.1.1 only; ``MqttClient`` falls back to it on its
own, or use ``EmbeddedBroker.settings()``, which asks for 3.1.1 directly.
It keeps nothing across ``stop()``/``start()`` (no persistence) and logs a
warning per QoS 1 message, so its loggers are turned down to ERROR while a
broker runs (unless the application already set their level).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker

from alerts.settings import MqttSettings
from common.errors import BrokerError, ConfigError
from common.ports import free_port

__all__ = ["EmbeddedBroker"]

logger = logging.getLogger(__name__)

# amqtt's own loggers and the state-machine library it uses.
_NOISY_LOGGERS = {"amqtt": logging.ERROR, "transitions": logging.WARNING}
_START_ATTEMPTS = 3


class EmbeddedBroker:
    """An in-process MQTT 3.1.1 broker as an async context manager.

    Args:
        host: address to listen on (default loopback only).
        port: TCP port; 0 picks a free one (then kept across restarts).

    Attributes:
        url: ``mqtt://host:port`` once started.

    Raises:
        BrokerError: from ``start()`` when the broker cannot listen.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port < 65536:
            raise ConfigError(f"embedded broker port: expected 0-65535, got {port!r}")
        self._host = host
        self._requested_port = port
        self._port = port
        self._broker: Broker | None = None
        self._saved_levels: dict[str, int] = {}
        self._started_once = False

    @property
    def host(self) -> str:
        """The listening address."""
        return self._host

    @property
    def port(self) -> int:
        """The listening port (0 until first started with port=0)."""
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://host:port`` for ``MqttSettings.from_url``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"mqtt://{host}:{self._port}"

    def settings(self, **overrides: Any) -> MqttSettings:
        """Client settings for this broker, with protocol "3.1.1": amqtt speaks
        nothing else, and saying so skips the MQTT 5 probe (up to 2 s when
        the client sends a Will or a session expiry)."""
        return MqttSettings.from_url(self.url, **{"protocol": "3.1.1", **overrides})

    @property
    def running(self) -> bool:
        """Whether the broker is accepting connections."""
        return self._broker is not None

    def _config(self) -> dict[str, Any]:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{self._port}"}},
            # Only anonymous auth: no $SYS publisher and no packet logger,
            # which would log every packet.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    def _quiet_loggers(self) -> None:
        for name, level in _NOISY_LOGGERS.items():
            named = logging.getLogger(name)
            if named.level == logging.NOTSET:
                self._saved_levels[name] = named.level
                named.setLevel(level)

    def _restore_loggers(self) -> None:
        for name, level in self._saved_levels.items():
            logging.getLogger(name).setLevel(level)
        self._saved_levels.clear()

    async def start(self) -> None:
        """Start listening (again, on the same port after a ``stop()``)."""
        if self._broker is not None:
            return
        self._quiet_loggers()
        last_error: Exception | None = None
        for _attempt in range(_START_ATTEMPTS):
            if self._requested_port == 0 and self._port == 0:
                self._port = free_port(self._host)
            broker = Broker(self._config())
            try:
                await broker.start()
            except Exception as exc:  # amqtt wraps OSError in its own BrokerError
                last_error = exc
                with contextlib.suppress(Exception):
                    await broker.shutdown()
                if self._requested_port == 0 and not self._started_once:
                    self._port = 0  # raced for the port with someone: pick another
                    continue
                break
            self._broker = broker
            self._started_once = True
            logger.info("embedded MQTT broker listening on %s", self.url)
            return
        self._restore_loggers()
        raise BrokerError(
            f"embedded MQTT broker cannot listen on {self._host}:{self._port}: {last_error}"
        ) from last_error

    async def stop(self) -> None:
        """Stop listening and drop every session and retained message."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            await broker.shutdown()
        finally:
            # Let amqtt's connection handlers finish their cancellation.
            await asyncio.sleep(0)
            self._restore_loggers()
            logger.info("embedded MQTT broker on %s stopped", self.url)

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
