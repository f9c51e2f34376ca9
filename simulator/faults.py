"""A wearable's fault timeline, resolved in advance.

From the patient's fault specs and the wearable's settings this computes,
once: when the wearable is powered (boots, reboots, battery empty), when it
is out of range, the packet loss and corruption probabilities at any time,
the battery level at any time, and the notification floods. The wearable's
state machine (simulator/wearable.py) walks through :attr:`FaultSchedule.events`.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from simulator.config import WearableConfig
from simulator.specs import (
    BatteryDrainSpec,
    CorruptionSpec,
    DisconnectSpec,
    FaultSpec,
    FloodSpec,
    PacketLossSpec,
    RebootSpec,
)

__all__ = ["EventKind", "FaultEvent", "FaultSchedule", "PowerSpan"]

logger = logging.getLogger(__name__)


class EventKind(enum.IntEnum):
    """State changes, in the order they apply when simultaneous."""

    POWER_OFF = 0
    VANISH = 1
    APPEAR = 2
    POWER_ON = 3
    FLOOD = 4


@dataclass(frozen=True, slots=True)
class FaultEvent:
    t_s: float
    kind: EventKind
    reason: str = ""
    flood: FloodSpec | None = None


@dataclass(frozen=True, slots=True)
class PowerSpan:
    """The wearable runs from ``on_s`` to ``off_s`` (scenario s) as boot ``boot``.

    Its clock reads ``clock_start_ms`` at ``on_s``; the sequence starts at
    ``sequence_start``.
    """

    on_s: float
    off_s: float
    boot: int
    clock_start_ms: int
    sequence_start: int


class FaultSchedule:
    """Everything that goes wrong with one wearable, as functions of time."""

    def __init__(self, faults: Sequence[FaultSpec], config: WearableConfig) -> None:
        self._config = config
        self._drain = self._drain_steps(faults, config)
        self.empty_s = self._empty_time(config.battery_pct)
        self.spans = self._power_spans(faults, config)
        self._loss = [
            (f.at_s, f.at_s + f.duration_s, f.probability)
            for f in faults
            if isinstance(f, PacketLossSpec)
        ]
        self._corrupt = [
            (f.at_s, f.at_s + f.duration_s, f.probability, f.truncated_fraction)
            for f in faults
            if isinstance(f, CorruptionSpec)
        ]
        events: list[FaultEvent] = []
        for span in self.spans:
            if span.boot > 0:
                events.append(FaultEvent(span.on_s, EventKind.POWER_ON, "reboot"))
            if math.isfinite(span.off_s):
                reason = "battery_empty" if span.off_s == self.empty_s else "reboot"
                events.append(FaultEvent(span.off_s, EventKind.POWER_OFF, reason))
        for f in faults:
            if isinstance(f, DisconnectSpec):
                events.append(FaultEvent(f.at_s, EventKind.VANISH, "out_of_range"))
                events.append(FaultEvent(f.at_s + f.duration_s, EventKind.APPEAR, "back_in_range"))
            elif isinstance(f, FloodSpec):
                events.append(FaultEvent(f.at_s, EventKind.FLOOD, "flood", f))
        self.events: tuple[FaultEvent, ...] = tuple(sorted(events, key=lambda e: (e.t_s, e.kind)))

    @staticmethod
    def _drain_steps(
        faults: Sequence[FaultSpec], config: WearableConfig
    ) -> list[tuple[float, float]]:
        steps = [(0.0, config.battery_drain_pct_per_h)]
        for f in sorted(
            (f for f in faults if isinstance(f, BatteryDrainSpec)), key=lambda f: f.at_s
        ):
            steps.append((f.at_s, f.pct_per_h))
        return steps

    def battery_pct(self, t_s: float) -> float:
        """Remaining charge (%) at ``t_s``; it drains whether on or off."""
        level = self._config.battery_pct
        for i, (start, rate) in enumerate(self._drain):
            end = self._drain[i + 1][0] if i + 1 < len(self._drain) else math.inf
            if t_s <= start:
                break
            level -= rate * (min(t_s, end) - start) / 3600.0
        return max(level, 0.0)

    def time_at_level(self, level_pct: float) -> float:
        """When the charge is first down to ``level_pct`` (inf: never; 0 if it already is)."""
        remaining = self._config.battery_pct
        if level_pct < 0.0:
            return math.inf
        if remaining <= level_pct:
            return 0.0
        for i, (start, rate) in enumerate(self._drain):
            end = self._drain[i + 1][0] if i + 1 < len(self._drain) else math.inf
            use = rate * (end - start) / 3600.0 if math.isfinite(end) else math.inf
            if rate > 0.0 and remaining - use <= level_pct:
                return start + (remaining - level_pct) * 3600.0 / rate
            remaining -= 0.0 if math.isinf(use) else use
        return math.inf

    def _empty_time(self, level: float) -> float:
        for i, (start, rate) in enumerate(self._drain):
            end = self._drain[i + 1][0] if i + 1 < len(self._drain) else math.inf
            use = rate * (end - start) / 3600.0 if math.isfinite(end) else math.inf
            if rate > 0.0 and use >= level:
                return start + level * 3600.0 / rate
            level -= 0.0 if math.isinf(use) else use
        return math.inf

    def _power_spans(self, faults: Sequence[FaultSpec], config: WearableConfig) -> list[PowerSpan]:
        spans = [PowerSpan(0.0, math.inf, 0, config.clock_start_ms, config.sequence_start)]
        for f in sorted((f for f in faults if isinstance(f, RebootSpec)), key=lambda f: f.at_s):
            last = spans[-1]
            if f.at_s < last.on_s or f.at_s >= self.empty_s:
                logger.warning("reboot at %.1f s ignored: the wearable is off then", f.at_s)
                continue
            spans[-1] = PowerSpan(
                last.on_s, f.at_s, last.boot, last.clock_start_ms, last.sequence_start
            )
            on_s = f.at_s + f.down_s
            if on_s >= self.empty_s:
                break
            spans.append(PowerSpan(on_s, math.inf, last.boot + 1, 0, 0))
        last = spans[-1]
        if math.isfinite(self.empty_s) and last.off_s > self.empty_s:
            spans[-1] = PowerSpan(
                last.on_s, self.empty_s, last.boot, last.clock_start_ms, last.sequence_start
            )
        return spans

    def span_at(self, t_s: float) -> PowerSpan | None:
        """The power span running at ``t_s``, or None while off."""
        for span in self.spans:
            if span.on_s <= t_s < span.off_s:
                return span
        return None

    def loss_probability(self, t_s: float) -> float:
        """Probability that a packet sent at ``t_s`` is lost."""
        p = self._config.packet_loss
        for start, end, prob in self._loss:
            if start <= t_s < end:
                p = max(p, prob)
        return p

    def corruption(self, t_s: float) -> tuple[float, float]:
        """``(probability, truncated_fraction)`` of corruption at ``t_s``."""
        p, truncated = self._config.corruption, 0.3
        for start, end, prob, frac in self._corrupt:
            if start <= t_s < end and prob >= p:
                p, truncated = prob, frac
        return p, truncated
