"""Feeding the per-device fall detectors, calling them only when it can matter.

A :class:`~posture.falls.FallDetector` costs about 30 µs a call whatever the
block's length, and the engine calls one per device per block: for a
thousand wearables that is most of the batched engine's time. Its findings
are the same for any split of the stream (its contract, tested in
tests/test_falls.py), so the samples of quiet stretches can be handed over
in larger pieces. :class:`FallFeed` holds a device's samples back while no
finding can come of them and hands them over, with the block that follows,
as soon as one could:

* the block reaches the earliest sample at which an impact-level sample
  (``|a| >= trigger_acc_g``) not yet looked at could be confirmed as a fall:
  ``confirm_min_s`` after it (a candidate's peak is itself such a sample,
  and no detection comes sooner than that after its peak). Until then its
  candidate may as well open later: the detector's findings do not depend
  on how the stream is split. Walking reaches the trigger at most steps, so
  this holds a walker's samples for about a second instead of calling the
  detector every packet;
* the detector has a candidate pending or a fall active (a detection or a
  cancellation may come at any sample);
* the reference upright changes (held samples go first, judged against the
  old one);
* ``max_hold_s`` of samples are held (bounded memory; devices take turns so
  the hand-overs spread over blocks).

Findings are therefore the same, at the same samples, and come in the same
block as if every block were handed over at once. Held samples are copies,
so callers may reuse their buffers.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from posture.falls.detector import FallDetector
from posture.falls.types import FallFinding, FallSettings

__all__ = ["FallFeed"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_NEVER = 1 << 40


class FallFeed:
    """Deferred calls to one :class:`FallDetector` per device (module docstring).

    Args:
        detectors: one per device, all with the same settings.
        sample_rate_hz: the devices' nominal rate.
        max_hold_s: longest span of samples held back per device.
        settings: the detectors' settings (needed when ``detectors`` is
            empty: devices come later, :meth:`add`).
    """

    def __init__(
        self,
        detectors: list[FallDetector],
        sample_rate_hz: float,
        max_hold_s: float = 2.0,
        settings: FallSettings | None = None,
    ) -> None:
        self.detectors = detectors
        devices = len(detectors)
        s = settings if settings is not None else detectors[0].settings
        self._trigger2 = s.trigger_acc_g**2
        # In samples, as the detector counts them: a peak is looked at once
        # its +-merge neighbourhood is in; a detection comes no sooner than
        # confirm_min after its peak.
        self._n_merge = max(1, round(s.peak_merge_s * sample_rate_hz))
        self._n_confirm = max(1, round(s.confirm_min_s * sample_rate_hz))
        self._seen = np.zeros(devices, dtype=np.int64)  # samples seen per device
        self._since_trigger = np.full(devices, _NEVER, dtype=np.int64)
        # The sample index by which each detector must have been called.
        self._due = np.full(devices, _NEVER, dtype=np.int64)
        self._max_hold_span = max(1, round(max_hold_s * sample_rate_hz))
        self._max_hold = self._hold_limits(np.arange(devices))
        self._held: list[list[tuple[FloatArray, FloatArray, FloatArray | None, FloatArray]]] = [
            [] for _ in range(devices)
        ]
        self._held_samples = np.zeros(devices, dtype=np.int64)

    def _hold_limits(self, devices: NDArray[np.intp]) -> NDArray[np.int64]:
        # Devices take turns: eight groups with limits from 1/2 to 15/16 of the span.
        return np.asarray((self._max_hold_span * (8 + devices % 8)) // 16, dtype=np.int64)

    def add(self, detectors: list[FallDetector]) -> None:
        """Feed ``detectors`` too, as new devices after the present ones."""
        first = len(self.detectors)
        k = len(detectors)
        self.detectors.extend(detectors)
        self._seen = np.concatenate((self._seen, np.zeros(k, dtype=np.int64)))
        self._since_trigger = np.concatenate((self._since_trigger, np.full(k, _NEVER)))
        self._due = np.concatenate((self._due, np.full(k, _NEVER)))
        self._max_hold = np.concatenate(
            (self._max_hold, self._hold_limits(np.arange(first, first + k)))
        )
        self._held.extend([] for _ in range(k))
        self._held_samples = np.concatenate((self._held_samples, np.zeros(k, dtype=np.int64)))

    def replace(self, device: int, detector: FallDetector) -> None:
        """``device`` starts over with ``detector``; its held samples are dropped."""
        self.detectors[device] = detector
        self._seen[device] = 0
        self._since_trigger[device] = _NEVER
        self._due[device] = _NEVER
        self._held[device] = []
        self._held_samples[device] = 0

    def triggers(self, acc_mag2: FloatArray, devices: NDArray[np.intp] | None = None) -> None:
        """Note the block's impact-level samples; ``acc_mag2`` (n, S) is ``|a|²`` in g²
        of ``devices`` (indices; None: all, S = D)."""
        n = acc_mag2.shape[0]
        cols = slice(None) if devices is None else devices
        hit = acc_mag2 >= self._trigger2
        if np.count_nonzero(hit) == 0:
            self._since_trigger[cols] += n
            self._seen[cols] += n
            return
        seen, since, due_now = self._seen[cols], self._since_trigger[cols], self._due[cols]
        any_hit = hit.any(axis=0)
        first = np.argmax(hit, axis=0)
        due = seen + first + self._n_confirm
        self._due[cols] = np.where(any_hit, np.minimum(due_now, due), due_now)
        last = n - 1 - np.argmax(hit[::-1], axis=0)
        self._since_trigger[cols] = np.where(any_hit, n - 1 - last, since + n)
        self._seen[cols] = seen + n

    def must_call(self, device: int, n: int) -> bool:
        """Whether ``device``'s samples must go to its detector with this block of ``n``."""
        # A finding could come at a sample of this block (or of the held ones).
        if self._due[device] < self._seen[device]:
            return True
        detector = self.detectors[device]
        if detector.fall_active or detector.pending_candidates:
            return True
        return bool(self._held_samples[device] + n > self._max_hold[device])

    def hold(
        self,
        device: int,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        up_sensor: FloatArray,
    ) -> None:
        """Keep one block of ``device`` (copies or views of arrays nobody changes)."""
        self._held[device].append((t_s, acc_g, gyr_dps, up_sensor))
        self._held_samples[device] += t_s.shape[0]

    def call(
        self,
        device: int,
        t_s: FloatArray,
        acc_g: FloatArray,
        gyr_dps: FloatArray | None,
        up_sensor: FloatArray,
    ) -> list[FallFinding]:
        """Hand the held samples and this block of ``device`` to its detector."""
        held = self._held[device]
        if held:
            held.append((t_s, acc_g, gyr_dps, up_sensor))
            t_s = np.concatenate([h[0] for h in held])
            acc_g = np.concatenate([h[1] for h in held])
            if gyr_dps is not None:
                gyr_dps = np.concatenate([h[2] for h in held if h[2] is not None])
            up_sensor = np.concatenate([h[3] for h in held])
            self._held[device] = []
        self._held_samples[device] = 0
        # The detector now has every sample seen; it has looked at the peaks
        # but those of the last merge span, whose neighbourhood is not in yet.
        if self._since_trigger[device] >= self._n_merge:
            self._due[device] = _NEVER
        else:
            self._due[device] = self._seen[device] - self._n_merge + self._n_confirm
        return self.detectors[device].process(t_s, acc_g, gyr_dps, up_sensor)

    def flush(self, device: int) -> list[FallFinding]:
        """Hand over whatever ``device`` holds (before its reference changes)."""
        held = self._held[device]
        if not held:
            return []
        last = held.pop()
        return self.call(device, *last)
