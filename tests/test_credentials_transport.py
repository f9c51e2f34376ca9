"""Passwords never cross plain TCP by accident; --broker never drops TLS.

Issue 14, finding 8: a password over plain ``mqtt://`` got no warning, and
``run --broker mqtt://...`` silently dropped the TLS of a config relying on
the system's CA certificates. Run as a user runs them (the CLI in a
subprocess); 192.0.2.10 is a documentation address nothing ever answers on,
so a refusal is visible before any connection attempt.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_cli import assert_clear_error, run_cli

from alerts import MqttSettings
from common.errors import ConfigError
from device_gateway.config import BrokerConfig
from posture_monitor.service import mqtt_settings

SECRET = "pw-7f3a-never-shown"
WEARABLE = '[[wearables]]\naddress = "C0:FF:EE:00:00:01"\npatient_id = "p-001"\n'


def gateway_config(tmp_path: Path, broker_table: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'gateway_id = "ward-1"\n[broker]\n{broker_table}\n{WEARABLE}')
    return path


async def test_gateway_refuses_a_password_over_plain_tcp(tmp_path: Path) -> None:
    config = gateway_config(
        tmp_path, f'url = "mqtt://192.0.2.10:1883"\nusername = "gw"\npassword = "{SECRET}"'
    )
    result = await run_cli("run", "--config", str(config))
    assert_clear_error(result, "clear text", "192.0.2.10:1883", "--insecure")
    assert SECRET not in result.stderr + result.stdout


async def test_broker_override_does_not_silently_drop_the_configs_tls(tmp_path: Path) -> None:
    # TLS with the system's CA certificates: no ca_file, only the scheme says TLS.
    config = gateway_config(tmp_path, 'url = "mqtts://broker.example:8883"')
    result = await run_cli("run", "--config", str(config), "--broker", "mqtt://127.0.0.1:1883")
    assert_clear_error(result, "uses TLS", "mqtts://")


async def test_dashboard_refuses_a_password_over_plain_tcp() -> None:
    result = await run_cli("dashboard", "--broker", f"mqtt://physio:{SECRET}@192.0.2.10:1883")
    assert_clear_error(result, "clear text", "--insecure")
    assert SECRET not in result.stderr + result.stdout


def test_what_counts_as_clear_text() -> None:
    assert MqttSettings.from_url(f"mqtt://u:{SECRET}@10.1.2.3").password_in_clear
    assert MqttSettings.from_url(f"mqtt://u:{SECRET}@mq.example").password_in_clear
    assert not MqttSettings.from_url(f"mqtt://u:{SECRET}@127.0.0.1").password_in_clear
    assert not MqttSettings.from_url(f"mqtt://u:{SECRET}@localhost").password_in_clear
    assert not MqttSettings.from_url(f"mqtt://u:{SECRET}@[::1]:1883").password_in_clear
    assert not MqttSettings.from_url(f"mqtts://u:{SECRET}@mq.example").password_in_clear
    assert not MqttSettings.from_url("mqtt://mq.example").password_in_clear  # no password
    cluster = MqttSettings.from_urls(f"mqtt://u:{SECRET}@127.0.0.1:1883,mqtt://10.0.0.2:1883")
    assert cluster.password_in_clear  # one node is elsewhere


def test_overrides_keep_tls_and_insecure_is_explicit_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls_config = BrokerConfig(url="mqtts://broker.example:8883", username="gw", password=SECRET)
    kept = mqtt_settings(tls_config, "mqtts://other.example:8883")
    assert kept.tls and kept.host == "other.example" and kept.password == SECRET
    with pytest.raises(ConfigError, match="uses TLS"):
        mqtt_settings(tls_config, "mqtt://other.example:1883")
    with caplog.at_level(logging.WARNING):
        dropped = mqtt_settings(tls_config, "mqtt://other.example:1883", insecure=True)
    assert not dropped.tls and dropped.password_in_clear
    assert "drops the TLS" in caplog.text and "clear text" in caplog.text
    assert SECRET not in caplog.text
    # A loopback broker without TLS is fine (the documented demo and tests).
    local = mqtt_settings(BrokerConfig(url="mqtt://127.0.0.1:1883", username="gw", password="x"))
    assert not local.tls
