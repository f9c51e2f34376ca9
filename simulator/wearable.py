"""One simulated wearable: sensor, packet assembly, faults, battery.

The wearable is a pure state machine driven by scenario time:
:meth:`SimulatedWearable.advance` moves it to ``now_s`` and returns what it
emitted meanwhile, in time order: IMU notifications, battery level changes
and radio changes (out of range, reboot, battery empty). It knows nothing
of asyncio or bleak; simulator/world.py delivers what it emits.

The sensor samples continuously while the wearable is powered, and a
packet is assembled (and its sequence number used) every
``samples_per_packet`` samples whether or not anyone listens; the samples
themselves are only computed for packets someone will receive. A packet is
emitted when scenario time passes its last sample's time.

``advance`` is three steps a world takes apart to measure many wearables
together: :meth:`~SimulatedWearable.step` runs the state machine (the scalar
path: packets' slots, faults, battery), :meth:`~SimulatedWearable.block_request`
says which samples the packets due need (simulator/blocks.py measures every
wearable's request in one call), and :meth:`~SimulatedWearable.emissions`
turns the slots into bytes. :attr:`~SimulatedWearable.next_due_s` is when
stepping next changes anything, so a world skips the wearables with
nothing due.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from common.ids import mask_id
from device_gateway.protocol import ACC_LSB_PER_G, GYR_LSB_PER_DPS
from simulator.blocks import ALIGN_S, BlockRequest, SampleBlock, measure_blocks
from simulator.choreography import compile_choreography
from simulator.config import Patient
from simulator.emissions import (
    BatteryLevel,
    Emission,
    Notification,
    RadioChange,
    WearableStats,
    corrupt,
)
from simulator.faults import EventKind, FaultEvent, FaultSchedule, PowerSpan
from simulator.noise import stream_key, uniform
from simulator.packets import PacketEncoder
from simulator.sensor import SensorModel
from simulator.trajectory import inclinations_deg
from simulator.truth import SampleBlock as DecodedSamples
from simulator.truth import Truth
from simulator.ward import WardSensors

__all__ = ["SimulatedWearable"]

logger = logging.getLogger(__name__)

_RENDER_SAMPLES = 4096  # render() measures in pieces of this many samples


@dataclass(slots=True)
class _Stream:
    """Sample grid of the current power span since the last rate change."""

    span: PowerSpan
    start_us: int  # device time (since boot) of sample first_index
    interval_us: int
    first_index: int
    next_index: int  # first sample of the packet being assembled
    packets: int = 0  # packets assembled in this power span
    # Scenario time of sample first_index and between samples, when it does
    # not follow the device clock (a distinct flood and after it); else None.
    t0_s: float | None = None
    step_s: float = 0.0
    until_s: float = math.inf  # a flood stream ends when its packets pass this
    tag: tuple[int, int, int] = field(init=False)
    """What identifies the sample grid (boot, first sample, interval): a block's key."""

    def __post_init__(self) -> None:
        self.tag = (self.span.boot, self.first_index, self.interval_us)

    def device_us(self, index: int) -> int:
        """Device time (µs since boot) of sample ``index``."""
        return self.start_us + (index - self.first_index) * self.interval_us

    def from_next(self, *, t0_s: float, step_s: float, until_s: float = math.inf) -> _Stream:
        """This stream from ``next_index`` on (same device clock, interval and
        packet count), its samples ``step_s`` apart in scenario time from ``t0_s``."""
        return _Stream(
            self.span,
            self.device_us(self.next_index),
            self.interval_us,
            self.next_index,
            self.next_index,
            self.packets,
            t0_s=t0_s,
            step_s=step_s,
            until_s=until_s,
        )


