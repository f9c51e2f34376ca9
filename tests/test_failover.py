"""Failover between broker nodes: settings, config, CLI options and the client.

The client tests use two private mosquittos standing in for two nodes (the
real cluster is in test_cluster_nats.py): a dead first node is skipped, and
a kill -9 of the node in use moves the client to the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from brokers import MOSQUITTO, MosquittoBroker, free_port

from alerts import MqttClient, MqttSettings
from common.errors import ConfigError
from device_gateway.config import GatewayConfig
from posture_monitor.service import mqtt_settings

needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


# ------------------------------------------------------------------ settings


def test_several_urls_make_one_settings_with_failover_nodes() -> None:
    settings = MqttSettings.from_urls(
        ["mqtt://gw:s3cret@mq1:1883", "mqtt://mq2:1884", "mqtt://gw:s3cret@mq3"],
        protocol="3.1.1",
    )
    assert settings.addresses == ("mq1:1883", "mq2:1884", "mq3:1883")
    assert [(e.host, e.port, e.username, e.protocol) for e in settings.endpoints()] == [
        ("mq1", 1883, "gw", "3.1.1"),
        ("mq2", 1884, "gw", "3.1.1"),
        ("mq3", 1883, "gw", "3.1.1"),
    ]
    assert settings.display_url == "mqtt://gw:***@mq1:1883,mq2:1884,mq3:1883"
    assert "s3cret" not in repr(settings)
    # A comma-separated string, and one URL (exactly from_url).
    assert MqttSettings.from_urls("mqtt://a:1, mqtt://b:2").addresses == ("a:1", "b:2")
    assert MqttSettings.from_urls(["mqtt://a:1"]) == MqttSettings.from_url("mqtt://a:1")
    # A comma inside a password does not split the list.
    assert MqttSettings.from_urls("mqtt://u:p,w@a:1").password == "p,w"


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ([], "no broker URL"),
        (["mqtt://a", "mqtts://b"], "same scheme"),
        (["mqtt://u:pw1@a", "mqtt://u:pw2@b"], "other credentials"),
        (["mqtt://a:1883", "mqtt://a"], "repeated"),
        (["mqtt://a", "http://b"], "scheme must be"),
    ],
)
def test_bad_url_lists_are_clear_errors(urls: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        MqttSettings.from_urls(urls)
    assert "pw1" not in str(info.value) and "pw2" not in str(info.value)


# ---------------------------------------------------------- gateway config

CONFIG = """
gateway_id = "ward-3"

[broker]
{broker}
protocol = "3.1.1"

[[wearables]]
address = "C0:FF:EE:00:00:01"
patient_id = "p-001"
"""


def load(tmp_path: Path, broker: str) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.format(broker=broker))
    return GatewayConfig.load(path)


def test_gateway_config_takes_urls_and_keeps_url(tmp_path: Path) -> None:
    config = load(tmp_path, 'urls = ["mqtt://mq1:1883", "mqtt://mq2:1883", "mqtt://mq3:1883"]')
    assert config.broker.url == "mqtt://mq1:1883"
    settings = mqtt_settings(config.broker)
    assert settings.addresses == ("mq1:1883", "mq2:1883", "mq3:1883")
    assert settings.protocol == "3.1.1"
    # The single url of existing configs works as before.
    single = mqtt_settings(load(tmp_path, 'url = "mqtt://mq9:1883"').broker)
    assert single.addresses == ("mq9:1883",)
    # --broker (repeated or comma-separated) overrides the file.
    override = mqtt_settings(config.broker, ["mqtt://x:1", "mqtt://y:2,mqtt://z:3"])
    assert override.addresses == ("x:1", "y:2", "z:3")


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ('url = "mqtt://a"\nurls = ["mqtt://b"]', r"broker\.urls: give either url or urls"),
        ("urls = []", r"broker\.urls must be a non-empty list"),
        ('urls = "mqtt://a"', r"broker\.urls must be a non-empty list"),
        ('urls = ["mqtt://a", "ftp://b"]', r"broker\.urls: .*scheme"),
    ],
)
def test_bad_gateway_urls_name_the_key(tmp_path: Path, broker: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, broker)


# ---------------------------------------------------------------- the CLIs


# Several --broker URLs through every physio command: tests/test_broker_args.py.


# ------------------------------------------------------------------ the client


@needs_mosquitto
@pytest.mark.timeout(30)
async def test_a_dead_first_node_is_skipped(tmp_path: Path) -> None:
    live = MosquittoBroker(tmp_path / "live")
    await live.start()
    try:
        dead_url = f"mqtt://127.0.0.1:{free_port()}"
        settings = MqttSettings.from_urls(
            [dead_url, live.url], reconnect_min_s=0.05, reconnect_max_s=0.2, connect_timeout_s=3
        )
        async with MqttClient(settings) as client:
            assert client.connected
            assert client.address == f"127.0.0.1:{live.port}"
            await client.publish("t", b"x", qos=1)
    finally:
        await live.stop()


@needs_mosquitto
@pytest.mark.timeout(30)
async def test_a_killed_node_moves_the_client_to_the_next(tmp_path: Path) -> None:
    first, second = MosquittoBroker(tmp_path / "a"), MosquittoBroker(tmp_path / "b")
    await first.start()
    await second.start()
    try:
        settings = MqttSettings.from_urls(
            [first.url, second.url], reconnect_min_s=0.05, reconnect_max_s=0.2, connect_timeout_s=3
        )
        async with MqttClient(settings) as client:
            assert client.address == f"127.0.0.1:{first.port}"
            await first.kill()
            await until(lambda: client.connected and client.address.endswith(f":{second.port}"))
            assert client.connect_count == 2
            await client.publish("t", b"after failover", qos=1)
    finally:
        await first.stop()
        await second.stop()


@needs_mosquitto
@pytest.mark.timeout(30)
async def test_a_311_session_kept_over_a_reconnection_is_removed_at_exit(tmp_path: Path) -> None:
    # A 3.1.1 session never expires: one left behind by a watcher that
    # reconnected would have the broker queue falls for it forever.
    broker = MosquittoBroker(tmp_path / "m")
    await broker.start()
    try:
        settings = broker.settings(protocol="3.1.1")
        async with MqttClient(settings, client_id="watcher-1") as client:
            await client.subscribe("posture/v1/patients/+/events", qos=1)
            await broker.stop()
            await broker.start()
            await until(lambda: client.connected and client.connect_count == 2)
            # The reconnection resumed-or-created a persistent session.
            await until(lambda: client.session_present is False)
        probe = MqttSettings.from_url(broker.url, protocol="3.1.1")
        async with MqttClient(probe, client_id="watcher-1", clean_start=False) as again:
            assert again.session_present is False
    finally:
        await broker.stop()
