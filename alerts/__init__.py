"""MQTT publishing of alerts with durable delivery, and the wire formats.

Topics under ``posture/v1`` (docs/architecture.md): retained gateway status
with a Last Will, retained patient state, QoS 1 events from a durable
outbox. ``physio/`` imports only from here.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from alerts.broker import EmbeddedBroker
    from alerts.events import DEFAULT_SLOUCH_EXPIRY_S, AlertEvent, EventType, Severity
    from alerts.metrics import PublisherMetrics
    from alerts.mqtt import ConnectCallback, MqttClient
    from alerts.outbox import Outbox, OutboxEntry
    from alerts.publisher import AlertPublisher
    from alerts.settings import Message, MqttSettings, Will
    from alerts.sink import AlertSink, MemorySink
    from alerts.state import GatewayState, GatewayStatus, PatientState
    from alerts.topics import DEFAULT_TOPIC_ROOT, TopicInfo, TopicKind, Topics, mask_id, validate_id
    from alerts.wire import format_utc_ms, parse_utc, utc_from_timestamp

__all__ = [
    "DEFAULT_SLOUCH_EXPIRY_S",
    "DEFAULT_TOPIC_ROOT",
    "AlertEvent",
    "AlertPublisher",
    "AlertSink",
    "ConnectCallback",
    "EmbeddedBroker",
    "EventType",
    "GatewayState",
    "GatewayStatus",
    "MemorySink",
    "Message",
    "MqttClient",
    "MqttSettings",
    "Outbox",
    "OutboxEntry",
    "PatientState",
    "PublisherMetrics",
    "Severity",
    "TopicInfo",
    "TopicKind",
    "Topics",
    "Will",
    "format_utc_ms",
    "mask_id",
    "parse_utc",
    "utc_from_timestamp",
    "validate_id",
]

# Each name's module is imported on first use (see common.lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "EmbeddedBroker": "broker",
        "DEFAULT_SLOUCH_EXPIRY_S": "events",
        "AlertEvent": "events",
        "EventType": "events",
        "Severity": "events",
        "PublisherMetrics": "metrics",
        "ConnectCallback": "mqtt",
        "MqttClient": "mqtt",
        "Outbox": "outbox",
        "OutboxEntry": "outbox",
        "AlertPublisher": "publisher",
        "Message": "settings",
        "MqttSettings": "settings",
        "Will": "settings",
        "AlertSink": "sink",
        "MemorySink": "sink",
        "GatewayState": "state",
        "GatewayStatus": "state",
        "PatientState": "state",
        "DEFAULT_TOPIC_ROOT": "topics",
        "TopicInfo": "topics",
        "TopicKind": "topics",
        "Topics": "topics",
        "mask_id": "topics",
        "validate_id": "topics",
        "format_utc_ms": "wire",
        "parse_utc": "wire",
        "utc_from_timestamp": "wire",
    },
)
