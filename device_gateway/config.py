"""Gateway configuration: a TOML file loaded once into frozen dataclasses.

Every error names the file and the key, so a clinic technician can fix a
config without reading code. Patient and gateway ids become MQTT topic levels,
so they are restricted to characters that cannot escape their subtree.

Example (see README "Configuration")::

    gateway_id = "ward-3"

    [broker]
    url = "mqtt://127.0.0.1:1883"
    # or, for the nodes of a broker cluster, tried in turn:
    # urls = ["mqtt://mq1:1883", "mqtt://mq2:1883", "mqtt://mq3:1883"]

    [[wearables]]
    address = "C0:FF:EE:00:00:01"
    patient_id = "p-001"
    slouch_threshold_deg = 20
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerts.settings import PASSWORD_ENV, MqttSettings
from alerts.topics import validate_id, validate_topic_root
from common.errors import ConfigError
from posture.types import SlouchSettings

__all__ = [
    "BleSettings",
    "BrokerConfig",
    "GatewayConfig",
    "WearableConfig",
]

_MAX_ENGINE_BATCH_S = 1.0
MAX_PROCESSES = 64

_ADDRESS = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f-]{36}$")
_ADAPTER = re.compile(r"^hci[0-9]{1,3}$")
_PROTOCOLS = ("5", "3.1.1")
DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"


def _checked_id(value: object, kind: str, key: str) -> str:
    """The id if it is safe as a topic level, else ConfigError naming ``key``."""
    try:
        return validate_id(value, kind)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


@dataclass(frozen=True, slots=True)
class WearableConfig:
    """One allowed wearable and the patient wearing it.

    ``slouch`` is the physiotherapist's prescription, in the engine's own
    type (no gateway copy of it to keep in step).
    """

    address: str
    patient_id: str
    slouch: SlouchSettings = field(default_factory=SlouchSettings)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """How to reach the MQTT broker. The password is never printed.

    ``urls`` lists every node of a broker cluster (failover order) and
    ``url`` is its first; empty ``urls`` means ``url`` alone. The config file
    may give either ``url`` or ``urls``.
    """

    url: str = DEFAULT_BROKER_URL
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    protocol: str = "5"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    urls: tuple[str, ...] = ()

    @property
    def all_urls(self) -> tuple[str, ...]:
        """Every broker node's URL, in failover order."""
        return self.urls or (self.url,)


@dataclass(frozen=True, slots=True)
class BleSettings:
    """Per-link settings: scanning, connecting, reconnect backoff, disconnect
    grace, the sample queue and how packets are gathered for the engine."""

    scan_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    disconnect_grace_s: float = 20.0
    recalibrate_after_s: float = 300.0
    battery_low_pct: int = 20
    queue_packets: int = 256
    # The engine tick: every wearable's packets gather this long, then go
    # through the batched engines in one pass (device_gateway/engine_tick.py;
    # 0: a pass as soon as a packet waits and the previous pass is done).
    # 0.1 s adds at most 0.1 s (0.05 s on average) to an alert, small
    # against a fall's 1.5-4 s confirmation, while a pass serves every
    # wearable whose 0.2 s packet came (half of them) in one call.
    engine_batch_s: float = 0.1
    # Run the engine pass in a worker thread beside the event loop (BLE and
    # MQTT stay served while NumPy works) rather than on the loop.
    engine_thread: bool = True
    # A connected wearable that sent no IMU packet for this long is
    # reconnected: the link can stay up while notifications stopped (a
    # firmware hang, a restarted bluetoothd). Packets come every 0.2 s.
    notify_timeout_s: float = 5.0
    # The BlueZ adapter to use (``hci1``); None: the first powered one.
    adapter: str | None = None
    # Worker processes the allow-list is spread over (device_gateway.shards),
    # each a gateway of its own on its own core; None: chosen from the
    # wearables and this machine's cores (shards.process_count).
    processes: int | None = None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs; load with :meth:`load`."""

    gateway_id: str
    wearables: tuple[WearableConfig, ...]
    broker: BrokerConfig = BrokerConfig()
    ble: BleSettings = BleSettings()
    topic_root: str = "posture/v1"
    outbox_path: Path | None = None
    source: str = "<config>"

    def wearable(self, address: str) -> WearableConfig | None:
        """The allow-listed wearable with this address (case-insensitive), or None."""
        wanted = address.upper()
        return next((w for w in self.wearables if w.address.upper() == wanted), None)

    @classmethod
    def load(cls, path: str | Path) -> GatewayConfig:
        """Read and validate a TOML config file.

        Raises:
            ConfigError: the file is missing, is not TOML, or a key is invalid.
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<config>") -> GatewayConfig:
        """Validate an already parsed config (the demo builds one in code)."""
        reader = _Reader(data, source, "")
        gateway_id = _checked_id(
            reader.get("gateway_id", str, "gateway"), "gateway", reader.key("gateway_id")
        )
        topic_root = reader.get("topic_root", str, "posture/v1")
        try:
            validate_topic_root(topic_root)
        except ConfigError as exc:
            raise ConfigError(f"{reader.key('topic_root')}: {exc}") from None
        outbox = reader.get("outbox_path", str, None)
        defaults_reader = reader.table("defaults")
        defaults_reader.reject_unknown(set(_SLOUCH_KEYS))
        defaults = _slouch(defaults_reader, SlouchSettings())
        wearables_raw = data.get("wearables", [])
        if not isinstance(wearables_raw, list) or not wearables_raw:
            raise ConfigError(f"{source}: [[wearables]] must list at least one wearable")
        wearables = tuple(
            _wearable(_Reader(item, source, f"wearables[{i}]."), defaults)
            for i, item in enumerate(wearables_raw)
        )
        for key_name, values in (
            ("address", [w.address.upper() for w in wearables]),
            ("patient_id", [w.patient_id for w in wearables]),
        ):
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                raise ConfigError(f"{source}: wearables.{key_name} repeated: {duplicates}")
        reader.reject_unknown(
            {"gateway_id", "topic_root", "outbox_path", "defaults", "wearables", "broker", "ble"}
        )
        return cls(
            gateway_id=gateway_id,
            wearables=wearables,
            broker=_broker(reader.table("broker")),
            ble=_ble(reader.table("ble")),
            topic_root=topic_root,
            outbox_path=Path(outbox) if outbox else None,
            source=source,
        )


