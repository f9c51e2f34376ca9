"""One paho-mqtt connection, bridged into asyncio (used only by alerts.mqtt).

A ``PahoConnection`` wraps one paho client for one network connection:
``open()`` connects, ``close()`` ends it; it is never reused. paho runs its
network loop on its own thread; every paho callback here only forwards its
arguments into the event loop with ``loop.call_soon_threadsafe``, and all
state is touched on the loop side. A new connection is a new object, so a
late callback from a dead connection cannot touch the live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.settings import Message, MqttSettings, ProtocolName, Will
from common.errors import BrokerError, ConfigError

__all__ = ["ConnectFailed", "PahoConnection", "make_ssl_context"]

logger = logging.getLogger(__name__)

# paho's default; more in flight only queue inside paho.
_MAX_INFLIGHT = 20
UNSUPPORTED_PROTOCOL = 0x84
# CONNACK refusals that retrying with the same settings cannot cure.
_PERMANENT_CONNACK = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 0x95, 0x9A, 0x9B, 0x9D, 0x9F})
_DISCONNECT_WITH_WILL = 0x04
_LOOP_STOP_TIMEOUT_S = 2.0


class _Client(mqtt.Client):
    """paho's client with one fix: paho 2.2 leaves the TLS socket open (a
    ResourceWarning and a leaked descriptor per attempt) when the handshake
    fails, e.g. on an unknown CA. Our contexts always check the host name,
    so paho's extra ``match_hostname`` step is not needed here."""

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        context = self._ssl_context
        if context is None or not context.check_hostname:
            return super()._ssl_wrap_socket(tcp_sock)
        ssl_sock = context.wrap_socket(
            tcp_sock, server_hostname=self._host, do_handshake_on_connect=False
        )
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock

    def release_sockets(self) -> None:
        """Close the broker socket and paho's wake-up socket pair now.

        paho closes the pair only in ``__del__``; when the client is
        collected as part of a reference cycle, the sockets' own finalizers
        may run first and warn (an unclosed-socket ResourceWarning, seen in
        CI). Called once paho's thread has stopped.
        """
        self._reset_sockets()


