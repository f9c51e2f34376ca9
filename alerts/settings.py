"""Connection settings for the MQTT adapter, parsed once at the edge.

``MqttSettings.from_url("mqtts://user:pass@broker.example:8883")`` is the
usual way in. The password never appears in ``repr``, ``display_url`` or any
error message: brokers of health data are worth attacking.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import ConfigError

__all__ = ["Message", "MqttSettings", "ProtocolName", "Will"]

ProtocolName = Literal["5", "3.1.1"]
_PROTOCOLS: tuple[str, ...] = ("5", "3.1.1")
_SCHEMES = {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883), "ssl": (True, 8883)}
# A client id stays well inside the 23 characters every 3.1.1 broker must accept
# once a short suffix is added; ours are longer but mosquitto/amqtt take 65535.
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for error messages)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@dataclass(frozen=True)
class MqttSettings:
    """How to reach and talk to the broker.

    Attributes:
        host, port: the broker; port 1-65535.
        username, password: optional credentials (the password is hidden
            from ``repr``).
        protocol: "5" (default) or "3.1.1". With "5", a broker that refuses
            protocol 5 (amqtt) is retried once with 3.1.1 when
            ``protocol_fallback`` is True.
        tls: use TLS; ``ca_file`` (PEM) verifies the broker (system CAs when
            None); ``cert_file``/``key_file`` give a client certificate.
        keepalive_s: MQTT keepalive, s.
        client_id_prefix: generated client ids start with it.
        connect_timeout_s: how long the first connection may take before
            ``MqttClient.__aenter__`` raises ``BrokerError``, s; also the TCP
            and TLS handshake timeout of each attempt.
        reconnect_min_s, reconnect_max_s: first and largest reconnect delay,
            s; delays double per failed attempt and are jittered.
        ack_timeout_s: how long ``publish``/``subscribe`` wait for the
            broker's acknowledgement, s.
        incoming_queue_size: received messages buffered for ``messages()``;
            beyond it new messages are dropped and counted.

    Raises:
        ConfigError: naming the field when a value is out of range.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    protocol: ProtocolName = "5"
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    client_id_prefix: str = "posture-monitor"
    connect_timeout_s: float = 5.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    ack_timeout_s: float = 30.0
    incoming_queue_size: int = 10_000
    protocol_fallback: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host or any(c.isspace() for c in self.host):
            raise ConfigError(f"MQTT setting 'host': expected a host name, got {self.host!r:.60}")
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"MQTT setting 'port': expected 1-65535, got {self.port!r}")
        if self.protocol not in _PROTOCOLS:
            raise ConfigError(
                f"MQTT setting 'protocol': expected '5' or '3.1.1', got {self.protocol!r}"
            )
        if self.password is not None and self.username is None:
            raise ConfigError("MQTT setting 'password': given without a 'username'")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("MQTT settings 'cert_file' and 'key_file': give both or neither")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ConfigError("MQTT settings 'ca_file'/'cert_file' need 'tls' = true")
        if _PREFIX.fullmatch(self.client_id_prefix) is None:
            raise ConfigError(
                "MQTT setting 'client_id_prefix': expected 1-32 characters of A-Z a-z 0-9 _ -, "
                f"got {self.client_id_prefix!r:.40}"
            )
        if not 0 < self.keepalive_s <= 65535:
            raise ConfigError(
                f"MQTT setting 'keepalive_s': expected 1-65535, got {self.keepalive_s!r}"
            )
        for name in ("connect_timeout_s", "reconnect_min_s", "reconnect_max_s", "ack_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < 1e6:
                raise ConfigError(f"MQTT setting {name!r}: expected a positive number of seconds")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError("MQTT setting 'reconnect_max_s': must be >= 'reconnect_min_s'")
        if self.incoming_queue_size < 1:
            raise ConfigError("MQTT setting 'incoming_queue_size': must be >= 1")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
        )
        secret = ", password='***'" if self.password is not None else ""
        return f"MqttSettings({shown}{secret})"

    @property
    def address(self) -> str:
        """``host:port`` (what error messages name)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def display_url(self) -> str:
        """The broker URL for logs and screens, password replaced by ``***``."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = ""
        if self.username is not None:
            user = urllib.parse.quote(self.username, safe="")
            user += ":***@" if self.password is not None else "@"
        return f"{scheme}://{user}{self.address}"

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttSettings:
        """Settings from ``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...``.

        ``mqtt``/``tcp`` default to port 1883 without TLS, ``mqtts``/``ssl``
        to 8883 with TLS. User and password are percent-decoded. Keyword
        ``overrides`` set any other field (``protocol="3.1.1"``,
        ``ca_file=...``).

        Raises:
            ConfigError: on an unknown scheme, a missing host, a bad port, a
                path/query in the URL or an unknown override; the message
                shows the URL with its password redacted.
        """
        shown = _redact_url(url) if isinstance(url, str) else repr(url)
        if not isinstance(url, str):
            raise ConfigError(f"invalid broker URL {shown}: expected a string")
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError:
            # The message of urlsplit's error may quote the URL: do not chain it.
            raise ConfigError(f"invalid broker URL {shown!r}: bad host or port") from None
        if parts.scheme not in _SCHEMES:
            raise ConfigError(
                f"invalid broker URL {shown!r}: scheme must be mqtt:// or mqtts://"
            ) from None
        if not parts.hostname:
            raise ConfigError(f"invalid broker URL {shown!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"invalid broker URL {shown!r}: unexpected path, query or fragment")
        tls, default_port = _SCHEMES[parts.scheme]
        values: dict[str, Any] = {"host": parts.hostname, "port": port or default_port, "tls": tls}
        if parts.username is not None:
            values["username"] = urllib.parse.unquote(parts.username)
        if parts.password is not None:
            values["password"] = urllib.parse.unquote(parts.password)
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise ConfigError(
                    f"unknown MQTT setting {key!r} (known: {', '.join(sorted(known))})"
                )
            values[key] = value
        return cls(**values)


@dataclass(frozen=True)
class Will:
    """The Last Will the broker publishes if we vanish without a DISCONNECT.

    ``delay_s`` is the MQTT 5 will delay: a reconnect within it cancels the
    will, so a network blip does not flap the status (ignored on 3.1.1).
    """

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True
    delay_s: int = 0

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ValueError(f"Will.qos: expected 0, 1 or 2, got {self.qos!r}")
        if self.delay_s < 0:
            raise ValueError(f"Will.delay_s: expected >= 0 s, got {self.delay_s!r}")


@dataclass(frozen=True)
class Message:
    """A received message (what ``MqttClient.messages()`` yields)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