class _Reader:
    """Typed access to one TOML table with errors that name file and key."""

    def __init__(self, data: object, source: str, prefix: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a table")
        self.data = data
        self.source = source
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.source}: {self.prefix}{name}"

    def get(self, name: str, kind: type, default: Any) -> Any:
        if name not in self.data:
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(f"{self.key(name)} must be {kind.__name__}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{self.key(name)} must be finite, got {value!r}")
        return value

    def positive(self, name: str, default: float) -> float:
        value = float(self.get(name, float, default))
        if value <= 0:
            raise ConfigError(f"{self.key(name)} must be > 0, got {value}")
        return value

    def table(self, name: str) -> _Reader:
        return _Reader(self.data.get(name, {}), self.source, f"{self.prefix}{name}.")

    def reject_unknown(self, known: set[str]) -> None:
        unknown = sorted(set(self.data) - known)
        if unknown:
            raise ConfigError(f"{self.source}: unknown key {self.prefix}{unknown[0]}")


def _slouch_key(field_name: str) -> str:
    return field_name if field_name.startswith("lateral_") else f"slouch_{field_name}"


# The one mapping from the config's slouch keys (in [defaults] and in each
# [[wearables]]) to the engine's SlouchSettings: each field is a key named
# after it, prefixed "slouch_" unless the name already says which angle
# (threshold_deg -> slouch_threshold_deg, lateral_threshold_deg as is). A new
# SlouchSettings field is a new key with no code here; its type comes from its
# default, its rules from SlouchSettings itself.
_SLOUCH_KEYS = {_slouch_key(f.name): f.name for f in dataclasses.fields(SlouchSettings)}
_MAX_SLOUCH_THRESHOLD_DEG = 80.0  # a prescription beyond this is a typo, not a posture


def _slouch(reader: _Reader, base: SlouchSettings) -> SlouchSettings:
    """``base`` with the slouch keys ``reader``'s table sets."""
    values = {
        name: reader.get(key, type(getattr(base, name)), getattr(base, name))
        for key, name in _SLOUCH_KEYS.items()
    }
    try:
        settings = SlouchSettings(**values)
    except ValueError as exc:
        # The engine names its fields; the user wrote keys.
        text = str(exc)
        for key, name in _SLOUCH_KEYS.items():
            text = text.replace(f"SlouchSettings.{name}", key)
        raise ConfigError(f"{reader.source}: {reader.prefix}{text}") from None
    if settings.threshold_deg > _MAX_SLOUCH_THRESHOLD_DEG:
        raise ConfigError(
            f"{reader.key('slouch_threshold_deg')} must be <= {_MAX_SLOUCH_THRESHOLD_DEG:g}, "
            f"got {settings.threshold_deg:g}"
        )
    return settings