class ConnectFailed(BrokerError):
    """One failed connection attempt; ``permanent``: retrying will not help."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        unsupported_protocol: bool = False,
        no_answer: bool = False,
    ):
        super().__init__(message)
        self.permanent = permanent
        self.unsupported_protocol = unsupported_protocol
        # TCP/TLS worked but no CONNACK came: also what a 3.1.1-only broker
        # (amqtt) does with an MQTT 5 CONNECT that carries properties.
        self.no_answer = no_answer


# paho's Properties constructor is untyped; this typed alias keeps strict
# mypy quiet without an ignore that plain mypy would call unused.
_properties: Callable[[int], Properties] = Properties


def make_ssl_context(settings: MqttSettings) -> ssl.SSLContext:
    """A client TLS context that verifies the broker (and the host name).

    Raises:
        ConfigError: naming the files when they cannot be loaded.
    """
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file is not None:
            context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"MQTT TLS files (ca_file={settings.ca_file!r}, cert_file={settings.cert_file!r}) "
            f"cannot be loaded: {exc}"
        ) from exc
    return context


class PahoConnection:
    """One paho client, one network connection.

    Args:
        on_message: called on the loop for each received message with its
            packet id; a QoS 1/2 message is acknowledged to the broker only
            when :meth:`ack` is called with that id (paho's manual ack), so
            ``alerts.mqtt`` can hold a backlog back on the broker (its
            in-flight window) while its consumer falls behind, instead of
            losing acknowledged messages.
        on_lost: called on the loop once, if an established connection drops.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        protocol: ProtocolName,
        client_id: str,
        will: Will | None,
        clean_start: bool,
        session_expiry_s: int | None,
        ssl_context: ssl.SSLContext | None,
        on_message: Callable[[Message, int], None],
        on_lost: Callable[[ReasonCode], None],
        on_undecodable: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._protocol = protocol
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_undecodable = on_undecodable
        self._loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[tuple[ReasonCode, bool]] = self._loop.create_future()
        self._connect_call: asyncio.Future[Any] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._connected = False
        self._lost = False
        self._closed = False
        self._client = self._make_client(client_id, will, ssl_context)

    @property
    def connected(self) -> bool:
        """True from a successful CONNACK until the connection drops or closes."""
        return self._connected

    def _make_client(
        self, client_id: str, will: Will | None, ssl_context: ssl.SSLContext | None
    ) -> _Client:
        settings = self._settings
        v5 = self._protocol == "5"
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if v5 else self._clean_start,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,  # reconnection is alerts.mqtt's: backoff, fallback
            manual_ack=True,  # PUBACK once the consumer has taken the message (see ack())
        )
        client.connect_timeout = settings.connect_timeout_s
        client.max_inflight_messages_set(_MAX_INFLIGHT)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if ssl_context is not None:
            client.tls_set_context(ssl_context)
        if will is not None:
            will_properties = None
            if v5 and will.delay_s > 0:
                will_properties = _properties(PacketTypes.WILLMESSAGE)
                will_properties.WillDelayInterval = will.delay_s
            client.will_set(
                will.topic,
                will.payload,
                qos=will.qos,
                retain=will.retain,
                properties=will_properties,
            )
        # paho's thread: forward only.
        ts = self._threadsafe
        client.on_connect = lambda _c, _u, flags, rc, _p: ts(
            self._handle_connack, rc, bool(flags.session_present)
        )
        client.on_disconnect = lambda _c, _u, _f, rc, _p: ts(self._handle_disconnect, rc)
        client.on_publish = lambda _c, _u, mid, rc, _p: ts(self._handle_ack, mid, rc)
        client.on_subscribe = lambda _c, _u, mid, codes, _p: ts(self._handle_ack, mid, list(codes))
        client.on_message = lambda _c, _u, msg: self._paho_message(msg)
        return client

    def _threadsafe(self, handler: Callable[..., None], *args: Any) -> None:
        """Run ``handler(*args)`` on the event loop (called on paho's thread)."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(handler, *args)

    def _paho_message(self, msg: mqtt.MQTTMessage) -> None:
        try:
            message = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
        except (UnicodeDecodeError, ValueError):
            self._client.ack(msg.mid, msg.qos)  # nobody will take it: free its slot
            self._threadsafe(self._on_undecodable)
            return
        self._threadsafe(self._on_message, message, msg.mid)

    # ------------------------------------------------------- loop-side events

    def _handle_connack(self, code: ReasonCode, session_present: bool) -> None:
        if not self._connack.done():
            self._connack.set_result((code, session_present))

    def _handle_disconnect(self, code: ReasonCode) -> None:
        if self._lost:
            return
        self._lost = True
        if not self._connack.done():
            self._connack.set_exception(
                ConnectFailed(
                    f"MQTT broker at {self._settings.address} closed the connection before CONNACK",
                    permanent=False,
                    no_answer=True,
                )
            )
            self._connack.exception()  # retrieved: nobody may be awaiting it any more
        was_connected, self._connected = self._connected, False
        self.fail_pending(
            BrokerError(
                f"connection to MQTT broker at {self._settings.address} lost before the ack"
            )
        )
        if was_connected and not self._closed:
            self._on_lost(code)

    def _handle_ack(self, mid: int, result: ReasonCode | list[ReasonCode]) -> None:
        future = self._pending.pop(mid, None)
        if future is None or future.done():
            return
        if isinstance(result, ReasonCode) and result.is_failure:
            future.set_exception(
                BrokerError(
                    f"MQTT broker at {self._settings.address} refused a publish: {result.getName()}"
                )
            )
        else:
            future.set_result(result)

    def fail_pending(self, error: BrokerError) -> None:
        """Fail every publish/subscribe still waiting for its ack."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a caller that timed out must not warn
        self._pending.clear()

    # ------------------------------------------------------------- commands

    async def open(self, connack_timeout_s: float | None = None) -> bool:
        """Connect and wait for the CONNACK; return whether a session was resumed.

        Args:
            connack_timeout_s: how long to wait for the CONNACK once TCP (and
                TLS) is up, s; default ``settings.connect_timeout_s``.

        Raises:
            ConnectFailed: with ``permanent`` set for refusals that retrying
                cannot cure (credentials, certificate, protocol).
        """
        settings, client = self._settings, self._client
        if self._protocol == "5":
            properties = None
            if self._session_expiry_s:
                properties = _properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = self._session_expiry_s
            clean = self._clean_start

            def call() -> Any:
                return client.connect(
                    settings.host,
                    settings.port,
                    settings.keepalive_s,
                    clean_start=clean,
                    properties=properties,
                )
        else:

            def call() -> Any:
                return client.connect(settings.host, settings.port, settings.keepalive_s)

        # connect() blocks (DNS, TCP, TLS handshake; each bounded by the socket
        # timeout), so it runs off the loop. If we are cancelled meanwhile,
        # close() waits for it before closing the socket it opened.
        self._connect_call = self._loop.run_in_executor(None, call)
        try:
            await asyncio.shield(self._connect_call)
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(
                f"TLS certificate of MQTT broker at {settings.address} "
                f"rejected: {exc.verify_message}",
                permanent=True,
            ) from None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConnectFailed(
                f"cannot reach MQTT broker at {settings.address}: {reason}", permanent=False
            ) from None
        self._connect_call = None
        client.loop_start()
        wait_s = settings.connect_timeout_s if connack_timeout_s is None else connack_timeout_s
        try:
            async with asyncio.timeout(wait_s):
                code, session_present = await self._connack
        except TimeoutError:
            raise ConnectFailed(
                f"no CONNACK from MQTT broker at {settings.address} within {wait_s:g} s",
                permanent=False,
                no_answer=True,
            ) from None
        if code.is_failure:
            raise ConnectFailed(
                f"MQTT broker at {settings.address} refused the connection: {code.getName()}",
                permanent=code.value in _PERMANENT_CONNACK,
                unsupported_protocol=code.value == UNSUPPORTED_PROTOCOL,
            )
        if self._lost:
            raise ConnectFailed(
                f"connection to MQTT broker at {settings.address} closed right after CONNACK",
                permanent=False,
            )
        self._connected = True
        return session_present

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a received QoS 1/2 message to the broker (no-op for QoS 0
        or once this connection is gone: the broker redelivers it then)."""
        # Not gated on ``connected``: a session's queued messages may be taken
        # before open() has marked the connection up, and must be acked too.
        if qos > 0 and not (self._lost or self._closed):
            self._client.ack(mid, qos)

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, expiry_s: float | None
    ) -> asyncio.Future[Any] | None:
        """Hand a message to paho; return the future of its ack (None for QoS 0).

        Raises:
            BrokerError: when paho refuses it (not connected, queue full).
            ValueError: on an invalid topic.
        """
        properties = None
        if expiry_s is not None and self._protocol == "5":
            properties = _properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = min(0xFFFFFFFF, max(1, math.ceil(expiry_s)))
        try:
            info = self._client.publish(
                topic, payload, qos=qos, retain=retain, properties=properties
            )
        except ValueError as exc:
            raise ValueError(f"cannot publish to topic {topic!r:.80}: {exc}") from exc
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerError(
                f"publish to MQTT broker at {self._settings.address} failed: "
                f"{mqtt.error_string(info.rc)}"
            )
        return None if qos == 0 else self._expect_ack(info.mid)

    def subscribe(self, topic_filter: str, qos: int) -> asyncio.Future[Any]:
        """Send a SUBSCRIBE; return the future of the SUBACK's reason codes.

        Raises:
            BrokerError: when paho refuses it (not connected).
        """
        result, mid = self._client.subscribe(topic_filter, qos)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerError(
                f"subscribe at MQTT broker {self._settings.address} failed: "
                f"{mqtt.error_string(result)}"
            )
        return self._expect_ack(mid)

    def _expect_ack(self, mid: int) -> asyncio.Future[Any]:
        # Registered before any await: paho's ack callback reaches the loop
        # only through call_soon_threadsafe, so it cannot run before this.
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[mid] = future
        return future

    def forget(self, future: asyncio.Future[Any]) -> None:
        """Stop tracking an ack future whose waiter gave up."""
        for mid, pending in list(self._pending.items()):
            if pending is future:
                del self._pending[mid]

    async def close(self, *, send_disconnect: bool, with_will: bool = False) -> None:
        """End the connection and paho's thread, without blocking the loop.

        Args:
            send_disconnect: send DISCONNECT first (a clean end: no Will).
            with_will: on MQTT 5, DISCONNECT with reason 0x04 so the broker
                still publishes the Will (we are ending on an error).
        """
        if self._closed:
            return
        self._closed = True
        self._connected = False
        client = self._client
        pending_connect, self._connect_call = self._connect_call, None
        if pending_connect is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.shield(pending_connect), self._settings.connect_timeout_s + 1.0
                )
        with contextlib.suppress(Exception):
            if send_disconnect and with_will and self._protocol == "5":
                client.disconnect(
                    ReasonCode(PacketTypes.DISCONNECT, identifier=_DISCONNECT_WITH_WILL)
                )
            else:
                # Even without a session this wakes paho's select(), so
                # loop_stop() returns at once instead of after its 1 s tick.
                client.disconnect()
        try:
            await asyncio.wait_for(asyncio.to_thread(client.loop_stop), _LOOP_STOP_TIMEOUT_S)
        except TimeoutError:
            # The DISCONNECT could not be flushed (dead peer): shut the socket
            # so paho's loop sees EOF and its thread ends.
            sock = client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            await asyncio.to_thread(client.loop_stop)
        self.fail_pending(
            BrokerError(
                f"connection to MQTT broker at {self._settings.address} closed before the ack"
            )
        )
        # Break the client -> callback -> self cycle; paho's thread is gone.
        client.on_connect = client.on_disconnect = client.on_publish = None
        client.on_subscribe = client.on_message = None
        client.release_sockets()
