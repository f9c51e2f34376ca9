"""The one asyncio adapter around paho-mqtt 2.x (in the manner of aiomqtt).

``MqttClient`` owns the lifecycle, reconnection and the public API; each
network connection is an ``alerts.connection.PahoConnection`` (paho's thread
crosses into the loop only through ``loop.call_soon_threadsafe`` there).

Delivery contract (what callers may rely on):

* ``publish(qos>=1)`` returns after the broker's PUBACK, or raises
  ``BrokerError``. The adapter never retransmits behind the caller's back:
  when a connection drops, its in-flight publishes fail and paho's in-memory
  copies die with it. Durable retry is ``alerts.outbox``'s job.
* Reconnection (capped, jittered exponential backoff) is automatic;
  callbacks registered with ``add_connect_callback`` run after every
  connection, and subscriptions are renewed when the broker did not keep
  the session.
* A received QoS 1/2 message is acknowledged (PUBACK) on arrival while
  fewer than ``incoming_queue_size`` messages wait for the consumer; beyond
  that, only when the consumer of ``messages()`` comes back for the next one
  (it handled this one), so the broker's in-flight window (Mosquitto's
  ``max_inflight_messages``, 20 by default) holds the rest of a backlog on
  the broker. No QoS 1 message is ever dropped here; only QoS 0 ones beyond
  ``incoming_queue_size`` are (counted), as the broker itself would.
* ``clean_start=True`` starts a clean session on the first connection only;
  reconnections resume it, so the broker honours the Will delay over a blip.
* With protocol "5", a broker that refuses protocol 5 (amqtt, NATS) is used
  with 3.1.1 instead (logged once), unless ``settings.protocol_fallback`` is
  off.
* Failover: with ``settings.failover`` (nodes of one broker cluster), each
  connection attempt after a failure or a lost connection goes to the next
  node in turn, one backoff delay after the last attempt. The cluster keeps
  the session and retained messages, so a node's loss costs one reconnect.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from paho.mqtt.reasoncodes import ReasonCode

from alerts.connection import ConnectFailed, PahoConnection, make_ssl_context
from alerts.settings import Message, MqttSettings, ProtocolName, Will
from alerts.topics import check_topic_filter, check_topic_name
from common.backoff import Backoff
from common.errors import BrokerError, ConfigError

__all__ = ["ConnectCallback", "Message", "MqttClient", "MqttSettings", "Will"]

logger = logging.getLogger(__name__)

ConnectCallback = Callable[[], Awaitable[None] | None]

# While protocol 5 is unproven on this broker, a CONNACK that takes longer
# than this is taken as "does not speak 5" (amqtt never answers an MQTT 5
# CONNECT with properties); the rest of the budget goes to 3.1.1.
_V5_PROBE_S = 2.0
# A connection that lived this long resets the backoff; a broker that kicks
# us at once (two clients with one id) must not cause a tight reconnect loop.
_STABLE_CONNECTION_S = 5.0


@dataclass(frozen=True, slots=True)
class _Received:
    message: Message
    # The connection to acknowledge it on once taken; None: acknowledged on arrival.
    conn: PahoConnection | None
    mid: int


class _Lifecycle(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class MqttClient:
    """An MQTT connection as an async context manager.

    Args:
        settings: broker address, credentials, TLS, timeouts.
        client_id: stable id (needed for a persistent session); default
            ``{client_id_prefix}-{12 hex}``.
        will: Last Will the broker publishes if we vanish.
        clean_start: True starts a clean session on the first connection
            (reconnections resume it); False resumes any existing session.
        session_expiry_s: MQTT 5 session expiry, s (None: the session ends
            at disconnect). On 3.1.1 a non-clean session never expires.
        wait_for_connection: True (default): ``__aenter__`` retries until
            connected and raises ``BrokerError`` after
            ``settings.connect_timeout_s``. False: an unreachable broker is
            logged and retried in the background (a gateway must start and
            queue alerts before the network is up); a permanent refusal
            (credentials, certificate, not authorized) still raises.

    Raises:
        BrokerError: from ``__aenter__`` as above; names host:port, never
            the password.
        ConfigError: from ``__aenter__`` when TLS files cannot be loaded.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str | None = None,
        will: Will | None = None,
        clean_start: bool = True,
        session_expiry_s: int | None = None,
        wait_for_connection: bool = True,
    ) -> None:
        if not isinstance(settings, MqttSettings):
            raise TypeError(f"settings: expected MqttSettings, got {type(settings).__name__}")
        if client_id is None:
            client_id = f"{settings.client_id_prefix}-{uuid.uuid4().hex[:12]}"
        if not isinstance(client_id, str) or not 0 < len(client_id) <= 128 or "\0" in client_id:
            raise ConfigError(f"MQTT client id: expected 1-128 characters, got {client_id!r:.40}")
        if session_expiry_s is not None and not 0 <= session_expiry_s <= 0xFFFFFFFF:
            raise ConfigError(f"session_expiry_s: expected 0..2**32-1 s, got {session_expiry_s!r}")
        self._settings = settings
        self._endpoints = settings.endpoints()
        self._endpoint_index = 0
        self._client_id = client_id
        self._will = will
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._wait_for_connection = wait_for_connection
        self._protocol: ProtocolName = settings.protocol
        self._v5_proven = False
        self._state = _Lifecycle.NEW
        self._ssl_context: ssl.SSLContext | None = None
        self._conn: PahoConnection | None = None
        self._connected_event = asyncio.Event()
        self._lost_event = asyncio.Event()
        self._session_present = False
        self._has_connected = False
        self._connected_since_s = 0.0
        self._connect_count = 0
        self._last_error: BrokerError | None = None
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self._subscriptions: dict[str, int] = {}
        self._incoming: asyncio.Queue[_Received | None] = asyncio.Queue()
        self._dropped_messages = 0
        self._callbacks: list[ConnectCallback] = []
        self._tasks: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._hooks: asyncio.Task[None] | None = None

    # ----------------------------------------------------------- properties

    @property
    def settings(self) -> MqttSettings:
        """The settings this client was made with."""
        return self._settings

    @property
    def address(self) -> str:
        """``host:port`` of the node connected to (or being tried)."""
        return self._endpoints[self._endpoint_index].address

    @property
    def client_id(self) -> str:
        """The MQTT client id."""
        return self._client_id

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss of that connection."""
        return self._conn is not None and self._conn.connected

    @property
    def protocol(self) -> ProtocolName:
        """The protocol in use: "5", or "3.1.1" (asked for, or fallen back to)."""
        return self._protocol

    @property
    def session_present(self) -> bool:
        """Whether the broker resumed a session at the latest connection."""
        return self._session_present

    @property
    def connect_count(self) -> int:
        """Successful connections so far (reconnections = this - 1)."""
        return self._connect_count

    @property
    def dropped_messages(self) -> int:
        """Received messages dropped because ``messages()`` fell behind."""
        return self._dropped_messages

    @property
    def last_error(self) -> BrokerError | None:
        """The latest failed connection attempt's error (None once connected)."""
        return self._last_error

    def add_connect_callback(self, callback: ConnectCallback) -> None:
        """Run ``callback()`` (sync or async) after every successful connection.

        Callbacks added before ``__aenter__`` also run for the first one. They
        run in order in a task of this client, after lost subscriptions are
        renewed; an exception is logged and does not stop the others.
        """
        self._callbacks.append(callback)

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._state is not _Lifecycle.NEW:
            raise RuntimeError("an MqttClient can be entered only once")
        if self._settings.tls:
            self._ssl_context = make_ssl_context(self._settings)
        self._state = _Lifecycle.OPEN
        try:
            await self._first_connect()
            self._tasks = asyncio.TaskGroup()
            await self._tasks.__aenter__()
        except BaseException:
            await self._close(with_will=False)
            raise
        self._supervisor = self._tasks.create_task(
            self._supervise(), name=f"mqtt-supervisor-{self._client_id}"
        )
        if self.connected:
            self._start_hooks()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving on an error: ask the broker to publish our Will, since we
        # did not finish cleanly. Cancellation (Ctrl-C) counts as clean.
        await self._close(with_will=exc_type is not None and issubclass(exc_type, Exception))

    async def _close(self, *, with_will: bool) -> None:
        if self._state in (_Lifecycle.CLOSING, _Lifecycle.CLOSED):
            return
        self._state = _Lifecycle.CLOSING
        if self._tasks is not None:
            for task in (self._supervisor, self._hooks):
                if task is not None:
                    task.cancel()
            await self._tasks.__aexit__(None, None, None)
        conn, self._conn = self._conn, None
        if conn is not None:
            was_connected = conn.connected
            await conn.close(send_disconnect=was_connected, with_will=with_will)
            if was_connected and not with_will:
                await self._end_311_session()
        self._incoming.put_nowait(None)
        self._state = _Lifecycle.CLOSED
        self._connected_event.set()  # wakes wait_connected(), which then raises

    async def _end_311_session(self) -> None:
        """On 3.1.1, end the session our reconnections kept (a clean close).

        Reconnections resume the session (clean_session=0) so nothing is lost
        over a blip; but a 3.1.1 session never expires, and the broker would
        queue QoS 1 messages for this client id forever (NATS keeps them in
        JetStream). A caller that asked for a clean start does not want it
        after exit: one connection with clean_session=1 removes it.
        """
        if self._protocol != "3.1.1" or not self._clean_start or self._connect_count < 2:
            return
        conn = PahoConnection(
            self._endpoints[self._endpoint_index],
            protocol="3.1.1",
            client_id=self._client_id,
            will=None,
            clean_start=True,
            session_expiry_s=None,
            ssl_context=self._ssl_context,
            on_message=lambda _message, _mid: None,
            on_lost=lambda _code: None,
            on_undecodable=lambda: None,
        )
        try:
            await conn.open(min(2.0, self._settings.connect_timeout_s))
        except BrokerError as exc:
            logger.info("could not remove the MQTT 3.1.1 session at exit: %s", exc)
        finally:
            await conn.close(send_disconnect=conn.connected)

    def _require_open(self) -> None:
        if self._state is not _Lifecycle.OPEN:
            raise BrokerError(f"MQTT client for {self.address} is {self._state.value}, not open")

    async def wait_connected(self) -> None:
        """Return once connected.

        Raises:
            BrokerError: if the client is (or becomes) closed.
        """
        self._require_open()
        await self._connected_event.wait()
        self._require_open()

    # ---------------------------------------------------- publish/subscribe

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> None:
        """Publish one message.

        Args:
            topic: topic name (no wildcards).
            payload: bytes.
            qos: 0 returns once paho accepted it; 1 and 2 return after the
                broker acknowledged it.
            retain: ask the broker to keep it as the topic's last value.
            expiry_s: MQTT 5 message expiry, s (rounded up; ignored on 3.1.1).

        Raises:
            BrokerError: when not connected, on a refusal (MQTT 5 PUBACK
                reason code), no ack within ``settings.ack_timeout_s``, or
                the connection dropping first.
            ValueError: on an invalid topic, qos or expiry.
        """
        self._require_open()
        if qos not in (0, 1, 2):
            raise ValueError(f"qos: expected 0, 1 or 2, got {qos!r}")
        if not isinstance(payload, bytes | bytearray):
            raise TypeError(f"payload: expected bytes, got {type(payload).__name__}")
        if expiry_s is not None and not expiry_s > 0:
            raise ValueError(f"expiry_s: expected > 0 s, got {expiry_s!r}")
        # Checked here: paho (MQTT 5) sends a wildcard topic, and the broker
        # then drops the whole connection for a protocol error.
        check_topic_name(topic)
        conn = self._live_connection()
        ack = conn.publish(topic, bytes(payload), qos, retain, expiry_s)
        if ack is not None:
            await self._await_ack(conn, ack, "PUBACK")

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe, and keep the subscription across reconnections.

        When connected this returns after the SUBACK; when not, the filter is
        remembered and subscribed at the next connection.

        Raises:
            BrokerError: when the broker refuses it or does not answer.
            ValueError: on an invalid filter or qos.
        """
        self._require_open()
        if qos not in (0, 1, 2):
            raise ValueError(f"qos: expected 0, 1 or 2, got {qos!r}")
        check_topic_filter(topic_filter)
        self._subscriptions[topic_filter] = qos
        if self.connected:
            await self._subscribe_now(topic_filter, qos)

    async def _subscribe_now(self, topic_filter: str, qos: int) -> None:
        conn = self._live_connection()
        codes: list[ReasonCode] = await self._await_ack(
            conn, conn.subscribe(topic_filter, qos), "SUBACK"
        )
        refused = [code for code in codes if code.is_failure]
        if refused:
            raise BrokerError(
                f"MQTT broker at {self.address} refused the "
                f"subscription to {topic_filter!r}: {refused[0].getName()}"
            )

    def _live_connection(self) -> PahoConnection:
        conn = self._conn
        if conn is None or not conn.connected:
            raise BrokerError(f"not connected to MQTT broker at {self.address}")
        return conn

    async def _await_ack(self, conn: PahoConnection, ack: asyncio.Future[Any], what: str) -> Any:
        try:
            async with asyncio.timeout(self._settings.ack_timeout_s):
                return await ack
        except TimeoutError:
            raise BrokerError(
                f"no {what} from MQTT broker at {self.address} within "
                f"{self._settings.ack_timeout_s:g} s"
            ) from None
        finally:
            conn.forget(ack)

    def messages(self) -> AsyncIterator[Message]:
        """Received messages, in arrival order, until the client closes.

        One queue feeds every iterator. A QoS 1/2 message arriving while
        ``incoming_queue_size`` messages already wait is acknowledged to the
        broker only when the iterator is asked for the next one (the consumer
        is done with it), so a slow consumer holds a backlog back on the
        broker, never drops it. QoS 0 messages beyond ``incoming_queue_size``
        waiting are dropped and counted in ``dropped_messages``.
        """
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        taken: _Received | None = None
        try:
            while True:
                if taken is not None and taken.conn is not None:
                    taken.conn.ack(taken.mid, taken.message.qos)
                taken = None
                item = await self._incoming.get()
                if item is None:
                    self._incoming.put_nowait(None)  # let any other iterator end too
                    return
                taken = item
                yield item.message
        finally:
            if taken is not None and taken.conn is not None:  # taken, so handled
                taken.conn.ack(taken.mid, taken.message.qos)

    def _deliver(self, message: Message, conn: PahoConnection, mid: int) -> None:
        if self._state is not _Lifecycle.OPEN:
            return
        full = self._incoming.qsize() >= self._settings.incoming_queue_size
        if message.qos == 0:
            if full:
                self._count_drop("queue full")
            else:
                self._incoming.put_nowait(_Received(message, None, mid))
            return
        if full:  # held back: acknowledged once the consumer takes it
            self._incoming.put_nowait(_Received(message, conn, mid))
            return
        # Room to wait here: acknowledge now, so a broker that answers nothing
        # else before this PUBACK (amqtt, during a SUBSCRIBE) is never stalled.
        conn.ack(mid, message.qos)
        self._incoming.put_nowait(_Received(message, None, mid))

    def _count_drop(self, why: str = "undecodable topic") -> None:
        self._dropped_messages += 1
        # Log the first drop and then every power of two, not every message.
        if self._dropped_messages & (self._dropped_messages - 1) == 0:
            logger.error(
                "dropped %d received MQTT message(s) so far (%s) from %s",
                self._dropped_messages,
                why,
                self.address,
            )

    def _on_lost(self, code: ReasonCode) -> None:
        self._connected_event.clear()
        if self._state is _Lifecycle.OPEN:
            logger.warning("connection to MQTT broker at %s lost: %s", self.address, code.getName())
            # The node may be dead: the next attempt tries the next node.
            self._next_endpoint()
            self._lost_event.set()

    def _next_endpoint(self) -> None:
        self._endpoint_index = (self._endpoint_index + 1) % len(self._endpoints)

    @property
    def _all_addresses(self) -> str:
        return ", ".join(self._settings.addresses)

    # ------------------------------------------------------------ connecting

    async def _first_connect(self) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        # Each node gets the full connect timeout (one unreachable node may
        # take all of it before the next is tried).
        budget_s = settings.connect_timeout_s * len(self._endpoints)
        deadline = loop.time() + budget_s
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    try:
                        await self._attempt()
                        return
                    except ConnectFailed as exc:
                        self._last_error = exc
                        if exc.permanent:
                            raise BrokerError(str(exc)) from None
                        self._next_endpoint()
                        if not self._wait_for_connection:
                            logger.warning("%s; retrying in the background", exc)
                            self._lost_event.set()
                            return
                    # The deadline is also checked here, not only enforced by
                    # cancellation: Python 3.11's wait_for (used when closing a
                    # failed attempt) can swallow the timeout's cancellation,
                    # which left this loop retrying forever.
                    remaining_s = deadline - loop.time()
                    if remaining_s <= 0:
                        raise TimeoutError
                    await asyncio.sleep(min(self._backoff.next_delay(), remaining_s))
        except TimeoutError:
            detail = f": {self._last_error}" if self._last_error else ""
            if self._wait_for_connection:
                raise BrokerError(
                    f"cannot connect to MQTT broker at {self._all_addresses} within "
                    f"{budget_s:g} s{detail}"
                ) from None
            logger.warning(
                "no connection to MQTT broker at %s within %g s%s; retrying in the background",
                self._all_addresses,
                budget_s,
                detail,
            )
            self._lost_event.set()

    @property
    def _may_fall_back(self) -> bool:
        return self._protocol == "5" and self._settings.protocol_fallback and not self._v5_proven

    async def _attempt(self) -> None:
        """Connect once; once more with 3.1.1 if the broker refuses protocol 5
        (or never answers it, while 5 is unproven on this broker)."""
        try:
            await self._attempt_once()
        except ConnectFailed as exc:
            if not (self._may_fall_back and (exc.unsupported_protocol or exc.no_answer)):
                raise
            logger.warning(
                "MQTT broker at %s refuses protocol 5 (%s); using 3.1.1 (no "
                "message expiry, no will delay)",
                self.address,
                exc,
            )
            self._protocol = "3.1.1"
            await self._attempt_once()

    async def _attempt_once(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            await old.close(send_disconnect=False)
        bound: list[PahoConnection] = []  # the connection a message came on, for its ack
        conn = PahoConnection(
            self._endpoints[self._endpoint_index],
            protocol=self._protocol,
            client_id=self._client_id,
            will=self._will,
            clean_start=self._clean_start and not self._has_connected,
            session_expiry_s=self._session_expiry_s,
            ssl_context=self._ssl_context,
            on_message=lambda message, mid: self._deliver(message, bound[0], mid),
            on_lost=self._on_lost,
            on_undecodable=self._count_drop,
        )
        bound.append(conn)
        self._conn = conn
        probe_s = min(_V5_PROBE_S, self._settings.connect_timeout_s / 2)
        session_present = await conn.open(probe_s if self._may_fall_back else None)
        self._v5_proven = self._v5_proven or self._protocol == "5"
        self._session_present = session_present
        self._has_connected = True
        self._connect_count += 1
        self._connected_since_s = time.monotonic()
        self._last_error = None
        self._lost_event.clear()
        self._connected_event.set()
        logger.info(
            "connected to MQTT broker at %s (MQTT %s, session present: %s)",
            self.address,
            self._protocol,
            session_present,
        )

    async def _supervise(self) -> None:
        """Reconnect after every loss, with capped, jittered backoff."""
        settings = self._settings
        while True:
            await self._lost_event.wait()
            if time.monotonic() - self._connected_since_s >= _STABLE_CONNECTION_S:
                self._backoff.reset()
            while True:
                delay = self._backoff.next_delay()
                if isinstance(self._last_error, ConnectFailed) and self._last_error.permanent:
                    delay = max(delay, settings.reconnect_max_s)
                logger.info("reconnecting to MQTT broker at %s in %.2f s", self.address, delay)
                await asyncio.sleep(delay)
                try:
                    await self._attempt()
                    break
                except ConnectFailed as exc:
                    self._last_error = exc
                    self._next_endpoint()
                    (logger.error if exc.permanent else logger.warning)("%s", exc)
            self._start_hooks()

    def _start_hooks(self) -> None:
        if self._tasks is None:
            return
        if self._hooks is not None and not self._hooks.done():
            self._hooks.cancel()
        self._hooks = self._tasks.create_task(
            self._run_hooks(), name=f"mqtt-on-connect-{self._client_id}"
        )

    async def _run_hooks(self) -> None:
        failed: list[tuple[str, int]] = []
        if not self._session_present:
            failed = await self._renew(list(self._subscriptions.items()), first=True)
        for callback in list(self._callbacks):
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("MQTT connect callback %r failed", callback)
        # A refused renewal is retried while this connection lives: NATS
        # refuses new QoS 1 subscriptions for the seconds JetStream takes to
        # re-elect after a node loss, and a subscriber without its
        # subscription would miss every alert until the next reconnection.
        backoff = Backoff(self._settings.reconnect_min_s, self._settings.reconnect_max_s)
        while failed and self.connected:
            await asyncio.sleep(backoff.next_delay())
            failed = await self._renew(failed, first=False)

    async def _renew(self, wanted: list[tuple[str, int]], *, first: bool) -> list[tuple[str, int]]:
        """Subscribe to each ``(filter, qos)``; return those the broker refused."""
        failed = []
        for topic_filter, qos in wanted:
            if topic_filter not in self._subscriptions:
                continue
            try:
                await self._subscribe_now(topic_filter, qos)
            except BrokerError as exc:
                failed.append((topic_filter, qos))
                (logger.error if first else logger.debug)(
                    "could not renew subscription %r (retrying): %s", topic_filter, exc
                )
            else:
                if not first:
                    logger.warning("renewed subscription %r after a refusal", topic_filter)
        return failed