def _wearable(reader: _Reader, defaults: SlouchSettings) -> WearableConfig:
    address = reader.get("address", str, None)
    if address is None or not _ADDRESS.match(address):
        raise ConfigError(
            f"{reader.key('address')} must be a Bluetooth address like C0:FF:EE:00:00:01, "
            f"got {address!r}"
        )
    patient = _checked_id(reader.get("patient_id", str, None), "patient", reader.key("patient_id"))
    reader.reject_unknown({"address", "patient_id", *_SLOUCH_KEYS})
    return WearableConfig(address.upper(), patient, _slouch(reader, defaults))


def _broker_urls(reader: _Reader) -> tuple[str, ...]:
    """``url`` or ``urls`` (a non-empty list of strings), checked as a whole."""
    if "url" in reader.data and "urls" in reader.data:
        raise ConfigError(f"{reader.key('urls')}: give either url or urls, not both")
    if "urls" in reader.data:
        key = "urls"
        value = reader.data["urls"]
        if not isinstance(value, list) or not value or not all(isinstance(u, str) for u in value):
            raise ConfigError(f"{reader.key('urls')} must be a non-empty list of broker URLs")
        urls = tuple(value)
    else:
        key = "url"
        urls = (reader.get("url", str, DEFAULT_BROKER_URL),)
    try:
        MqttSettings.from_urls(urls)
    except ConfigError as exc:  # its message already hides any password
        raise ConfigError(f"{reader.key(key)}: {exc}") from None
    return urls


def _broker(reader: _Reader) -> BrokerConfig:
    urls = _broker_urls(reader)
    protocol = reader.get("protocol", str, "5")
    if protocol not in _PROTOCOLS:
        raise ConfigError(f"{reader.key('protocol')} must be one of {_PROTOCOLS}")
    # A password in the file is allowed but an environment variable is
    # preferred, so the file can be world-readable.
    password = os.environ.get(PASSWORD_ENV) or reader.get("password", str, None)
    paths = {}
    for name in ("ca_file", "cert_file", "key_file"):
        value = reader.get(name, str, None)
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{reader.key(name)}: no such file {value!r}")
        paths[name] = Path(value) if value else None
    reader.reject_unknown({"url", "urls", "username", "password", "protocol", *paths})
    return BrokerConfig(
        url=urls[0],
        urls=urls,
        username=reader.get("username", str, None),
        password=password,
        protocol=protocol,
        **paths,
    )


def _ble(reader: _Reader) -> BleSettings:
    base = BleSettings()
    special = (
        "battery_low_pct",
        "queue_packets",
        "engine_batch_s",
        "engine_thread",
        "adapter",
        "processes",
    )
    names = [n for n in BleSettings.__slots__ if n not in special]
    values: dict[str, Any] = {n: reader.positive(n, getattr(base, n)) for n in names}
    battery = reader.get("battery_low_pct", int, base.battery_low_pct)
    if not 0 <= battery <= 100:
        raise ConfigError(f"{reader.key('battery_low_pct')} must be 0..100")
    queue = reader.get("queue_packets", int, base.queue_packets)
    if queue < 8:
        raise ConfigError(f"{reader.key('queue_packets')} must be >= 8")
    if values["backoff_max_s"] < values["backoff_initial_s"]:
        raise ConfigError(f"{reader.key('backoff_max_s')} must be >= backoff_initial_s")
    batch_s = float(reader.get("engine_batch_s", float, base.engine_batch_s))
    if not 0.0 <= batch_s <= _MAX_ENGINE_BATCH_S:
        # Longer would eat into the fall alert's budget (confirmation takes 1.5-4 s).
        raise ConfigError(
            f"{reader.key('engine_batch_s')} must be 0..{_MAX_ENGINE_BATCH_S:g} s, got {batch_s}"
        )
    engine_thread = reader.get("engine_thread", bool, base.engine_thread)
    adapter = reader.get("adapter", str, None)
    if adapter is not None and not _ADAPTER.match(adapter):
        raise ConfigError(
            f"{reader.key('adapter')} must be an adapter name like hci0, got {adapter!r}"
        )
    processes = reader.get("processes", int, None)
    if processes is not None and not 1 <= processes <= MAX_PROCESSES:
        raise ConfigError(f"{reader.key('processes')} must be 1..{MAX_PROCESSES}, got {processes}")
    reader.reject_unknown(set(BleSettings.__slots__))
    return BleSettings(
        **values,
        battery_low_pct=battery,
        queue_packets=queue,
        engine_batch_s=batch_s,
        engine_thread=engine_thread,
        adapter=adapter,
        processes=processes,
    )
