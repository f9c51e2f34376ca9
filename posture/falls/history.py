"""The fall detector's state across devices: a ring of per-sample signals and cursors.

Stage 0 of the detector (docs/falls.md) is per sample and the same for
every wearable: :func:`derive_rows` turns a block of every device, in the
engine's ``(n, 3, D)`` layout, into the history rows (``ax, ay, az, |a|,
ux, uy, uz, gyro_stuck``, float32) in one pass. :class:`FallState` keeps
them in a ring, ``(R, 8, D)``, with the device on the last axis like every
engine state (:mod:`posture.state`), and the per-device cursors and objects
the rare per-device path needs.

Device ``d``'s sample number ``s`` (counted from its first sample) sits in
ring row ``s % R``. Each device has its own count, so the engine may run
any subset of devices in a tick (:func:`posture.state.take` / ``put``) or
add devices (``grow``) without moving anybody's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["COLUMNS", "FallState", "WorkRows", "derive_rows"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

COLUMNS = ("ax", "ay", "az", "mag", "ux", "uy", "uz", "gyro_stuck")
"""The history rows' columns, in order (the per-device work rows add ``t``)."""
_MAG, _CLIP = 3, 7


@dataclass(slots=True)
class FallState:
    """What the fall detector remembers of ``D`` wearables (device on the last axis).

    ``rows`` (R, 8, D) float32 and ``t_s`` (R, D): the ring of per-sample
    signals and times; ``seen`` (D,): samples processed; ``peak_next`` (D,):
    the first sample not yet checked for a peak; ``last_trigger`` (D,): the
    last sample with ``|a|`` at the trigger or above (-1: none; a device
    with none since its peak cursor skips the screen); ``prev_gyr_dps`` (3, D):
    the last gyroscope sample (NaN before one; saturation check);
    ``ref_up`` (3, D) and ``ref_calibrated`` (D,): the upright impacts are
    judged against; ``pending`` (D,) object: a tuple of
    :class:`~posture.falls.types.FallCandidate` awaiting their aftermath, or
    None; ``fallen`` (D,) object: the active fall (detection index, impact
    time, detection time, its upright) or None; ``busy`` (D,): whether
    ``pending`` or ``fallen`` is set (the device takes the per-device path
    every block; the compiled screen cannot read objects); ``work`` (D,)
    object: the work rows (:meth:`work_rows`) of a busy device's last
    per-device run as ``(last sample, read-only (m, 9) rows)``, or None (a
    busy device runs every piece: its next rows are these and the new
    samples, not a fresh gather of its whole history from the ring, whose
    device-last layout puts each sample's values on lines of their own).
    The objects are never changed once stored (the per-device path works on
    copies), so a :func:`posture.state.copy` is a true snapshot.
    """

    rows: NDArray[np.float32]
    t_s: FloatArray
    seen: IntArray
    peak_next: IntArray
    last_trigger: IntArray
    prev_gyr_dps: FloatArray
    ref_up: FloatArray
    ref_calibrated: NDArray[np.bool_]
    pending: NDArray[np.object_]
    fallen: NDArray[np.object_]
    busy: NDArray[np.bool_]
    work: NDArray[np.object_]

    @classmethod
    def fresh(cls, devices: int, ring_rows: int, ref_up: FloatArray) -> FallState:
        """State of ``devices`` new wearables with a ring of ``ring_rows`` samples,
        judged against the unmeasured upright ``ref_up`` (3,) until calibrated."""
        return cls(
            rows=np.zeros((ring_rows, len(COLUMNS), devices), dtype=np.float32),
            t_s=np.zeros((ring_rows, devices)),
            seen=np.zeros(devices, dtype=np.int64),
            peak_next=np.zeros(devices, dtype=np.int64),
            last_trigger=np.full(devices, -1, dtype=np.int64),
            prev_gyr_dps=np.full((3, devices), np.nan),
            ref_up=np.repeat(np.asarray(ref_up, dtype=np.float64)[:, None], devices, axis=1),
            ref_calibrated=np.zeros(devices, dtype=bool),
            pending=np.full(devices, None, dtype=object),
            fallen=np.full(devices, None, dtype=object),
            busy=np.zeros(devices, dtype=bool),
            work=np.full(devices, None, dtype=object),
        )

    @property
    def ring_rows(self) -> int:
        return int(self.rows.shape[0])

    def write(self, rows: NDArray[np.float32], t_s: FloatArray, devices: IntArray) -> None:
        """Append a block (rows (n, 8, k), t_s (n, k)) to ``devices``' rings; ``n <= R``."""
        n = rows.shape[0]
        start = self.seen[devices] % self.ring_rows
        if devices.size and (start == start[0]).all() and start[0] + n <= self.ring_rows:
            # The usual tick: every device at the same ring row, no wrap.
            s0 = int(start[0])
            if devices.size == self.seen.size:
                self.rows[s0 : s0 + n] = rows
                self.t_s[s0 : s0 + n] = t_s
            else:
                self.rows[s0 : s0 + n, :, devices] = rows
                self.t_s[s0 : s0 + n, devices] = t_s
        else:
            at = (start[None, :] + np.arange(n)[:, None]) % self.ring_rows  # (n, k)
            self.rows[at, :, devices[None, :]] = rows.transpose(0, 2, 1)
            self.t_s[at, devices[None, :]] = t_s
        self.seen[devices] += n

    def magnitudes(self, first: IntArray, count: int, devices: IntArray) -> FloatArray:
        """``|a|`` (count, k) of samples ``first + 0..count-1`` of ``devices``
        (float64; rows not yet written, or negative, hold stale values)."""
        start = first % self.ring_rows
        if start.size and (start == start[0]).all():
            # The usual tick: every device at the same ring row (one gather of rows).
            s0 = int(start[0])
            if s0 + count <= self.ring_rows:
                mag = self.rows[s0 : s0 + count, _MAG]
            else:
                mag = self.rows[(s0 + np.arange(count)) % self.ring_rows, _MAG]
            out = mag if devices.size == self.seen.size else mag[:, devices]
            return out.astype(np.float64)
        at = (start[None, :] + np.arange(count)[:, None]) % self.ring_rows
        return self.rows[at, _MAG, devices[None, :]].astype(np.float64)

    def work_rows(self, device: int, first: int, last: int) -> FloatArray:
        """Samples ``first..last`` of ``device`` as (m, 9) float64 rows, ``t``
        last (read-only); from the rows kept in ``work`` where they hold the
        start, the rest from the ring."""
        kept = self.work[device]
        start = first
        head: FloatArray | None = None
        if kept is not None:
            kept_last, rows = kept
            kept_first = kept_last - rows.shape[0] + 1
            if kept_first <= first <= kept_last < last:
                head = rows[first - kept_first :]
                start = kept_last + 1
        work = np.empty((last - first + 1, len(COLUMNS) + 1))
        skip = start - first
        if head is not None:
            work[:skip] = head
        # Two slices where the span wraps: a gather by an index array costs
        # more than the copy itself.
        r0 = start % self.ring_rows
        m = last - start + 1
        a = min(m, self.ring_rows - r0)
        work[skip : skip + a, : len(COLUMNS)] = self.rows[r0 : r0 + a, :, device]
        work[skip : skip + a, len(COLUMNS)] = self.t_s[r0 : r0 + a, device]
        if a < m:
            work[skip + a :, : len(COLUMNS)] = self.rows[: m - a, :, device]
            work[skip + a :, len(COLUMNS)] = self.t_s[: m - a, device]
        work.flags.writeable = False
        return work


