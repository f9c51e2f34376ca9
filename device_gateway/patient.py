"""One patient's monitoring: events, live state and slouch reminders.

The supervisor (``link.py``) owns the radio; the gateway's tick
(``engine_tick.py``) runs every wearable's samples through the batched
engines and hands each patient's results here; this class owns what they
mean for the patient: the events it publishes (in order), the slouch buzz,
and the live state. It is synchronous apart from handing events to the alert
sink.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from alerts import AlertEvent, EventType, PatientState, mask_id
from alerts.clock import mono_wall_now
from alerts.sink import AlertSink
from alerts.state import Activity as WireActivity
from device_gateway.config import WearableConfig
from device_gateway.timeline import Timeline
from posture import Activity, EngineStats, PostureEvent, PostureEventKind

__all__ = ["EngineView", "PatientMonitor"]

_log = logging.getLogger(__name__)

_EVENT_TYPES = {
    PostureEventKind.SLOUCH_STARTED: EventType.SLOUCH_STARTED,
    PostureEventKind.SLOUCH_ENDED: EventType.SLOUCH_ENDED,
    PostureEventKind.FALL_DETECTED: EventType.FALL_DETECTED,
    PostureEventKind.FALL_CANCELLED: EventType.FALL_CANCELLED,
}

# The engine's IntEnum becomes the contract's enum by name, once, here.
_WIRE_ACTIVITY = {int(a): WireActivity(a.name.lower()) for a in Activity}


class EngineView(Protocol):
    """What a monitor sees of its wearable's place in the engines (the tick's)."""

    @property
    def calibrated(self) -> bool: ...
    @property
    def stats(self) -> EngineStats | None: ...
    def request_calibration(self) -> None: ...


class PatientMonitor:
    """Turns one patient's sample blocks into events, state and buzz requests.

    ``request_buzz`` is called (synchronously) when the wearable should
    vibrate; the supervisor queues the BLE write so a slow radio never delays
    the samples.
    """

    def __init__(
        self,
        wearable: WearableConfig,
        *,
        gateway_id: str,
        sink: AlertSink,
        request_buzz: Callable[[], None],
        battery_low_pct: int,
        wall_clock: Callable[[], float],
    ) -> None:
        self.wearable = wearable
        self.patient_id = wearable.patient_id
        self._log_id = mask_id(wearable.patient_id)  # health data: no names in logs
        self.timeline = Timeline()
        self._gateway_id = gateway_id
        self._sink = sink
        self._request_buzz = request_buzz
        self._battery_low_pct = battery_low_pct
        self._wall_clock = wall_clock
        self.engine_view: EngineView | None = None
        """Set by the tick that runs this patient's samples."""
        self._connected = False
        self._battery_pct: int | None = None
        self._battery_low_sent = False
        self._last: tuple[float, float, WireActivity, bool] = (
            math.nan,
            math.nan,
            WireActivity.UNKNOWN,
            False,
        )
        self._last_t_s: float | None = None
        self._fresh = False  # samples processed since the state was last built

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def engine_stats(self) -> EngineStats | None:
        """The current engine's counters (samples, blocks, ...); None before any sample."""
        return None if self.engine_view is None else self.engine_view.stats

    async def link_up(self, *, recalibrate: bool) -> None:
        """The wearable (re)connected. ``recalibrate`` after a reboot or long absence,
        when the sensor may have been taken off and put back on differently."""
        self.timeline.new_connection()
        self._connected = True
        if recalibrate and self.engine_view is not None:
            self.engine_view.request_calibration()
        self._push_state()

    async def link_down(self) -> None:
        self._connected = False
        self._push_state()

    async def report_connection(self, connected: bool) -> None:
        """Publish device_connected/device_disconnected (after the grace period)."""
        kind = EventType.DEVICE_CONNECTED if connected else EventType.DEVICE_DISCONNECTED
        await self._publish(kind, self._now_utc(), None, {})

    async def battery(self, percent: int) -> None:
        self._battery_pct = percent
        if percent <= self._battery_low_pct and not self._battery_low_sent:
            self._battery_low_sent = True
            await self._publish(
                EventType.BATTERY_LOW, self._now_utc(), None, {"battery_pct": float(percent)}
            )
        elif percent > self._battery_low_pct + 5:
            self._battery_low_sent = False  # re-arm after a charge, with hysteresis
        self._push_state()

    def latest(
        self, t_s: float, flexion_deg: float, lateral_deg: float, activity: int, slouching: bool
    ) -> None:
        """The engine's newest sample (angles, Activity value, slouch flag); the
        state carries it at the next :meth:`push_state_if_changed`."""
        self._last_t_s = t_s
        self._last = (flexion_deg, lateral_deg, _WIRE_ACTIVITY[activity], slouching)
        self._fresh = True

    async def posture_event(self, found: PostureEvent) -> None:
        """Publish one event of this patient's engine (in the engine's order)."""
        await self._on_posture_event(found)

    def push_state_if_changed(self) -> None:
        """Build and hand over the state if samples came since it was last built."""
        if self._fresh:
            self._push_state()

    async def _on_posture_event(self, found: PostureEvent) -> None:
        if found.kind is PostureEventKind.CALIBRATED:
            _log.info("patient %s: calibrated to upright", self._log_id)
            return
        if found.kind is PostureEventKind.SLOUCH_STARTED:
            # Buzz first: the reminder must not wait for the broker.
            self._request_buzz()
        await self._publish(
            _EVENT_TYPES[found.kind],
            self.timeline.utc(found.t_s),
            (found.flexion_deg, found.lateral_deg),
            {str(k): float(v) for k, v in found.details.items()},
            device_time_s=found.t_s,
        )

    async def _publish(
        self,
        kind: EventType,
        time: datetime,
        angles: tuple[float, float] | None,
        details: dict[str, float],
        *,
        device_time_s: float | None = None,
    ) -> None:
        flexion, lateral = angles if angles else (None, None)
        event = AlertEvent(
            type=kind,
            patient_id=self.patient_id,
            gateway_id=self._gateway_id,
            time=time,
            flexion_deg=_finite_or_none(flexion),
            lateral_deg=_finite_or_none(lateral),
            device_time_s=None if device_time_s is None else round(device_time_s, 3),
            details=details,
            mono_time=mono_wall_now(),
        )
        await self._sink.publish_event(event)
        # Logged once the sink has it (on disk, with a durable outbox).
        _log.info("patient %s: %s queued", self._log_id, kind.value)

    def _push_state(self) -> None:
        self._fresh = False
        flexion, lateral, activity, slouching = self._last
        calibrated = self.engine_view is not None and self.engine_view.calibrated
        self._sink.update_state(
            PatientState(
                patient_id=self.patient_id,
                gateway_id=self._gateway_id,
                time=self._state_time(),
                flexion_deg=_finite_or_none(flexion),
                lateral_deg=_finite_or_none(lateral),
                activity=activity if self._connected else WireActivity.UNKNOWN,
                slouching=slouching and self._connected,
                device_connected=self._connected,
                battery_pct=self._battery_pct,
                calibrated=calibrated,
                slouch_threshold_deg=self.wearable.slouch.threshold_deg,
                mono_time=mono_wall_now(),
            )
        )

    def _state_time(self) -> datetime:
        if self._connected and self._last_t_s is not None:
            try:
                return self.timeline.utc(self._last_t_s)
            except RuntimeError:
                pass
        return self._now_utc()

    def _now_utc(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), UTC)


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), 2)
