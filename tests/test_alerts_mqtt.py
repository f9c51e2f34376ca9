"""The MQTT adapter against real brokers: a private mosquitto, and amqtt."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from brokers import HANG_S, Collector, EmbeddedTestBroker, MosquittoBroker, free_port

from alerts import Message, MqttClient, MqttSettings, Will
from common.errors import BrokerError, ConfigError

MakeCollector = Callable[..., Awaitable[Collector]]
AnyBroker = MosquittoBroker | EmbeddedTestBroker


async def next_message(client: MqttClient, timeout_s: float = HANG_S) -> Message:
    async with asyncio.timeout(timeout_s):
        async for message in client.messages():
            return message
    raise AssertionError("message iterator ended")


async def test_publish_qos1_reaches_a_subscriber_with_retain(broker: AnyBroker) -> None:
    async with MqttClient(broker.settings()) as sub, MqttClient(broker.settings()) as pub:
        assert sub.connected and pub.connected
        await sub.subscribe("t/+/x", qos=1)
        await pub.publish("t/a/x", b"hello", qos=1)
        message = await next_message(sub)
        assert message == Message("t/a/x", b"hello", 1, False)
        await pub.publish("t/b/x", b"kept", qos=1, retain=True)
    async with MqttClient(broker.settings(protocol="3.1.1")) as late:
        assert late.protocol == "3.1.1"
        await late.subscribe("t/b/x")
        message = await next_message(late)
        assert (message.payload, message.retain) == (b"kept", True)


async def test_unreachable_broker_is_a_clear_broker_error_within_the_timeout() -> None:
    port = free_port()
    settings = MqttSettings.from_url(
        f"mqtt://user:hunter2@127.0.0.1:{port}", connect_timeout_s=0.6, reconnect_min_s=0.05
    )
    # Unreachable is temporary: retried until the connect timeout, and the
    # error says so.
    with pytest.raises(BrokerError, match=rf"127\.0\.0\.1:{port} within 0\.6 s") as info:
        async with MqttClient(settings):
            pass
    assert "hunter2" not in str(info.value)
    # Not waiting: the client opens at once, says it is not connected, and
    # publishing is an error rather than a silent drop.
    async with MqttClient(settings, wait_for_connection=False) as client:
        assert not client.connected and client.last_error is not None
        with pytest.raises(BrokerError, match="not connected"):
            await client.publish("t", b"x", qos=1)


async def test_reconnects_after_a_broker_restart_and_renews_subscriptions(
    broker: AnyBroker,
) -> None:
    connects: list[float] = []
    async with MqttClient(broker.settings()) as sub, MqttClient(broker.settings()) as pub:
        sub.add_connect_callback(lambda: connects.append(time.monotonic()))
        await sub.subscribe("r/#")
        await broker.stop()
        async with asyncio.timeout(30):  # both notice the loss
            while sub.connected or pub.connected:
                await asyncio.sleep(0.01)
        with pytest.raises(BrokerError):
            await pub.publish("r/1", b"lost?", qos=1)
        await broker.start()
        async with asyncio.timeout(HANG_S):
            await sub.wait_connected()
            await pub.wait_connected()
            while not connects:  # callbacks run after the subscriptions are renewed
                await asyncio.sleep(0.01)
        await pub.publish("r/1", b"after restart", qos=1)
        assert (await next_message(sub)).payload == b"after restart"
        assert sub.connect_count == 2 and pub.connect_count == 2


async def test_amqtt_refuses_protocol_5_and_the_client_falls_back_once(
    embedded_broker: EmbeddedTestBroker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="alerts.mqtt"):
        async with (
            MqttClient(embedded_broker.settings()) as sub,
            MqttClient(embedded_broker.settings()) as pub,
        ):
            assert sub.protocol == pub.protocol == "3.1.1"
            await sub.subscribe("e/#")
            await pub.publish("e/1", b"via amqtt", qos=1, expiry_s=30)  # expiry ignored on 3.1.1
            assert (await next_message(sub)).payload == b"via amqtt"
    fallbacks = [r for r in caplog.records if "refuses protocol 5" in r.getMessage()]
    assert len(fallbacks) == 2  # once per client


async def test_leaving_on_an_error_publishes_the_will_and_a_clean_exit_does_not(
    broker: MosquittoBroker, collector: MakeCollector
) -> None:
    if not isinstance(broker, MosquittoBroker):
        pytest.skip("needs MQTT 5 (DISCONNECT with will)")
    col = await collector(broker, ["will/#"])
    will = Will("will/a", b"gone", qos=1, retain=False)
    async with MqttClient(broker.settings(), will=will):
        pass
    with pytest.raises(RuntimeError, match="boom"):
        async with MqttClient(
            broker.settings(), will=Will("will/b", b"crashed", qos=1, retain=False)
        ):
            raise RuntimeError("boom")
    messages = await col.wait_for(lambda ms: any(m.topic == "will/b" for m in ms))
    assert [m.topic for m in messages] == ["will/b"]


async def test_bad_topics_and_filters_are_value_errors(broker: AnyBroker) -> None:
    async with MqttClient(broker.settings()) as client:
        for topic in ("a/+/b", "a/#", ""):
            with pytest.raises(ValueError):
                await client.publish(topic, b"x", qos=1)
        for topic_filter in ("a/b#", "a/#/b", "a+/b", ""):
            with pytest.raises(ValueError):
                await client.subscribe(topic_filter)
        with pytest.raises(ValueError, match="qos"):
            await client.publish("a", b"x", qos=3)


async def test_incoming_overflow_drops_qos0_only_and_holds_qos1_back(broker: AnyBroker) -> None:
    async with (
        MqttClient(broker.settings(incoming_queue_size=5)) as sub,
        MqttClient(broker.settings()) as pub,
    ):
        await sub.subscribe("o/#", qos=1)
        for i in range(20):
            await pub.publish(f"o/{i}", b"x", qos=0)
        async with asyncio.timeout(HANG_S):
            while sub.dropped_messages < 15:
                await asyncio.sleep(0.01)
        assert sub.dropped_messages == 15
        # Nobody consumes yet: QoS 1 messages wait (on the broker beyond its
        # in-flight window), none is dropped however many come.
        for i in range(60):
            await pub.publish(f"o/q{i}", b"x", qos=1)
        got = [(await next_message(sub)).topic for _ in range(65)]
        assert got == [f"o/{i}" for i in range(5)] + [f"o/q{i}" for i in range(60)]
        assert sub.dropped_messages == 15


async def test_messages_iterator_ends_when_the_client_closes(broker: AnyBroker) -> None:
    client = MqttClient(broker.settings())
    async with client:
        iterator = client.messages()
    async with asyncio.timeout(1):
        assert [m async for m in iterator] == []
    with pytest.raises(BrokerError, match="closed"):
        await client.publish("a", b"x")


# ---------------------------------------------------------------- TLS


async def test_tls_with_password_works_and_the_password_never_shows(
    tls_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    assert tls_broker.tls is not None
    password: str = tls_broker.password  # type: ignore[attr-defined]
    url = f"mqtts://{tls_broker.username}:{password}@127.0.0.1:{tls_broker.port}"  # type: ignore[attr-defined]
    settings = MqttSettings.from_url(
        url, ca_file=str(tls_broker.tls.ca_cert), connect_timeout_s=3.0
    )
    assert password not in repr(settings) and password not in settings.display_url
    with caplog.at_level(logging.DEBUG):
        async with MqttClient(settings) as sub, MqttClient(settings) as pub:
            await sub.subscribe("secure/#")
            await pub.publish("secure/1", b"over tls", qos=1)
            assert (await next_message(sub)).payload == b"over tls"
        wrong = MqttSettings.from_url(
            url.replace(password, "wrong-" + password[::-1]),
            ca_file=str(tls_broker.tls.ca_cert),
            connect_timeout_s=3.0,
        )
        with pytest.raises(BrokerError, match="refused") as info:
            async with MqttClient(wrong):
                pass
        # Permanent: refused at the first attempt, not retried until the timeout.
        assert "within" not in str(info.value)
        assert password[::-1] not in str(info.value)
    assert password not in caplog.text and password[::-1] not in caplog.text
    assert caplog.records  # the check above looked at real log output


async def test_tls_rejects_an_unknown_ca_and_uses_client_certificates(
    tls_broker: MosquittoBroker,
) -> None:
    tls = tls_broker.tls
    assert tls is not None
    user, password = tls_broker.username, tls_broker.password  # type: ignore[attr-defined]
    # System CAs do not know our test CA.
    untrusted = MqttSettings.from_url(
        f"mqtts://{user}:{password}@127.0.0.1:{tls_broker.port}", connect_timeout_s=3.0
    )
    with pytest.raises(BrokerError, match="certificate"):
        async with MqttClient(untrusted):
            pass
    mtls_url = f"mqtts://{user}:{password}@127.0.0.1:{tls_broker.mtls_port}"
    with_cert = MqttSettings.from_url(
        mtls_url,
        ca_file=str(tls.ca_cert),
        cert_file=str(tls.client_cert),
        key_file=str(tls.client_key),
        connect_timeout_s=3.0,
    )
    async with MqttClient(with_cert) as client:
        await client.publish("mtls/1", b"x", qos=1)
    without_cert = MqttSettings.from_url(
        mtls_url, ca_file=str(tls.ca_cert), connect_timeout_s=1.0, reconnect_min_s=0.05
    )
    with pytest.raises(BrokerError):
        async with MqttClient(without_cert):
            pass
    missing = MqttSettings.from_url(mtls_url, ca_file="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match=r"ca\.pem"):
        async with MqttClient(missing):
            pass
