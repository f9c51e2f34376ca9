"""From a wearable's packets to one continuous sample timeline.

The wearable's clock is a 32-bit millisecond counter that wraps every 49.7
days and restarts at zero when the wearable reboots; its packet sequence is a
16-bit counter. The engine needs one monotonic clock per patient, so this
module unwraps the device clock, detects duplicates (a notification flood
repeats packets), gaps (lost packets) and reboots, and maps the device clock
onto the engine's timeline and onto UTC for event timestamps.

Pure and synchronous: the wall clock is passed in, never read here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from device_gateway.protocol import ImuPacket

__all__ = ["PacketTiming", "SampleBlock", "StreamCounters", "Timeline"]

_log = logging.getLogger(__name__)

_CLOCK_WRAP_MS = 1 << 32
_SEQ_WRAP = 1 << 16
# A device clock that jumps back by more than this (and is not a 32-bit wrap)
# means the wearable rebooted.
_REBOOT_BACKSTEP_MS = 1000
# How far the UTC mapping of the newest sample may run ahead of its arrival
# (timer jitter) or behind it (BLE connection interval, queueing).
_MAX_CLOCK_LEAD_S = 0.05
_MAX_CLOCK_LAG_S = 2.0


class PacketTiming(Protocol):
    """What the timeline reads of a packet (an ``ImuPacket`` or an ``ImuHeader``)."""

    @property
    def sequence(self) -> int: ...
    @property
    def t0_ms(self) -> int: ...
    @property
    def interval_us(self) -> int: ...
    @property
    def sample_count(self) -> int: ...


@dataclass(slots=True)
class StreamCounters:
    """Per-wearable packet accounting, published in the gateway's metrics."""

    packets: int = 0
    malformed: int = 0
    duplicates: int = 0
    lost: int = 0
    queue_dropped: int = 0
    reboots: int = 0
    clock_resyncs: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """Samples ready for the engine.

    ``t_s`` (n,) is the engine's clock in seconds (monotonic per patient);
    ``acc_g`` (n, 3) in g; ``gyr_dps`` (n, 3) in °/s or None.
    """

    t_s: NDArray[np.float64]
    acc_g: NDArray[np.float64]
    gyr_dps: NDArray[np.float64] | None

    @staticmethod
    def concatenate(blocks: list[SampleBlock]) -> SampleBlock:
        """Consecutive blocks of one stream (all with or all without gyroscope) as one."""
        if len(blocks) == 1:
            return blocks[0]
        gyrs = [b.gyr_dps for b in blocks if b.gyr_dps is not None]
        gyr = np.concatenate(gyrs) if gyrs else None
        return SampleBlock(
            np.concatenate([b.t_s for b in blocks]),
            np.concatenate([b.acc_g for b in blocks]),
            gyr,
        )


