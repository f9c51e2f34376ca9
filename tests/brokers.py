"""Real MQTT brokers for tests, and an independent subscriber that records.

* ``MosquittoBroker``: a private ``mosquitto -c FILE`` on a free loopback
  port (never the system broker on 1883), optionally with persistence, TLS
  (certificates made here with the ``openssl`` CLI) and a password file
  (``mosquitto_passwd``). ``stop()``/``start()`` restart it on the same port;
  ``kill()`` is a kill -9.
* ``EmbeddedTestBroker``: the same interface over ``alerts.EmbeddedBroker``
  (amqtt, MQTT 3.1.1), used when the mosquitto binary is absent.
* ``Collector``: records what a subscriber sees, with raw paho-mqtt (not our
  adapter), so tests check the wire independently of the code under test,
  MQTT 5 properties (message expiry) included.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts import EmbeddedBroker, MqttSettings
from common.ports import free_port

# How long a helper waits for something that must happen before it calls the
# test failed. Only a guard against a hang, never a measurement: with both
# cores busy, steps that take milliseconds on an idle machine can take seconds.
HANG_S = 30.0

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA, a server cert for 127.0.0.1 and a client cert."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a CA and server/client certificates with the openssl CLI."""
    if OPENSSL is None:
        raise RuntimeError("openssl CLI not found")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=posture-monitor test CA",
    )
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    )
    run("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=test-gateway")
    run(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
    )
    return TlsFiles(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


def make_password_file(path: Path, username: str, password: str) -> Path:
    """A mosquitto password file with one user (hashed by mosquitto_passwd)."""
    if MOSQUITTO_PASSWD is None:
        raise RuntimeError("mosquitto_passwd not found")
    subprocess.run(
        [MOSQUITTO_PASSWD, "-c", "-b", str(path), username, password],
        check=True,
        capture_output=True,
    )
    return path


class MosquittoBroker:
    """A private mosquitto process for one test.

    Args:
        workdir: holds the config, log and persistence files.
        persistence: keep sessions and queued messages across stop/start.
        tls: serve TLS (and a second, client-certificate listener at
            ``mtls_port``) instead of plain TCP.
        password_file: require these credentials (no anonymous access).
        extra_config: more ``mosquitto.conf`` lines, e.g. ``max_queued_messages 0``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        persistence: bool = False,
        tls: TlsFiles | None = None,
        password_file: Path | None = None,
        extra_config: tuple[str, ...] = (),
    ) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto binary not found")
        self._binary: str = MOSQUITTO
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.tls = tls
        self.password_file = password_file
        self.extra_config = extra_config
        self.host = "127.0.0.1"
        self.port = free_port()
        self.mtls_port = free_port() if tls is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT`` (``mqtts://`` for a TLS broker)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def settings(self, **overrides: Any) -> MqttSettings:
        """Client settings for this broker, fast retry timings for tests."""
        values: dict[str, Any] = {
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "connect_timeout_s": 3.0,
        }
        values.update(overrides)
        return MqttSettings.from_url(self.url, **values)

    def _config(self) -> str:
        lines = [
            "user root",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"listener {self.port} {self.host}",
        ]
        if self.tls is not None:
            tls = [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
            ]
            lines += [
                *tls,
                "require_certificate false",
                f"listener {self.mtls_port} {self.host}",
                *tls,
                "require_certificate true",
            ]
        if self.password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines += ["allow_anonymous true"]
        lines += self.extra_config
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        """Start (or restart on the same port) and wait until it accepts TCP."""
        if self.running:
            return
        config = self.workdir / "mosquitto.conf"
        config.write_text(self._config())
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                [self._binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_text()[-500:]}")
            if _port_open(self.port):
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_text()[-500:]}")

    async def stop(self) -> None:
        """Stop cleanly (SIGTERM: persistence, if on, is saved)."""
        await self._end(signal.SIGTERM)

    async def kill(self) -> None:
        """kill -9: nothing saved, every client cut."""
        await self._end(signal.SIGKILL)

    async def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        deadline = time.monotonic() + 5.0
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""


class EmbeddedTestBroker:
    """``MosquittoBroker``'s interface over the embedded amqtt broker."""

    persistence = False
    tls = None

    def __init__(self) -> None:
        self._broker = EmbeddedBroker()
        self.host = "127.0.0.1"

    @property
    def port(self) -> int:
        return self._broker.port

    @property
    def url(self) -> str:
        return self._broker.url

    @property
    def running(self) -> bool:
        return self._broker.running

    def settings(self, **overrides: Any) -> MqttSettings:
        values: dict[str, Any] = {
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "connect_timeout_s": 3.0,
        }
        values.update(overrides)
        return MqttSettings.from_url(self.url, **values)

    async def start(self) -> None:
        await self._broker.start()

    async def stop(self) -> None:
        await self._broker.stop()

    kill = stop

    def log_text(self) -> str:
        return ""


class BrokerAddress(Protocol):
    """Where a ``Collector`` connects: a broker, or one node of a cluster."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class Received:
    """One message as a subscriber saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, Any] = field(default_factory=dict)
    received_s: float = 0.0


