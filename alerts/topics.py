"""MQTT topic names under one validated root, and the id rules they rely on.

The topic layout is the wire contract with ``physio/`` (docs/architecture.md):

``{root}/gateways/{gateway_id}/status``            retained, QoS 1 (gateway)
``{root}/patients/{patient_id}/state``             retained, QoS 0 (gateway)
``{root}/patients/{patient_id}/events``            QoS 1 (gateway)
``{root}/patients/{patient_id}/alerts``            retained, QoS 1 (gateway: open falls)
``{root}/patients/{patient_id}/acks``              QoS 1 (dashboard)
``{root}/patients/{patient_id}/escalations``       QoS 1 (dashboard)
``{root}/patients/{patient_id}/summary``           retained, QoS 1 (dashboard: newest day)
``{root}/patients/{patient_id}/summary/YYYY-MM-DD`` retained, QoS 1 (dashboard: one day)
``{root}/escalations``                              QoS 1 (dashboard: every escalation, for a
                                                   nurse-call bridge; docs/dashboard.md)

Ids become topic levels, so they are restricted to ``[A-Za-z0-9_-]{1,64}``:
an MQTT wildcard (``+``/``#``), a ``/`` or a leading ``$`` in an id would
let one patient's data land on (or subscribe to) another's topic.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from common.errors import ConfigError
from common.ids import ID_PATTERN, mask_id, shown, validate_id

__all__ = [
    "DEFAULT_TOPIC_ROOT",
    "ID_PATTERN",
    "TopicInfo",
    "TopicKind",
    "Topics",
    "check_topic_filter",
    "check_topic_name",
    "mask_id",
    "validate_id",
    "validate_topic_root",
]

DEFAULT_TOPIC_ROOT = "posture/v1"
# A root level may also hold dots ("site.a/posture/v1"); never wildcards, '$',
# whitespace or empty levels.
_ROOT_LEVEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_ROOT_LEVELS = 8


def validate_topic_root(root: object) -> str:
    """Return ``root`` if it is a valid topic root such as ``posture/v1``.

    Raises:
        ConfigError: when the root is empty, has empty levels (leading,
            trailing or doubled ``/``), more than 8 levels, or a level with a
            character outside ``[A-Za-z0-9_.-]`` (so no ``+``, ``#``, ``$``).
    """
    if not isinstance(root, str) or not root:
        raise ConfigError(f"invalid topic root {shown(root)}: expected e.g. 'posture/v1'")
    levels = root.split("/")
    if len(levels) > _MAX_ROOT_LEVELS or any(
        _ROOT_LEVEL.fullmatch(level) is None for level in levels
    ):
        raise ConfigError(
            f"invalid topic root {shown(root)}: expected 1-{_MAX_ROOT_LEVELS} '/'-separated "
            "levels of A-Z a-z 0-9 '_' '-' '.' (no wildcards, '$' or empty levels)"
        )
    return root


class TopicKind(enum.StrEnum):
    """The kinds of topic under the root (the value is the topic's last level)."""

    STATUS = "status"
    STATE = "state"
    EVENTS = "events"
    ALERTS = "alerts"
    ACKS = "acks"
    ESCALATIONS = "escalations"
    SUMMARY = "summary"
    SUMMARY_ARCHIVE = "summary_archive"


# Patient topics with three levels, keyed by their last level.
_PATIENT_LEAVES = frozenset(
    {
        TopicKind.STATE,
        TopicKind.EVENTS,
        TopicKind.ALERTS,
        TopicKind.ACKS,
        TopicKind.ESCALATIONS,
        TopicKind.SUMMARY,
    }
)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class TopicInfo:
    """What a received topic is about: its kind, the gateway or patient id,
    and for a summary archive the day (``YYYY-MM-DD``)."""

    kind: TopicKind
    id: str
    day: str | None = None


@dataclass(frozen=True)
class Topics:
    """Builds and parses the topic strings under one root.

    Raises:
        ConfigError: at construction when ``root`` is invalid, and from every
            builder when an id is invalid.
    """

    root: str = DEFAULT_TOPIC_ROOT

    def __post_init__(self) -> None:
        validate_topic_root(self.root)

    def status(self, gateway_id: str) -> str:
        """Retained online/offline status of one gateway."""
        return f"{self.root}/gateways/{validate_id(gateway_id, 'gateway')}/status"

    def state(self, patient_id: str) -> str:
        """Retained latest posture state of one patient."""
        return f"{self.root}/patients/{validate_id(patient_id, 'patient')}/state"

    def events(self, patient_id: str) -> str:
        """Alert events of one patient (QoS 1, not retained)."""
        return f"{self.root}/patients/{validate_id(patient_id, 'patient')}/events"

    def acks(self, patient_id: str) -> str:
        """Acknowledgements of one patient's alerts, sent by the dashboard."""
        return f"{self.root}/patients/{validate_id(patient_id, 'patient')}/acks"

    def alerts(self, patient_id: str) -> str:
        """Retained open falls of one patient (payload: docs/architecture.md)."""
        return f"{self.root}/patients/{validate_id(patient_id, 'patient')}/alerts"

    def escalations(self, patient_id: str) -> str:
        """Escalations of one patient's unacknowledged falls, sent by the dashboard."""
        return f"{self.root}/patients/{validate_id(patient_id, 'patient')}/escalations"

    def summary(self, patient_id: str) -> str:
        """Retained daily summary of the newest day, sent by the dashboard."""
        return f"{self.root}/patients/{validate_id(patient_id, 'patient')}/summary"

    def summary_archive(self, patient_id: str, day_iso: str) -> str:
        """Retained daily summary of one day (``YYYY-MM-DD``).

        Raises:
            ConfigError: an invalid id or day.
        """
        if _DAY.fullmatch(day_iso) is None:
            raise ConfigError(f"invalid day {shown(day_iso)}: expected YYYY-MM-DD")
        return f"{self.root}/patients/{validate_id(patient_id, 'patient')}/summary/{day_iso}"

    @property
    def all_status(self) -> str:
        """Filter matching every gateway's status."""
        return f"{self.root}/gateways/+/status"

    @property
    def all_states(self) -> str:
        """Filter matching every patient's state."""
        return f"{self.root}/patients/+/state"

    @property
    def all_events(self) -> str:
        """Filter matching every patient's events."""
        return f"{self.root}/patients/+/events"

    @property
    def all_acks(self) -> str:
        """Filter matching every patient's acks."""
        return f"{self.root}/patients/+/acks"

    @property
    def all_alerts(self) -> str:
        """Filter matching every patient's retained open falls."""
        return f"{self.root}/patients/+/alerts"

    @property
    def escalation_bridge(self) -> str:
        """Every escalation on one topic, for a nurse-call bridge (no names or beds)."""
        return f"{self.root}/escalations"

    @property
    def all_escalations(self) -> str:
        """Filter matching every patient's escalations."""
        return f"{self.root}/patients/+/escalations"

    @property
    def all_summaries(self) -> str:
        """Filter matching every patient's newest daily summary (not the archive)."""
        return f"{self.root}/patients/+/summary"

    def parse(self, topic: str) -> TopicInfo | None:
        """Tell what ``topic`` is about, or None if it is not one of ours.

        A topic under the root with an invalid id or an unknown layout gives
        None, so a consumer can count and skip it instead of crashing.
        """
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            return None
        levels = topic[len(prefix) :].split("/", 4)
        if len(levels) not in (3, 4) or ID_PATTERN.fullmatch(levels[1]) is None:
            return None
        group, ident, leaf = levels[:3]
        if len(levels) == 4:
            if group == "patients" and leaf == "summary" and _DAY.fullmatch(levels[3]):
                return TopicInfo(TopicKind.SUMMARY_ARCHIVE, ident, levels[3])
            return None
        if group == "gateways" and leaf == TopicKind.STATUS:
            return TopicInfo(TopicKind.STATUS, ident)
        if group == "patients" and leaf in _PATIENT_LEAVES:
            return TopicInfo(TopicKind(leaf), ident)
        return None


def check_topic_name(topic: str) -> None:
    """Raise ValueError unless ``topic`` is a valid MQTT topic name."""
    if (
        not isinstance(topic, str)
        or not topic
        or "\0" in topic
        or "+" in topic
        or "#" in topic
        or len(topic.encode("utf-8", "replace")) > 65535
    ):
        raise ValueError(
            f"invalid MQTT topic name {topic!r:.80}: empty, too long or has a wildcard"
        )


def check_topic_filter(topic_filter: str) -> None:
    """Raise ValueError unless ``topic_filter`` is a valid MQTT topic filter."""
    if not isinstance(topic_filter, str) or not topic_filter or "\0" in topic_filter:
        raise ValueError(f"invalid MQTT topic filter {topic_filter!r:.80}")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if ("+" in level and level != "+") or (
            "#" in level and (level != "#" or index != len(levels) - 1)
        ):
            raise ValueError(f"invalid MQTT topic filter {topic_filter!r:.80}: misplaced wildcard")
