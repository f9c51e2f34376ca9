"""MQTT publishing of alerts with durable delivery, and the one MQTT contract.

Topics under ``posture/v1`` (docs/architecture.md): retained gateway status
with a Last Will, retained patient state, QoS 1 events from a durable
outbox, and what dashboards publish (acks, escalations, daily summaries).
The contract (topics, payloads: build and parse under limits, clocks, drop
counting) lives in small paho-free modules: topics, events, state, acks,
summary, wire, clock, intake. ``physio/`` imports only from here.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from alerts.acks import Ack, AckAction, EscalationMessage
    from alerts.broker import EmbeddedBroker
    from alerts.clock import ClockPolicy
    from alerts.events import DEFAULT_SLOUCH_EXPIRY_S, AlertEvent, EventType, Severity
    from alerts.intake import DropCounter, Inbound, PatientCap, read_message
    from alerts.metrics import PublisherMetrics
    from alerts.mqtt import ConnectCallback, MqttClient
    from alerts.outbox import Outbox, OutboxEntry
    from alerts.publisher import AlertPublisher
    from alerts.settings import Message, MqttSettings, Will
    from alerts.sink import AlertSink, MemorySink
    from alerts.state import Activity, GatewayState, GatewayStatus, PatientState
    from alerts.summary import DailySummary, FallRecord, SlouchEpisode, SummaryTotals
    from alerts.topics import DEFAULT_TOPIC_ROOT, TopicInfo, TopicKind, Topics, mask_id, validate_id
    from alerts.wire import (
        DropReason,
        PayloadError,
        PayloadLimits,
        format_utc_ms,
        parse_utc,
        utc_from_timestamp,
    )

__all__ = [
    "DEFAULT_SLOUCH_EXPIRY_S",
    "DEFAULT_TOPIC_ROOT",
    "Ack",
    "AckAction",
    "Activity",
    "AlertEvent",
    "AlertPublisher",
    "AlertSink",
    "ClockPolicy",
    "ConnectCallback",
    "DailySummary",
    "DropCounter",
    "DropReason",
    "EmbeddedBroker",
    "EscalationMessage",
    "EventType",
    "FallRecord",
    "GatewayState",
    "GatewayStatus",
    "Inbound",
    "MemorySink",
    "Message",
    "MqttClient",
    "MqttSettings",
    "Outbox",
    "OutboxEntry",
    "PatientCap",
    "PatientState",
    "PayloadError",
    "PayloadLimits",
    "PublisherMetrics",
    "Severity",
    "SlouchEpisode",
    "SummaryTotals",
    "TopicInfo",
    "TopicKind",
    "Topics",
    "Will",
    "format_utc_ms",
    "mask_id",
    "parse_utc",
    "read_message",
    "utc_from_timestamp",
    "validate_id",
]

# Each name's module is imported on first use (see common.lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Ack": "acks",
        "AckAction": "acks",
        "EscalationMessage": "acks",
        "EmbeddedBroker": "broker",
        "ClockPolicy": "clock",
        "DropCounter": "intake",
        "Inbound": "intake",
        "PatientCap": "intake",
        "read_message": "intake",
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
        "Activity": "state",
        "GatewayState": "state",
        "GatewayStatus": "state",
        "PatientState": "state",
        "DailySummary": "summary",
        "FallRecord": "summary",
        "SlouchEpisode": "summary",
        "SummaryTotals": "summary",
        "DEFAULT_TOPIC_ROOT": "topics",
        "TopicInfo": "topics",
        "TopicKind": "topics",
        "Topics": "topics",
        "mask_id": "topics",
        "validate_id": "topics",
        "DropReason": "wire",
        "PayloadError": "wire",
        "PayloadLimits": "wire",
        "format_utc_ms": "wire",
        "parse_utc": "wire",
        "utc_from_timestamp": "wire",
    },
)
