"""Counters a publisher reports in its retained status (``metrics``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

__all__ = ["DeviceMetricValue", "LatencyStats", "PublisherMetrics", "freeze_devices"]

DeviceMetricValue = int | float | bool | str


@dataclass(frozen=True)
class PublisherMetrics:
    """A snapshot of the publisher's health.

    Attributes:
        connected: whether the broker link is up now.
        events_pending: events in the outbox not yet acknowledged.
        oldest_pending_age_s: age of the oldest of them, s (None if none).
        events_published: events acknowledged by the broker since start.
        events_expired: slouch events dropped unsent because they expired.
        events_evicted: events evicted because the outbox was full.
        publish_latency_last_ms, publish_latency_avg_ms: time from
            ``publish_event`` to the broker's PUBACK, ms (None before the
            first); an event queued during an outage counts its wait.
        reconnects: successful connections after the first.
        states_published: retained state messages sent.
        outbox_errors: database failures of the outbox (events then wait in
            memory; anything above 0 needs a look at the disk).
        devices: per-patient counters the gateway set with
            ``set_device_metrics`` (e.g. packets dropped, malformed).
        degraded: why delivery is not what it should be (a damaged outbox
            moved aside, events held only in memory, publishing failing the
            same way again and again), or None. Alarm on any value.
        outbox_recoveries: times a damaged outbox file was replaced.
    """

    connected: bool
    events_pending: int
    oldest_pending_age_s: float | None
    events_published: int
    events_expired: int
    events_evicted: int
    publish_latency_last_ms: float | None
    publish_latency_avg_ms: float | None
    reconnects: int
    states_published: int
    outbox_errors: int
    devices: Mapping[str, Mapping[str, DeviceMetricValue]] = field(default_factory=dict)
    degraded: str | None = None
    outbox_recoveries: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict for the status payload (floats rounded to 0.1)."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "devices"
        }
        out["devices"] = {pid: dict(values) for pid, values in self.devices.items()}
        for key in ("oldest_pending_age_s", "publish_latency_last_ms", "publish_latency_avg_ms"):
            if out[key] is not None:
                out[key] = round(out[key], 1)
        return out


class LatencyStats:
    """Last and running mean of a latency, ms."""

    def __init__(self) -> None:
        self.count = 0
        self.last_ms: float | None = None
        self._total_ms = 0.0

    def add(self, latency_ms: float) -> None:
        """Record one latency (negative values, from a clock step, count as 0)."""
        if not math.isfinite(latency_ms):
            return
        latency_ms = max(0.0, latency_ms)
        self.count += 1
        self.last_ms = latency_ms
        self._total_ms += latency_ms

    @property
    def avg_ms(self) -> float | None:
        """Mean of all recorded latencies, ms (None before the first)."""
        return self._total_ms / self.count if self.count else None


def freeze_devices(
    devices: Mapping[str, Mapping[str, DeviceMetricValue]],
) -> Mapping[str, Mapping[str, DeviceMetricValue]]:
    """A read-only copy of the per-device metrics."""
    return MappingProxyType({pid: MappingProxyType(dict(v)) for pid, v in devices.items()})