class Timeline:
    """Continuous engine time for one patient, across reconnects and reboots."""

    def __init__(self) -> None:
        self.counters = StreamCounters()
        self._offset_s = 0.0  # engine time = unwrapped device time + offset
        self._wraps = 0
        self._last_t0_ms: int | None = None
        self._last_seq: int | None = None
        self._end_t_s: float | None = None  # engine time of the last sample accepted
        self._end_wall_s: float | None = None
        self._anchor: tuple[float, float] | None = None  # (engine t_s, UTC epoch s)

    def new_connection(self) -> None:
        """Forget the sequence and UTC anchor; keep engine time monotonic."""
        self._last_seq = None
        self._anchor = None

    def accept(self, packet: ImuPacket, received_wall_s: float) -> SampleBlock | None:
        """Place a packet on the timeline, or return None for a duplicate/stale one.

        ``received_wall_s`` is the UTC epoch time the notification arrived.
        """
        start_s = self.place(packet, received_wall_s)
        if start_s is None:
            return None
        interval_s = packet.interval_us * 1e-6
        t_s = start_s + interval_s * np.arange(packet.sample_count, dtype=np.float64)
        return SampleBlock(t_s, packet.acc_g, packet.gyr_dps)

    def place(self, packet: PacketTiming, received_wall_s: float) -> float | None:
        """The engine time of a packet's first sample, or None for a duplicate/stale one.

        Sample ``i`` is at ``start + i * interval_us * 1e-6`` (computed so, it is
        bit for bit what :meth:`accept` gives). ``received_wall_s`` is the UTC
        epoch time the notification arrived.
        """
        self.counters.packets += 1
        t0_ms = packet.t0_ms
        if self._last_t0_ms is not None:
            step_ms = t0_ms - self._last_t0_ms
            if step_ms < -(_CLOCK_WRAP_MS // 2):
                self._wraps += 1  # the 32-bit clock wrapped
            elif step_ms <= 0 and self._is_duplicate(packet, step_ms):
                self.counters.duplicates += 1
                return None
            elif step_ms < -_REBOOT_BACKSTEP_MS:
                self._rebooted(packet, received_wall_s)
        self._count_gap(packet.sequence)
        self._last_t0_ms = t0_ms
        self._last_seq = packet.sequence

        interval_s = packet.interval_us * 1e-6
        t_device_s = (self._wraps * _CLOCK_WRAP_MS + t0_ms) * 1e-3
        start_s = t_device_s + self._offset_s
        if self._end_t_s is not None and start_s <= self._end_t_s:
            # Overlaps what we already have (a replayed or reordered packet).
            self.counters.duplicates += 1
            return None
        self._end_t_s = start_s + interval_s * float(packet.sample_count - 1)
        self._end_wall_s = received_wall_s
        self._follow_wall_clock(self._end_t_s, received_wall_s)
        return start_s

    def _follow_wall_clock(self, last_t_s: float, received_wall_s: float) -> None:
        """Keep the UTC mapping honest when the wearable's clock drifts.

        A sample cannot have been taken after it arrived, and a packet is
        processed within moments of arriving; a mapping that says otherwise
        is re-anchored to the arrival time.
        """
        if self._anchor is not None:
            anchor_t_s, anchor_wall_s = self._anchor
            offset_s = anchor_wall_s + (last_t_s - anchor_t_s) - received_wall_s
            if -_MAX_CLOCK_LAG_S <= offset_s <= _MAX_CLOCK_LEAD_S:
                return
            self.counters.clock_resyncs += 1
        self._anchor = (last_t_s, received_wall_s)

    def utc(self, t_s: float) -> datetime:
        """UTC time of an engine timestamp, from the current connection's anchor."""
        if self._anchor is None:
            raise RuntimeError("no packet placed on the timeline yet")
        anchor_t_s, anchor_wall_s = self._anchor
        base = datetime.fromtimestamp(anchor_wall_s, UTC)
        return base + timedelta(seconds=t_s - anchor_t_s)

    def _is_duplicate(self, packet: PacketTiming, step_ms: int) -> bool:
        if step_ms == 0 and packet.sequence == self._last_seq:
            return True
        # A small step back is a stale or replayed packet, not a reboot.
        return step_ms >= -_REBOOT_BACKSTEP_MS

    def _count_gap(self, sequence: int) -> None:
        if self._last_seq is None:
            return
        missing = (sequence - self._last_seq - 1) % _SEQ_WRAP
        if 0 < missing < _SEQ_WRAP // 2:
            self.counters.lost += missing

    def _rebooted(self, packet: PacketTiming, received_wall_s: float) -> None:
        """Continue engine time after a reboot by the wall time that passed."""
        self.counters.reboots += 1
        _log.warning("wearable clock restarted (reboot); continuing the timeline")
        assert self._end_t_s is not None and self._end_wall_s is not None
        elapsed_s = max(received_wall_s - self._end_wall_s, 0.0)
        restart_t_s = self._end_t_s + max(elapsed_s, 1.0)
        self._wraps = 0
        self._offset_s = restart_t_s - packet.t0_ms * 1e-3
        self._last_seq = None
        self._anchor = None
