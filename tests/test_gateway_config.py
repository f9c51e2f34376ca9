"""Gateway config: a valid file loads; every broken one fails naming file and key."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ConfigError
from device_gateway.config import GatewayConfig
from posture import SlouchSettings

VALID = """
gateway_id = "ward-3"

[broker]
url = "mqtt://127.0.0.1:1883"
username = "gw"

[defaults]
slouch_dwell_s = 20

[ble]
disconnect_grace_s = 15

[[wearables]]
address = "c0:ff:ee:00:00:01"
patient_id = "p-001"
slouch_threshold_deg = 18

[[wearables]]
address = "C0:FF:EE:00:00:02"
patient_id = "p-002"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_loads_with_defaults_and_overrides(tmp_path: Path) -> None:
    config = GatewayConfig.load(write(tmp_path, VALID))
    assert config.gateway_id == "ward-3"
    first, second = config.wearables
    assert first.address == "C0:FF:EE:00:00:01"
    assert first.slouch.threshold_deg == 18
    assert first.slouch.dwell_s == 20  # from [defaults]
    assert second.slouch.threshold_deg == 25  # built-in default
    assert second.slouch == SlouchSettings(dwell_s=20)  # the engine's own settings
    assert config.ble.disconnect_grace_s == 15
    assert config.wearable("c0:ff:ee:00:00:02") is second
    assert config.wearable("AA:BB:CC:DD:EE:FF") is None


def test_slouch_while_walking_is_a_per_patient_setting(tmp_path: Path) -> None:
    # On by default (hunched gait counts); a patient's prescription may turn it off.
    text = VALID.replace(
        'patient_id = "p-002"', 'patient_id = "p-002"\nslouch_while_walking = false'
    )
    first, second = GatewayConfig.load(write(tmp_path, text)).wearables
    assert first.slouch.while_walking is True
    assert second.slouch.while_walking is False
    bad = VALID.replace('patient_id = "p-002"', 'patient_id = "p-002"\nslouch_while_walking = 1')
    with pytest.raises(ConfigError, match=r"slouch_while_walking must be bool"):
        GatewayConfig.load(write(tmp_path, bad))


def test_password_never_in_repr(tmp_path: Path) -> None:
    text = VALID.replace('username = "gw"', 'username = "gw"\npassword = "s3cret-pw"')
    config = GatewayConfig.load(write(tmp_path, text))
    assert config.broker.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(config)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        GatewayConfig.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('patient_id = "p-001"', 'patient_id = "p/+/#"'), r"wearables\[0\]\.patient_id"),
        (('patient_id = "p-001"', 'patient_id = "p 1"'), r"wearables\[0\]\.patient_id"),
        (('gateway_id = "ward-3"', 'gateway_id = "$SYS"'), "gateway_id"),
        (('address = "c0:ff:ee:00:00:01"', 'address = "nope"'), r"wearables\[0\]\.address"),
        (("slouch_threshold_deg = 18", "slouch_threshold_deg = -3"), "slouch_threshold_deg"),
        (("slouch_threshold_deg = 18", 'slouch_threshold_deg = "high"'), "slouch_threshold_deg"),
        (("slouch_threshold_deg = 18", "slouch_treshold_deg = 18"), "slouch_treshold_deg"),
        (("slouch_threshold_deg = 18", "slouch_threshold_deg = 85"), "slouch_threshold_deg"),
        (("slouch_threshold_deg = 18", "slouch_hysteresis_deg = 30"), "slouch_hysteresis_deg"),
        (("slouch_dwell_s = 20", "slouch_dwel_s = 20"), r"defaults\.slouch_dwel_s"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "http://x"'), r"broker\.url"),
        (("disconnect_grace_s = 15", "disconnect_grace_s = 0"), r"ble\.disconnect_grace_s"),
        (("disconnect_grace_s = 15", "processes = 0"), r"ble\.processes must be 1\.\.64"),
        (("disconnect_grace_s = 15", "processes = 65"), r"ble\.processes must be 1\.\.64"),
        (("disconnect_grace_s = 15", 'processes = "2"'), r"ble\.processes must be int"),
        (("disconnect_grace_s = 15", "processes = 1.5"), r"ble\.processes must be int"),
        (('patient_id = "p-002"', 'patient_id = "p-001"'), "patient_id repeated"),
        (("[[wearables]]", "[[wearable]]"), "unknown key wearable"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = write(tmp_path, VALID.replace(*change, 1))
    with pytest.raises(ConfigError, match=message) as info:
        GatewayConfig.load(path)
    assert str(path) in str(info.value)


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        GatewayConfig.load(write(tmp_path, "gateway_id = \n[[["))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_loads_or_fails_cleanly(text: str) -> None:
    # Fuzz: whatever is in the file, the only failure is a ConfigError.
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_text(VALID + "\n" + text, encoding="utf-8")
        with contextlib.suppress(ConfigError):
            GatewayConfig.load(path)
