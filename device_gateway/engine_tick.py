"""The gateway's one pass per tick over every wearable's samples (issue 13).

BLE notification callbacks only append the packet to their wearable's
bounded inbox (:meth:`TickedWearable.offer`). Every tick (``ble.engine_batch_s``,
default 0.1 s) :class:`EngineTick` takes every inbox at once, decodes the
packet headers (CRC, validation, the wearable's timeline), groups the
wearables' samples so that each engine call has the same number of samples
per device, and makes as few calls of the batched engines
(``device_gateway.engine_slots``) as that allows. A wearable with a backlog
(more than ``_MAX_PACKETS_PER_CHUNK`` packets, or a change of stream) has
several chunks; its ``k``-th chunk goes into round ``k``, so one wearable's
samples are never reordered. Then each wearable's events go to its
:class:`~device_gateway.patient.PatientMonitor` in order (a slouch buzzes at
once), and the patient states are built at most once a second.

The engine pass (array assembly and engine calls) runs in a worker thread
beside the event loop, so BLE and MQTT are served while NumPy works; only
the pass touches the engines, and one pass runs at a time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import numpy as np

from common.errors import PacketError
from device_gateway.engine_slots import EngineSlots, SlotHolder, StreamShape
from device_gateway.protocol import decode_imu_header
from device_gateway.tick_samples import Chunk, ChunkKey, chunk_arrays
from posture import EngineStats, PostureEvent
from posture.kernels import Kernel

if TYPE_CHECKING:
    from device_gateway.patient import PatientMonitor

__all__ = ["EngineTick", "TickedWearable"]

_log = logging.getLogger(__name__)

# At most this many packets of one wearable in one engine call (2 s at
# 50 Hz): a backlog is worked off in rounds rather than in one huge call.
_MAX_PACKETS_PER_CHUNK = 10
# Patient states are built this often (the publisher sends them ~1 Hz).
_STATE_INTERVAL_S = 1.0


class TickedWearable:
    """One wearable as the tick sees it: its inbox, timeline and engine slot."""

    __slots__ = (
        "_tick",
        "events",
        "holder",
        "in_flight",
        "inbox",
        "label",
        "last",
        "max_packets",
        "monitor",
        "queued",
    )

    def __init__(
        self, tick: EngineTick, monitor: PatientMonitor, label: str, max_packets: int
    ) -> None:
        self._tick = tick
        self.monitor = monitor
        self.label = label
        self.max_packets = max_packets
        self.inbox: list[tuple[bytes, float]] = []
        self.queued = False
        self.in_flight = False
        self.holder = SlotHolder(monitor.wearable.slouch)
        self.events: list[PostureEvent] = []
        self.last: tuple[float, float, float, int, bool] | None = None

    def offer(self, data: bytes, received_wall_s: float) -> bool:
        """Queue one notification (from bleak's callback: no work here).

        Returns False when the inbox is full (the engine is behind): the
        packet is dropped and the caller counts it.
        """
        if len(self.inbox) >= self.max_packets:
            return False
        self.inbox.append((data, received_wall_s))
        if not self.queued:
            self.queued = True
            self._tick.ready(self)
        return True

    @property
    def calibrated(self) -> bool:
        return self._tick.slots.calibrated(self.holder)

    @property
    def stats(self) -> EngineStats | None:
        return self._tick.slots.stats(self.holder)

    def request_calibration(self) -> None:
        """Capture the upright again before this wearable's next samples."""
        if self.holder.placed is not None:
            self.holder.calibration_requested = True


class EngineTick:
    """Every wearable's samples through the batched engines, once per tick.

    Args:
        tick_s: how long packets gather between passes (0: a pass as soon as
            a packet waits and the previous pass is done).
        in_thread: run the engine pass in a worker thread (else on the loop).
        kernel: the implementation the engines compute with (None:
            ``$POSTURE_KERNEL``, else compiled); :meth:`use_kernel` changes it.
    """

    def __init__(
        self, tick_s: float, *, in_thread: bool = True, kernel: Kernel | None = None
    ) -> None:
        self.tick_s = tick_s
        self.in_thread = in_thread
        self.slots = EngineSlots(kernel)
        self._next_kernel: Kernel | None = None
        self.passes = 0
        """Passes run (for tests and metrics)."""
        self.engine_calls = 0
        """Engine calls made by all passes."""
        self._wearables: list[TickedWearable] = []
        self._ready: list[TickedWearable] = []
        self._state_cursor = -1
        self._wake = asyncio.Event()
        self._pass_done = asyncio.Condition()

    def register(self, monitor: PatientMonitor, label: str, max_packets: int) -> TickedWearable:
        """A wearable's place in the tick; ``max_packets`` bounds its inbox."""
        wearable = TickedWearable(self, monitor, label, max_packets)
        self._wearables.append(wearable)
        monitor.engine_view = wearable
        return wearable

    def ready(self, wearable: TickedWearable) -> None:
        self._ready.append(wearable)
        self._wake.set()

    @property
    def kernel(self) -> Kernel:
        """The implementation the engines compute with (changes between passes)."""
        return self.slots.kernel

    def use_kernel(self, kernel: Kernel) -> None:
        """Every engine computes with ``kernel`` from the next pass on (each
        wearable carries on where it was: the two implementations share the
        state and agree to rounding). Called on the loop; the engines change
        between passes, never under one."""
        self._next_kernel = kernel
        self._wake.set()

    async def flush(self, wearable: TickedWearable) -> None:
        """Return once every packet ``wearable`` has queued went through a pass."""
        async with self._pass_done:
            await self._pass_done.wait_for(lambda: not (wearable.queued or wearable.in_flight))

    async def run(self) -> None:
        """Pass after pass, until cancelled."""
        loop = asyncio.get_running_loop()
        states_s = loop.time()
        while True:
            started_s = loop.time()
            if not self._ready and self._next_kernel is None:
                self._wake.clear()
                await self._wake.wait()
            if self._next_kernel is not None:  # no pass runs now
                self.slots.use_kernel(self._next_kernel)
                self._next_kernel = None
                _log.info("engines compute with the %s kernels from now on", self.kernel.value)
            taken, self._ready = self._ready, []
            work = [(w, self._chunks(w)) for w in taken]
            work = [(w, chunks) for w, chunks in work if chunks]
            if work:
                if self.in_thread:
                    await asyncio.to_thread(self._engine_pass, work)
                else:
                    self._engine_pass(work)
            await self._deliver(taken)
            self.passes += 1
            async with self._pass_done:
                self._pass_done.notify_all()
            states_s = self._push_states(states_s, loop.time())
            # Gather for the rest of the tick (none if the pass took longer).
            rest_s = started_s + self.tick_s - loop.time()
            if rest_s > 0:
                await asyncio.sleep(rest_s)

    # -- on the loop ------------------------------------------------------

    def _chunks(self, w: TickedWearable) -> list[Chunk]:
        """Decode ``w``'s queued packets' headers into chunks (in order)."""
        packets, w.inbox = w.inbox, []
        w.queued = False
        w.in_flight = True
        timeline = w.monitor.timeline
        counters = timeline.counters
        chunks: list[Chunk] = []
        chunk: Chunk | None = None
        for data, received_wall_s in packets:
            try:
                header = decode_imu_header(data)
            except PacketError as exc:
                counters.malformed += 1
                if counters.malformed in (1, 10, 100) or counters.malformed % 1000 == 0:
                    _log.warning(
                        "wearable %s: malformed packet (%s); %d so far",
                        w.label,
                        exc,
                        counters.malformed,
                    )
                continue
            start_s = timeline.place(header, received_wall_s)
            if start_s is None:
                continue
            if chunk is None or not chunk.fits(header, _MAX_PACKETS_PER_CHUNK):
                chunk = Chunk.of(header)
                chunks.append(chunk)
            chunk.add(header, start_s)
        return chunks

    def _push_states(self, since_s: float, now_s: float) -> float:
        """Build the states due: every wearable's once per ``_STATE_INTERVAL_S``,
        spread over the passes (a share each) so no pass builds them all.
        Returns the time the states are built up to."""
        wearables = self._wearables
        due = int(len(wearables) * (now_s - since_s) / _STATE_INTERVAL_S)
        if due <= 0:
            return since_s
        due = min(due, len(wearables))
        for _ in range(due):
            self._state_cursor = (self._state_cursor + 1) % len(wearables)
            wearables[self._state_cursor].monitor.push_state_if_changed()
        return since_s + due * _STATE_INTERVAL_S / len(wearables) if due < len(wearables) else now_s

    async def _deliver(self, taken: list[TickedWearable]) -> None:
        for w in taken:
            w.in_flight = False
            if w.last is not None:
                w.monitor.latest(*w.last)
                w.last = None
            if w.events:
                events, w.events = w.events, []
                for found in events:
                    await w.monitor.posture_event(found)

    # -- the engine pass (worker thread) ------------------------------------

    def _engine_pass(self, work: list[tuple[TickedWearable, list[Chunk]]]) -> None:
        round_index = 0
        while work:
            groups: dict[ChunkKey, list[tuple[TickedWearable, Chunk]]] = {}
            later: list[tuple[TickedWearable, list[Chunk]]] = []
            for w, chunks in work:
                chunk = chunks[round_index]
                groups.setdefault(chunk.key, []).append((w, chunk))
                if len(chunks) > round_index + 1:
                    later.append((w, chunks))
            for key, members in groups.items():
                self._engine_call(key, members)
            work = later
            round_index += 1

    def _engine_call(self, key: ChunkKey, members: list[tuple[TickedWearable, Chunk]]) -> None:
        shape = StreamShape(1e6 / key.interval_us, key.has_gyro)
        place = self.slots.place
        slots = np.fromiter(
            (place(w.holder, shape) for w, _ in members), dtype=np.intp, count=len(members)
        )
        t_s, acc_g, gyr_dps = chunk_arrays([c for _, c in members])
        out = self.slots.process(shape, slots, t_s, acc_g, gyr_dps)
        self.engine_calls += 1
        last_t = out.t_s[:, -1].tolist()
        flexion = out.flexion_deg[:, -1].tolist()
        lateral = out.lateral_deg[:, -1].tolist()
        activity = out.activity[:, -1].tolist()
        slouching = out.slouching[:, -1].tolist()
        for i, (w, _) in enumerate(members):
            w.last = (last_t[i], flexion[i], lateral[i], activity[i], slouching[i])
            if out.events[i]:
                w.events.extend(out.events[i])