class WorkRows:
    """Samples ``first..last`` of one device's ring, gathered when first asked for.

    :attr:`mag` gathers ``|a|`` alone: most per-device runs (a walking step
    whose peak passed the screen) end on it, and in the ring's device-last
    layout each sample's columns sit on cache lines of their own, so the
    whole rows cost about nine times the memory traffic.
    """

    __slots__ = ("_device", "_mag", "_rows", "_state", "first", "last")

    def __init__(self, state: FallState, device: int, first: int, last: int) -> None:
        self._state, self._device, self.first, self.last = state, device, first, last
        self._mag: FloatArray | None = None
        self._rows: FloatArray | None = None

    @property
    def mag(self) -> FloatArray:
        """(m,) ``|a|`` float64 (read-only)."""
        if self._rows is not None:
            return self._rows[:, _MAG]
        if self._mag is None:
            st, m = self._state, self.last - self.first + 1
            mag = np.empty(m)
            r0 = self.first % st.ring_rows
            a = min(m, st.ring_rows - r0)
            mag[:a] = st.rows[r0 : r0 + a, _MAG, self._device]
            mag[a:] = st.rows[: m - a, _MAG, self._device]
            mag.flags.writeable = False
            self._mag = mag
        return self._mag

    @property
    def rows(self) -> FloatArray:
        """(m, 9) the rows (:meth:`FallState.work_rows`)."""
        if self._rows is None:
            self._rows = self._state.work_rows(self._device, self.first, self.last)
        return self._rows


def derive_rows(
    acc_g: FloatArray,
    up_sensor: FloatArray,
    gyr_dps: FloatArray | None,
    prev_gyr_dps: FloatArray,
    gyro_clip_min_dps: float,
) -> NDArray[np.float32]:
    """Stage 0 of ``k`` devices: history rows (n, 8, k) float32 of a block.

    Args:
        acc_g: (n, 3, k) in g; up_sensor: (n, 3, k) the engine's up (any
            length; NaN before an estimate); gyr_dps: (n, 3, k) or None.
        prev_gyr_dps: (3, k) each device's gyroscope sample before the block
            (NaN: none); not changed.
        gyro_clip_min_dps: an axis stuck at this magnitude or more is saturated.

    Every value is computed in float64 element by element and then rounded
    to float32, as the single-device detector always did: the same numbers
    in any layout and for any block split.
    """
    n, _, k = acc_g.shape
    out = np.empty((n, len(COLUMNS), k), dtype=np.float32)
    out[:, 0:3] = acc_g
    sq = acc_g * acc_g
    out[:, _MAG] = np.sqrt(sq[:, 0] + sq[:, 1] + sq[:, 2])
    sq = up_sensor * up_sensor
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, 4:7] = up_sensor / np.sqrt(sq[:, 0] + sq[:, 1] + sq[:, 2])[:, None]
    out[:, _CLIP] = 0.0
    if gyr_dps is not None:
        high = np.abs(gyr_dps) >= gyro_clip_min_dps
        if high.any():
            prev = np.concatenate((prev_gyr_dps[None], gyr_dps[:-1]))
            # A saturated axis reads the same full-scale value sample after sample.
            out[:, _CLIP] = (high & (gyr_dps == prev)).any(axis=1)
    return out
