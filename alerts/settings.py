"""Connection settings for the MQTT adapter, parsed once at the edge.

``MqttSettings.from_url("mqtts://user:pass@broker.example:8883")`` is the
usual way in; ``MqttSettings.from_urls([...])`` lists the nodes of a broker
cluster for failover. The password never appears in ``repr``,
``display_url`` or any error message: brokers of health data are worth
attacking.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import ConfigError

__all__ = ["PASSWORD_ENV", "Message", "MqttSettings", "ProtocolName", "Will", "is_loopback_host"]

logger = logging.getLogger(__name__)

ProtocolName = Literal["5", "3.1.1"]
# Where every client (the gateway's config, the physio commands) takes the
# broker password from, so it need not sit in a file or on a command line.
PASSWORD_ENV = "POSTURE_MQTT_PASSWORD"
_PROTOCOLS: tuple[str, ...] = ("5", "3.1.1")
_SCHEMES = {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883), "ssl": (True, 8883)}
# A client id stays well inside the 23 characters every 3.1.1 broker must accept
# once a short suffix is added; ours are longer but mosquitto/amqtt take 65535.
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}")
# A comma starts a new URL only when a scheme follows, so a comma inside a
# password (legal in userinfo) does not split it.
_URL_LIST_SPLIT = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1):
    traffic that never leaves this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
        incoming_queue_size: received messages buffered for ``messages()``.
            Beyond it, QoS 0 ones are dropped and counted; QoS 1/2 ones are
            never dropped: they are acknowledged only once the consumer takes
            them, so the broker holds the rest back (see ``alerts.mqtt``).
        failover: further ``(host, port)`` nodes of the same broker cluster
            (sharing sessions and retained messages), tried in turn after
            ``host``/``port``, each attempt one backoff delay after the
            last; same TLS, credentials and timeouts. See ``from_urls``.

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
    failover: tuple[tuple[str, int], ...] = ()

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
        self._check_failover()

    def _check_failover(self) -> None:
        if not isinstance(self.failover, tuple):
            raise ConfigError("MQTT setting 'failover': expected a tuple of (host, port)")
        seen = {(self.host, self.port)}
        for item in self.failover:
            ok = (
                isinstance(item, tuple)
                and len(item) == 2
                and isinstance(item[0], str)
                and bool(item[0])
                and not any(c.isspace() for c in item[0])
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
                and 0 < item[1] < 65536
            )
            if not ok:
                raise ConfigError(
                    f"MQTT setting 'failover': expected (host, port 1-65535), got {item!r:.60}"
                )
            if item in seen:
                raise ConfigError(f"MQTT setting 'failover': broker {item[0]}:{item[1]} repeated")
            seen.add(item)

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
    def password_in_clear(self) -> bool:
        """True when a password would cross plain TCP to another machine
        (no TLS, and some node is not a loopback address)."""
        hosts = [self.host, *(host for host, _port in self.failover)]
        return (
            self.password is not None
            and not self.tls
            and not all(is_loopback_host(h) for h in hosts)
        )

    def check_transport(self, *, insecure: bool) -> None:
        """Refuse (or, with ``insecure``, warn about) a password in clear text.

        Raises:
            ConfigError: ``password_in_clear`` and not ``insecure``.
        """
        if not self.password_in_clear:
            return
        where = ", ".join(self.addresses)
        if not insecure:
            raise ConfigError(
                f"refusing to send the MQTT password in clear text over plain TCP to {where}: "
                "use mqtts:// (TLS), or pass --insecure to accept that anyone on the network "
                "path can read it"
            )
        logger.warning(
            "the MQTT password goes in clear text over plain TCP to %s (--insecure)", where
        )

    @property
    def addresses(self) -> tuple[str, ...]:
        """``host:port`` of every node, this one first, then ``failover``."""
        return tuple(endpoint.address for endpoint in self.endpoints())

    def endpoints(self) -> tuple[MqttSettings, ...]:
        """One single-node settings object per broker node, in failover order."""
        first = dataclasses.replace(self, failover=())
        return (
            first,
            *(dataclasses.replace(first, host=host, port=port) for host, port in self.failover),
        )

    @property
    def display_url(self) -> str:
        """The broker URL for logs and screens, password replaced by ``***``;
        failover nodes follow the first, comma-separated."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = ""
        if self.username is not None:
            user = urllib.parse.quote(self.username, safe="")
            user += ":***@" if self.password is not None else "@"
        return f"{scheme}://{user}" + ",".join(self.addresses)

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

    @classmethod
    def from_urls(cls, urls: str | Sequence[str], **overrides: Any) -> MqttSettings:
        """Settings for the nodes of one broker cluster, first URL first.

        ``urls`` is one string or a sequence of strings, each a URL or
        comma-separated URLs (``"mqtt://a:1883,mqtt://b:1883"``). The first URL gives TLS and
        credentials; the others must use the same scheme and carry the same
        credentials or none. One URL is exactly ``from_url``.

        Raises:
            ConfigError: on an empty list, a bad URL (password redacted),
                mixed schemes or credentials, or a repeated node.
        """
        if isinstance(urls, str):
            urls = [urls]
        urls = [
            part
            for item in urls
            for part in (_URL_LIST_SPLIT.split(item.strip()) if isinstance(item, str) else [item])
            if not isinstance(part, str) or part.strip()
        ]
        if not urls:
            raise ConfigError("no broker URL given")
        first = cls.from_url(urls[0], **overrides)
        plain_first = cls.from_url(urls[0])
        failover: list[tuple[str, int]] = []
        for url in urls[1:]:
            other = cls.from_url(url)
            shown = _redact_url(url)
            if other.tls != plain_first.tls:
                raise ConfigError(
                    f"broker URL {shown!r}: every broker URL must use the same scheme "
                    "(all mqtt:// or all mqtts://)"
                )
            if other.username is not None and (other.username, other.password) != (
                plain_first.username,
                plain_first.password,
            ):
                raise ConfigError(
                    f"broker URL {shown!r}: carries other credentials than the first URL "
                    "(every node of a cluster takes the same; give them once, in the first)"
                )
            failover.append((other.host, other.port))
        return dataclasses.replace(first, failover=(*first.failover, *failover))


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