class SimulatedWearable:
    """A patient's wearable. ``index`` and ``seed`` select its random numbers."""

    def __init__(self, patient: Patient, *, index: int, seed: int) -> None:
        self.patient = patient
        self.config = patient.wearable
        ident = patient.seed if patient.seed is not None else index
        self.trajectory = compile_choreography(
            patient.activities, rng=np.random.default_rng([seed & 0xFFFFFFFF, ident, 7])
        )
        self._key = stream_key("wearable", seed, ident)
        self.sensor = SensorModel(self.trajectory, self.config, self._key)
        self.faults = FaultSchedule(patient.faults, self.config)
        self.stats = WearableStats(boots=1)
        self._drift = 1.0 + self.config.clock_drift_ppm * 1e-6
        self._events = list(self.faults.events)
        self._now_s = 0.0
        self._vanished = 0
        self._stream: _Stream | None = self._new_stream(
            self.faults.spans[0], 0, 0, self.config.sample_rate_hz
        )
        self._pending_rate: int | None = None
        self._flood: tuple[float, float, float] | None = None  # next_s, period_s, until_s
        self._last_sent: tuple[bytes, int] | None = None
        self._battery_pct = math.ceil(self.faults.battery_pct(0.0))
        self._battery_next_s = self.faults.time_at_level(self._battery_pct - 1)
        self._cache: SampleBlock | None = None
        self._out: list[_Pending] = []
        self._unmeasured = False  # a slot in _out has no samples yet
        self._ward: WardSensors | None = None
        self._row = 0
        self._encoder = PacketEncoder(self.config.acc_range, self.config.has_gyro)
        self._boot_keys: dict[int, tuple[int, int]] = {}  # boot -> (noise key, link key)
        self.next_due_s = 0.0
        """Scenario time at which :meth:`step` next has something to do."""
        self._update_due()

    def join_ward(self, ward: WardSensors, row: int) -> None:
        """Measure as row ``row`` of ``ward`` (a world's wearables share one)."""
        self._ward, self._row = ward, row

    @property
    def ward(self) -> WardSensors:
        """The ward this wearable is measured in (its own, unless it joined one)."""
        if self._ward is None:
            self._ward, self._row = WardSensors([self.sensor]), 0
        return self._ward

    # -- public state -------------------------------------------------------
    @property
    def address(self) -> str:
        return self.config.address.upper()

    @property
    def powered(self) -> bool:
        return self._stream is not None

    @property
    def reachable(self) -> bool:
        """Powered and in range (advertising or connectable)."""
        return self._stream is not None and self._vanished == 0

    @property
    def sample_rate_hz(self) -> int:
        """The current sample rate (after any set-sample-rate command)."""
        if self._pending_rate is not None:
            return self._pending_rate
        stream = self._stream
        return self.config.sample_rate_hz if stream is None else round(1e6 / stream.interval_us)

    @property
    def battery_percent(self) -> int:
        """The level the Battery Level characteristic reads (0..100)."""
        return self._battery_pct

    def request_sample_rate(self, rate_hz: int, *, now_s: float | None = None) -> None:
        """Apply a set-sample-rate command after the packet being assembled.

        ``now_s``: when the command arrived (default: the last step's time).
        """
        self._pending_rate = rate_hz
        self.stats.rate_changes.append((self._now_s if now_s is None else now_s, rate_hz))

    # -- time ---------------------------------------------------------------
    def _scenario_s(
        self, span: PowerSpan, device_us: int | NDArray[np.int64]
    ) -> NDArray[np.float64]:
        return span.on_s + np.asarray(device_us, dtype=np.float64) * 1e-6 / self._drift

    def device_time_s(self, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
        """Device clock (s, unwrapped) at scenario times (n,); NaN while off."""
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        out = np.full(t.shape, np.nan)
        for span in self.faults.spans:
            inside = (t >= span.on_s) & (t < span.off_s)
            out[inside] = (t[inside] - span.on_s) * self._drift + span.clock_start_ms / 1000.0
        return out

    def _new_stream(
        self, span: PowerSpan, start_us: int, first_index: int, rate_hz: int
    ) -> _Stream:
        return _Stream(span, start_us, round(1e6 / rate_hz), first_index, first_index)

    def _stream_s(self, stream: _Stream, index: NDArray[np.int64]) -> NDArray[np.float64]:
        """Scenario times (s) at which ``stream`` samples ``index`` (n,)."""
        if stream.t0_s is None:
            device_us = stream.start_us + (index - stream.first_index) * stream.interval_us
            return self._scenario_s(stream.span, device_us)
        offset = (index - stream.first_index).astype(np.float64)
        return np.asarray(stream.t0_s + offset * stream.step_s, dtype=np.float64)

    def _sample_s(self, stream: _Stream, index: int) -> float:
        """:meth:`_stream_s` of one sample, in plain floats (the same arithmetic)."""
        if stream.t0_s is None:
            return stream.span.on_s + float(stream.device_us(index)) * 1e-6 / self._drift
        return stream.t0_s + (index - stream.first_index) * stream.step_s

    def _next_packet_s(self, stream: _Stream) -> float:
        """Scenario time of the next packet's last sample (when it is emitted)."""
        last = stream.next_index + self.config.samples_per_packet - 1
        t = self._sample_s(stream, last)
        if t > stream.until_s:
            # The distinct flood is over: the normal rate resumes now, from
            # the device clock the headers reached.
            resumed = stream.from_next(
                t0_s=stream.until_s, step_s=stream.interval_us * 1e-6 / self._drift
            )
            self._stream = resumed
            return self._sample_s(resumed, last)
        return t

    def _packet_indices(self, stream: _Stream) -> tuple[int, int, int]:
        """(first sample index, device µs of first, device µs of last) of the next packet."""
        first = stream.next_index
        t_first = stream.device_us(first)
        return first, t_first, t_first + (self.config.samples_per_packet - 1) * stream.interval_us

    def _keys(self, boot: int) -> tuple[int, int]:
        """(noise key, link key) of a boot; hashed once per boot."""
        keys = self._boot_keys.get(boot)
        if keys is None:
            keys = (stream_key(self._key, "noise", boot), stream_key(self._key, "link", boot))
            self._boot_keys[boot] = keys
        return keys

    # -- the state machine ----------------------------------------------------
    def advance(self, now_s: float, *, streaming: bool) -> list[Emission]:
        """Run to ``now_s``; return the emissions since the last call.

        ``streaming``: someone is subscribed to the IMU notifications, so
        packets are computed and returned (when the wearable is reachable).
        """
        self.step(now_s, streaming=streaming)
        request = self.block_request()
        if request is not None:
            measure_blocks(self.ward, [request])
        return self.emissions()

    def step(self, now_s: float, *, streaming: bool) -> None:
        """Run the state machine to ``now_s``; :meth:`emissions` gives what it emitted."""
        out = self._out
        while True:
            t_packet = math.inf
            if self._stream is not None:
                t_packet = self._next_packet_s(self._stream)
            t_dup = self._flood[0] if self._flood is not None else math.inf
            t_event = self._events[0].t_s if self._events else math.inf
            t_battery = self._battery_next_s
            t = min(t_packet, t_dup, t_event, t_battery)
            if t > now_s:
                self.next_due_s = t
                break
            if t == t_packet:
                self._assemble(t, streaming and self._vanished == 0, out)
            elif t == t_dup:
                self._duplicate(t, streaming and self.reachable, out)
            elif t == t_event:
                self._apply(self._events.pop(0), out)
            else:
                # The characteristic shows the charge rounded up: one level at a time.
                self._battery_pct -= 1
                self._battery_next_s = self.faults.time_at_level(self._battery_pct - 1)
                out.append(BatteryLevel(t, self._battery_pct))
        self._now_s = max(self._now_s, now_s)

    def _update_due(self) -> None:
        t_packet = math.inf if self._stream is None else self._next_packet_s(self._stream)
        t_dup = self._flood[0] if self._flood is not None else math.inf
        t_event = self._events[0].t_s if self._events else math.inf
        self.next_due_s = min(t_packet, t_dup, t_event, self._battery_next_s)

    def _assemble(self, t_s: float, deliver: bool, out: list[_Pending]) -> None:
        stream = self._stream
        assert stream is not None
        first, _, last_us = self._packet_indices(stream)
        seq = stream.span.sequence_start + stream.packets
        self.stats.packets_assembled += 1
        if deliver:
            slot = _Slot(t_s, stream, first, seq)
            out.append(slot)
            self._unmeasured = self._unmeasured or not self._covered(slot)
        stream.packets += 1
        stream.next_index = first + self.config.samples_per_packet
        if self._pending_rate is not None:
            rate, self._pending_rate = self._pending_rate, None
            new = self._new_stream(stream.span, 0, stream.next_index, rate)
            new.start_us = last_us + new.interval_us
            new.packets = stream.packets
            self._stream = new

    def _duplicate(self, t_s: float, deliver: bool, out: list[_Pending]) -> None:
        assert self._flood is not None
        next_s, period_s, until_s = self._flood
        self._flood = (
            (next_s + period_s, period_s, until_s) if next_s + period_s < until_s else None
        )
        if deliver:
            out.append(_Duplicate(t_s))

    def _apply(self, event: FaultEvent, out: list[_Pending]) -> None:
        was = self.reachable
        if event.kind is EventKind.POWER_OFF:
            self._stream = None
            self._pending_rate = None
            self._flood = None
            logger.info(
                "wearable %s off (%s) at %.2f s",
                mask_id(self.address),
                event.reason,
                event.t_s,
            )
        elif event.kind is EventKind.POWER_ON:
            span = self.faults.span_at(event.t_s)
            assert span is not None
            self._stream = self._new_stream(span, 0, 0, self.config.sample_rate_hz)
            self.stats.boots += 1
            self._cache = None
            self._last_sent = None
        elif event.kind is EventKind.VANISH:
            self._vanished += 1
        elif event.kind is EventKind.APPEAR:
            self._vanished -= 1
        elif event.flood is not None and self._stream is not None and event.flood.distinct:
            # A sensor at the wrong rate: the stream goes on (sequence numbers,
            # header clock at the nominal interval), packets come at rate_hz.
            stream, spp = self._stream, self.config.samples_per_packet
            step = 1.0 / (event.flood.rate_hz * spp)
            self._stream = stream.from_next(
                t0_s=event.t_s + step, step_s=step, until_s=event.t_s + event.flood.duration_s
            )
            self._cache = None
        elif event.flood is not None and self._stream is not None:
            period = 1.0 / event.flood.rate_hz
            self._flood = (event.t_s, period, event.t_s + event.flood.duration_s)
        if self.reachable != was:
            out.append(RadioChange(event.t_s, self.reachable, event.reason))

    # -- turning slots into bytes ---------------------------------------------
    def block_request(self) -> BlockRequest | None:
        """The samples the packets due need, if they are not measured yet.

        From the first packet due of that stream to the end of the last
        packet sent before the next whole ``ALIGN_S`` of scenario time after
        the last one due, so the wearables of a world come back for samples
        together.
        """
        if not self._unmeasured:
            return None
        self._unmeasured = False
        uncovered = next(
            (item for item in self._out if isinstance(item, _Slot) and not self._covered(item)),
            None,
        )
        if uncovered is None:
            return None
        # One block for every packet due of that stream: the cache holds one.
        stream, spp = uncovered.stream, self.config.samples_per_packet
        due = [i for i in self._out if isinstance(i, _Slot) and i.stream is stream]
        slot = due[0]
        period_s = self._sample_s(stream, slot.first + spp) - self._sample_s(stream, slot.first)
        boundary_s = (math.floor(due[-1].t_s / ALIGN_S) + 1.0) * ALIGN_S
        packets = max(1, math.ceil((boundary_s - slot.t_s) / period_s - 1e-9))
        count = max(packets * spp, due[-1].first + spp - slot.first)
        index = slot.first + np.arange(count, dtype=np.int64)
        device_us = stream.start_us + (index - stream.first_index) * stream.interval_us
        return BlockRequest(
            row=self._row,
            tag=stream.tag,
            index=index,
            t_s=self._stream_s(stream, index),
            since_boot_s=device_us.astype(np.float64) * 1e-6,
            window_s=stream.interval_us * 1e-6,
            noise_key=self._keys(stream.span.boot)[0],
            has_gyro=self.config.has_gyro,
            deliver=self._take_block,
        )

    def _take_block(self, block: SampleBlock) -> None:
        self._cache = block

    def _covered(self, slot: _Slot) -> bool:
        cache = self._cache
        return (
            cache is not None
            and cache.tag == slot.stream.tag
            and cache.covers(slot.first, self.config.samples_per_packet)
        )

    def emissions(self) -> list[Emission]:
        """What the last steps emitted, in time order, packets filled with samples."""
        out, self._out = self._out, []
        result: list[Emission] = []
        for item in out:
            if isinstance(item, _Slot):
                note = self._packet(item)
                if note is not None:
                    result.append(note)
            elif isinstance(item, _Duplicate):
                if self._last_sent is not None:
                    self.stats.duplicates += 1
                    data, seq = self._last_sent
                    result.append(Notification(item.t_s, data, seq, "duplicate"))
            else:
                result.append(item)
        return result

    def _packet(self, slot: _Slot) -> Notification | None:
        span = slot.stream.span
        loss = self.faults.loss_probability(slot.t_s)
        probability, truncated = self.faults.corruption(slot.t_s)
        draws = None
        if loss > 0.0 or probability > 0.0:  # a uniform draw is never below 0
            link_key = self._keys(span.boot)[1]
            draws = uniform(link_key, np.arange(4) + 4 * slot.sequence)
            if draws[0] < loss:
                self.stats.packets_lost += 1
                return None
        block = self._block_for(slot)
        spp = self.config.samples_per_packet
        data = self._encoder.encode(
            sequence=slot.sequence,
            t0_ms=span.clock_start_ms + slot.stream.device_us(slot.first) // 1000,
            interval_us=slot.stream.interval_us,
            body=block.body_of(slot.first, spp),
        )
        kind = "packet"
        if draws is not None and draws[1] < probability:
            link_key = self._keys(span.boot)[1]
            data = corrupt(data, truncate=draws[2] < truncated, key=int(link_key ^ slot.sequence))
            kind = "corrupted"
            self.stats.packets_corrupted += 1
        self.stats.packets_notified += 1
        self._last_sent = (data, slot.sequence & 0xFFFF)
        return Notification(slot.t_s, data, slot.sequence & 0xFFFF, kind)

    def _block_for(self, slot: _Slot) -> SampleBlock:
        """The measured block holding ``slot``'s samples; measured now if it is not.

        A world measures every wearable's block before asking for emissions;
        this is the path of a packet of a new stream (a reboot, a rate
        change) within the same step.
        """
        if not self._covered(slot):
            self._out, self._unmeasured = [slot], True
            request = self.block_request()
            self._out = []
            assert request is not None
            measure_blocks(self.ward, [request])
        assert self._cache is not None
        return self._cache

    # -- offline access (tests, numerics) -------------------------------------
    def render(self, t_start_s: float, t_end_s: float) -> DecodedSamples:
        """The samples of ``[t_start_s, t_end_s)`` as the gateway would decode them.

        On the first boot's sample grid at the configured rate, ignoring link
        faults, reboots and rate changes: for numerics tests that need a
        patient's signals without running the event loop.
        """
        span = self.faults.spans[0]
        interval_us = round(1e6 / self.config.sample_rate_hz)
        scale = interval_us * 1e-6 / self._drift
        first = max(0, math.ceil((t_start_s - span.on_s) / scale - 1e-9))
        last = math.ceil((t_end_s - span.on_s) / scale - 1e-9)
        index = np.arange(first, max(first, last), dtype=np.int64)
        device_us = index * interval_us
        t = self._scenario_s(span, device_us)
        since_boot_s = device_us.astype(np.float64) * 1e-6
        acc = np.empty((index.shape[0], 3), dtype=np.int16)
        gyr = np.empty((index.shape[0], 3), dtype=np.int16)
        ward, row = self.ward, self._row
        for lo in range(0, index.shape[0], _RENDER_SAMPLES):
            part = slice(lo, lo + _RENDER_SAMPLES)
            part_acc, part_gyr = ward.measure(
                np.asarray([row], dtype=np.intp),
                t[None, part],
                window_s=np.asarray([interval_us * 1e-6]),
                since_boot_s=since_boot_s[None, part],
                sample_index=index[None, part],
                noise_key=np.asarray([self._keys(span.boot)[0]], dtype=np.uint64),
            )
            acc[part], gyr[part] = part_acc[0], part_gyr[0]
        acc_g = acc / ACC_LSB_PER_G[self.config.acc_range]
        gyr_dps = gyr / GYR_LSB_PER_DPS if self.config.has_gyro else None
        device_t = device_us.astype(np.float64) * 1e-6 + span.clock_start_ms / 1000.0
        return DecodedSamples(t, device_t, acc_g, gyr_dps, self.config.sample_rate_hz)

    def truth(self, t_s: NDArray[np.float64]) -> Truth:
        """The true trunk angles and activity at scenario times (n,)."""
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        flexion, lateral = inclinations_deg(self.trajectory.orientation(t))
        last = float(t.max()) if t.size else 0.0
        falls = tuple(f for f in self.trajectory.falls if f.onset_s <= last)
        return Truth(t, self.device_time_s(t), flexion, lateral, self.trajectory.activity(t), falls)


class _Slot:
    """A packet to be filled with samples (placeholder inside advance)."""

    __slots__ = ("first", "sequence", "stream", "t_s")

    def __init__(self, t_s: float, stream: _Stream, first: int, sequence: int) -> None:
        self.t_s = t_s
        self.stream = stream
        self.first = first
        self.sequence = sequence


class _Duplicate:
    __slots__ = ("t_s",)

    def __init__(self, t_s: float) -> None:
        self.t_s = t_s


_Pending = Emission | _Slot | _Duplicate