class Collector:
    """A raw paho subscriber that records every message it receives.

    Args:
        broker: the broker to use.
        topics: filters to subscribe (QoS 1).
        client_id, clean_start, session_expiry_s: for a persistent session.
        protocol: paho protocol constant (MQTT 5 by default).
    """

    def __init__(
        self,
        broker: BrokerAddress,
        topics: list[str],
        *,
        client_id: str | None = None,
        clean_start: bool = True,
        session_expiry_s: int | None = None,
        protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
        tls_ca: Path | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.messages: list[Received] = []
        self.connects = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._protocol = protocol
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or "",
            protocol=protocol,
            clean_session=None if protocol == mqtt.MQTTv5 else clean_start,
        )
        self._client.reconnect_delay_set(1, 1)
        if tls_ca is not None:
            self._client.tls_set(ca_certs=str(tls_ca))
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_args: self._subscribed.set()
        self._client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            return
        self.connects += 1
        if not flags.session_present:
            client.subscribe([(topic, 1) for topic in self.topics])
        else:
            self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = {}
        if msg.properties is not None and hasattr(msg.properties, "MessageExpiryInterval"):
            props["MessageExpiryInterval"] = msg.properties.MessageExpiryInterval
        with self._lock:
            self.messages.append(
                Received(
                    msg.topic,
                    bytes(msg.payload),
                    msg.qos,
                    bool(msg.retain),
                    props,
                    time.monotonic(),
                )
            )

    async def start(self) -> Collector:
        props = None
        kwargs: dict[str, Any] = {}
        if self._protocol == mqtt.MQTTv5:
            if self._session_expiry_s:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self._session_expiry_s
            kwargs = {"clean_start": self._clean_start, "properties": props}
        await asyncio.to_thread(
            self._client.connect, self.broker.host, self.broker.port, 30, **kwargs
        )
        self._client.loop_start()
        if not await asyncio.to_thread(self._subscribed.wait, 5.0):
            raise RuntimeError("collector: no SUBACK within 5 s")
        return self

    async def stop(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        # paho closes its wake-up socket pair only in __del__, which may run
        # after the sockets' own finalizers when the client dies in a cycle
        # (collector <-> bound callbacks): close them now.
        self._client._reset_sockets()

    async def __aenter__(self) -> Collector:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def on_topic(self, topic: str) -> list[Received]:
        return [m for m in self.snapshot() if mqtt.topic_matches_sub(topic, m.topic)]

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout_s: float = HANG_S
    ) -> list[Received]:
        """Wait until ``predicate(messages)`` holds; fail the test otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            messages = self.snapshot()
            if predicate(messages):
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"condition not met within {timeout_s} s; got {len(messages)} message(s): "
                    f"{[(m.topic, m.payload[:60]) for m in messages[-10:]]}"
                )
            await asyncio.sleep(0.02)
